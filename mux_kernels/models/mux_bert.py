"""``MuxBertModel``: ids ``(B, L)`` -> embed -> multiplex -> embed again -> encoder -> ``(G, L', d)``.

The reference pipeline of SPEC §2.1 / §4.1. For Hadamard multiplexers (``gaussian_hadamard``,
``binary_hadamard``) the whole embed -> mix -> second-embed path is one ``ops.multiplex_embeddings``
call. ``num_instances = 1`` is a plain BERT: one embedding pass, encoder with the padding mask.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import nn

from .. import ops
from ..nn.bert_layer import additive_attention_mask
from ..nn.grouping import group_instances, multiplexed_attention_mask, pad_rows, rows_to_pad
from ..nn.multiplexers import HadamardMultiplexer
from .bert import BertBackbone
from .components import build_multiplexer, index_prefix
from .config import MuxBertConfig


@dataclass
class MuxEncoderOutput:
    last_hidden_state: torch.Tensor  # (G, L', d) multiplexed; (B, L, d) for the N = 1 baseline
    batch_size: int  # rows of the caller's batch; rows G*N - B past it are ragged-batch padding
    prefix_length: int  # index-prefix tokens in front of every sequence (N + 1 for ``index``, else 0)


def _without_pad_row_gradient(word: torch.Tensor, pad_token_id: int) -> torch.Tensor:
    """``nn.Embedding(padding_idx=pad)`` gives the pad row no gradient; keep that on the fused path."""
    view = word.view_as(word)
    pad = torch.tensor([pad_token_id], device=word.device)
    view.register_hook(lambda grad: grad.index_fill(0, pad, 0.0))
    return view


class MuxBertModel(nn.Module):
    """The multiplexed backbone; its ``forward`` returns the multiplexed encoder output."""

    # The reference's multiplexed classification forwards drop segment ids (SPEC §2.1); the masked
    # LM keeps them. ``config.use_token_type_ids`` keeps them everywhere.
    drops_token_type_ids = False
    # Only sequence classification reads the pooler (HF builds it for BertForSequenceClassification only).
    uses_pooler = False
    # Checkpoint keys this class has no module for and may skip even when loading strictly.
    ignored_checkpoint_prefixes: tuple[str, ...] = ("demultiplexer.", "retrieval_head.", "demux_module.",
                                                    "classifier.", "cls.")

    def __init__(self, config: MuxBertConfig):
        super().__init__()
        self.config = config
        pooler = (bool(config.add_pooling_layer) and self.uses_pooler and config.num_instances == 1
                  and config.classifier_pooling == "cls")
        self.bert = BertBackbone(config, add_pooling_layer=pooler)
        self.multiplexer = build_multiplexer(config) if config.num_instances > 1 else None
        self.index_prefix = index_prefix(config) if config.prefix_length else None
        if type(self) is MuxBertModel:
            self.post_init()

    # --- construction -----------------------------------------------------------------------

    def post_init(self) -> None:
        """Hugging Face BERT init of every Linear / Embedding / LayerNorm, then weight tying."""
        self.apply(self._init_weights)
        self.tie_weights()

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        with torch.no_grad():
            if isinstance(module, nn.Linear):
                module.weight.normal_(0.0, std)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.Embedding):
                module.weight.normal_(0.0, std)
                if module.padding_idx is not None:
                    module.weight[module.padding_idx].zero_()
            elif isinstance(module, nn.LayerNorm):
                module.weight.fill_(1.0)
                module.bias.zero_()

    def tie_weights(self) -> None:
        """Point output decoders at the word embeddings (overridden by models that have one)."""

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **kwargs: Any):
        """Load a checkpoint directory; see ``mux_kernels.models.loading.from_pretrained``."""
        from .loading import from_pretrained  # loading imports the model classes

        return from_pretrained(path, model_class=cls, **kwargs)

    @classmethod
    def from_bert(cls, path: str | os.PathLike, **config_overrides: Any):
        """A new model of this class on a plain BERT checkpoint; see ``loading.from_bert``."""
        from .loading import from_bert

        return from_bert(path, model_class=cls, **config_overrides)

    def save_pretrained(self, path: str | os.PathLike) -> None:
        """Write ``config.json`` and ``model.safetensors`` in the released key layout."""
        from .loading import save_pretrained

        save_pretrained(self, path)

    # --- forward ----------------------------------------------------------------------------

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        token_type_ids: Optional[torch.Tensor] = None,
    ) -> MuxEncoderOutput:
        return self.encode(input_ids, attention_mask, token_type_ids)

    def encode(
        self,
        input_ids: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        token_type_ids: Optional[torch.Tensor] = None,
        mask_instances: bool = False,
    ) -> MuxEncoderOutput:
        """``input_ids (B, L)`` un-multiplexed; ``attention_mask`` 1 = token, 0 = padding.

        A batch that is not a multiple of N gets copies of its last row (dropped again by the heads).
        ``mask_instances``: the contextual multiplexer hides padded instances from its cross-instance
        attention (the reference does this for sequence classification only).
        """
        config = self.config
        N = config.num_instances
        batch_size = input_ids.shape[0]
        if N == 1:
            h = self.bert.embeddings(input_ids, token_type_ids)
            return MuxEncoderOutput(self._encoder(h, attention_mask), batch_size, 0)
        if self.drops_token_type_ids and not config.use_token_type_ids:
            token_type_ids = None
        extra = rows_to_pad(batch_size, N)
        ids, mask, types = (pad_rows(t, extra) for t in (input_ids, attention_mask, token_type_ids))
        if self.index_prefix is not None:
            ids, mask, types = self.index_prefix.apply(ids, mask, types)
        else:
            ids = ids.clone()  # index_pos forces [CLS] at position 0 (the reference does it in place)
            ids[:, 0] = config.cls_token_id
        muxed = self._multiplexed_embeddings(ids, mask, types, mask_instances)
        encoder_mask = multiplexed_attention_mask(mask, N) if config.padding_aware and mask is not None else None
        return MuxEncoderOutput(self._encoder(muxed, encoder_mask), batch_size, config.prefix_length)

    def _encoder(self, h: torch.Tensor, attention_mask: Optional[torch.Tensor]) -> torch.Tensor:
        return self.bert.encoder(h, additive_attention_mask(attention_mask, h.dtype))

    def _fuses_embeddings(self) -> bool:
        """One ``ops.multiplex_embeddings`` call replaces embed -> mix -> embed for Hadamard mixes.

        In training it applies the embedding dropout once, after the op; the reference applies it to
        every instance's embeddings and again after the second pass. ``exact_embedding_dropout``
        keeps the reference placement (unfused) in training. RoBERTa positions are not fusable.
        """
        exact = self.training and self.config.exact_embedding_dropout and self.config.hidden_dropout_prob > 0
        return isinstance(self.multiplexer, HadamardMultiplexer) and self.config.model_type == "bert" and not exact

    def _multiplexed_embeddings(
        self,
        ids: torch.Tensor,
        attention_mask: Optional[torch.Tensor],
        token_type_ids: Optional[torch.Tensor],
        mask_instances: bool,
    ) -> torch.Tensor:
        """``(G*N, L')`` ids to the encoder input ``(G, L', d)``."""
        embeddings = self.bert.embeddings
        if not self._fuses_embeddings():
            first = embeddings(ids, token_type_ids)
            return embeddings(inputs_embeds=self.multiplexer(first, attention_mask, mask_instances))
        N = self.config.num_instances
        word = embeddings.word_embeddings.weight
        if word.requires_grad and torch.is_grad_enabled():
            word = _without_pad_row_gradient(word, self.config.pad_token_id)
        muxed = ops.multiplex_embeddings(
            group_instances(ids, N),
            word,
            embeddings.position_embeddings.weight,
            embeddings.token_type_embeddings.weight,
            embeddings.LayerNorm.weight,
            embeddings.LayerNorm.bias,
            self.multiplexer.instance_embedding.to(word.dtype),
            token_type_ids=None if token_type_ids is None else group_instances(token_type_ids, N),
            scale=self.multiplexer.scale,
            eps=embeddings.LayerNorm.eps,
        )
        return embeddings.dropout(muxed)
