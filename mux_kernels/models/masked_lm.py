"""Masked LM / token retrieval on top of MUX-BERT (SPEC §3.3 retrieval path, §4.3)."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.bert_layer import activation
from .config import MuxBertConfig
from .mux_bert import MuxEncoderOutput
from .task_model import IGNORE_INDEX, MuxBertTaskModel


class BertPredictionHeadTransform(nn.Module):
    def __init__(self, config: MuxBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = activation(config.hidden_act)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.act(self.dense(x)))


class BertLMPredictionHead(nn.Module):
    """The N = 1 baseline's MLM head, HF ``cls.predictions``: transform, then the (tied) decoder."""

    def __init__(self, config: MuxBertConfig):
        super().__init__()
        self.transform = BertPredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(x))


class BertOnlyMLMHead(nn.Module):
    def __init__(self, config: MuxBertConfig):
        super().__init__()
        self.predictions = BertLMPredictionHead(config)


class MuxBertForMaskedLM(MuxBertTaskModel):
    """Masked LM through the retrieval head (``MuxedBertForMaskedLM``); N = 1: HF ``BertForMaskedLM``.

    Without ``labels``: ``logits (B, L, V)`` at every input position. With ``labels (B, L)`` (-100 =
    not masked): the MLM loss runs the head on every instance at its masked positions only, and
    ``logits (R, V)`` are those rows (``logits_positions (R, 2)`` says which), never a dense
    ``(B, L, V)``. ``retrieval_loss_coeff > 0`` adds the token-retrieval loss (priming stage; targets
    are the input ids as given, i.e. the masked input); ``task_loss_coeff = 0`` skips the MLM head.
    """

    has_task_demultiplexer = False
    # The released MLM checkpoints also carry the (untrained) task path and no classifier.
    ignored_checkpoint_prefixes = ("demultiplexer.", "classifier.")

    def __init__(self, config: MuxBertConfig):
        super().__init__(config)
        self.cls = BertOnlyMLMHead(config) if config.num_instances == 1 else None
        self.post_init()

    def tie_weights(self) -> None:
        super().tie_weights()
        if self.cls is not None and self.config.tie_word_embeddings:
            self.cls.predictions.decoder.weight = self.bert.embeddings.word_embeddings.weight

    def dense_logits(self, encoded: MuxEncoderOutput) -> torch.Tensor:
        """``(B, L, V)`` for every instance at every input position."""
        h = encoded.last_hidden_state
        if self.cls is not None:
            return self.cls.predictions(h)
        logits = self.retrieval_head(h, slice(encoded.prefix_length, None))
        return logits.flatten(0, 1)[: encoded.batch_size]

    def selected_logits(self, encoded: MuxEncoderOutput, rows: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """``(R, V)`` for batch row ``rows[r]`` at input position ``positions[r]``; nothing else is computed."""
        h = encoded.last_hidden_state
        if self.cls is not None:
            return self.cls.predictions(h[rows, positions])
        N = self.config.num_instances
        return self.retrieval_head.select(h, rows // N, rows % N, positions + encoded.prefix_length)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        token_type_ids: Optional[torch.Tensor] = None,
        labels: Optional[torch.Tensor] = None,
        retrieval_labels: Optional[torch.Tensor] = None,
        generator: Optional[torch.Generator] = None,
    ):
        encoded = self.encode(input_ids, attention_mask, token_type_ids)
        retrieval = self.optional_retrieval_loss(input_ids, encoded, labels, retrieval_labels, generator)
        if labels is None:
            return self.output(self.dense_logits(encoded), None, retrieval)
        if self.config.task_loss_coeff <= 0:
            return self.output(None, None, retrieval)
        rows, positions = (labels != IGNORE_INDEX).nonzero(as_tuple=True)
        logits = self.selected_logits(encoded, rows, positions)
        if rows.numel() == 0:
            task_loss = logits.float().sum()  # zero, on the graph (a batch without masked tokens)
        else:
            task_loss = F.cross_entropy(logits.float(), labels[rows, positions])
        return self.output(logits, task_loss, retrieval, torch.stack([rows, positions], dim=1))
