"""A compact BERT (embeddings, encoder, pooler) with Hugging Face parameter names.

``bert.embeddings.*``, ``bert.encoder.layer.{k}.*``, ``bert.pooler.dense.*``: the same state-dict
keys as ``transformers.BertModel`` under a ``bert.`` prefix, so HF and released checkpoints load
by name. With ``model_type = "roberta"`` the embeddings use RoBERTa's position ids.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..nn.bert_layer import BertLayer
from .config import MuxBertConfig


class BertEmbeddings(nn.Module):
    """``Dropout(LN(word[ids] + pos[position_ids] + type[token_type_ids]))``, or with ``inputs_embeds``
    in place of ``word[ids]`` (the second pass after multiplexing, SPEC §2.1)."""

    def __init__(self, config: MuxBertConfig):
        super().__init__()
        d = config.hidden_size
        self.word_embeddings = nn.Embedding(config.vocab_size, d, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, d)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, d)
        self.LayerNorm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.pad_token_id = config.pad_token_id
        self.roberta_positions = config.model_type == "roberta"

    def position_ids(self, input_ids: Optional[torch.Tensor], length: int, device: torch.device) -> torch.Tensor:
        """BERT: ``0..L-1``. RoBERTa: after ``pad_token_id``, counting only real tokens when ids are
        given (pads keep ``pad_token_id``), sequential from ``pad_token_id + 1`` for ``inputs_embeds``."""
        if not self.roberta_positions:
            return torch.arange(length, device=device)
        if input_ids is None:
            return torch.arange(self.pad_token_id + 1, self.pad_token_id + 1 + length, device=device)
        real = (input_ids != self.pad_token_id).long()
        return torch.cumsum(real, dim=1) * real + self.pad_token_id

    def forward(
        self,
        input_ids: Optional[torch.Tensor] = None,
        token_type_ids: Optional[torch.Tensor] = None,
        inputs_embeds: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        x = self.word_embeddings(input_ids) if inputs_embeds is None else inputs_embeds
        x = x + self.position_embeddings(self.position_ids(input_ids, x.shape[1], x.device))
        if token_type_ids is None:
            x = x + self.token_type_embeddings.weight[0]
        else:
            x = x + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(x))


class BertEncoder(nn.Module):
    def __init__(self, config: MuxBertConfig):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer.from_config(config) for _ in range(config.num_hidden_layers))

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``mask``: the additive ``(B, 1, 1, L)`` mask, or None to attend everywhere."""
        for layer in self.layer:
            x = layer(x, mask)
        return x


class BertPooler(nn.Module):
    """``tanh(dense(h[:, 0]))``, the N = 1 baseline's sequence-classification input."""

    def __init__(self, config: MuxBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(h[:, 0]))


class BertBackbone(nn.Module):
    """Holds ``embeddings``, ``encoder`` and, with ``add_pooling_layer``, ``pooler``."""

    def __init__(self, config: MuxBertConfig, add_pooling_layer: bool = False):
        super().__init__()
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None
