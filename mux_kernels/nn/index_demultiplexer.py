"""DataMUX / MUX-BERT ``index`` demultiplexing with a prefix of index tokens (SPEC §3.1)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .index_prefix import IndexPrefix
from .keyed_demultiplexer import KeyedDemultiplexer


class IndexPrefixDemultiplexer(KeyedDemultiplexer):
    """``u_{i,t} = LN(GELU(W [h_i ; h_t] + b))`` where ``h_i``, the state of prefix slot i, is instance i's key.

    The input ids must carry the prefix (``add_prefix``), so the encoder output ``h (G, L+N+1, d)``
    holds the N keys in ``h[:, :N]``; sequence classification reads position N, token tasks
    positions ``N+1 ..``.
    """

    def __init__(
        self,
        num_instances: int,
        hidden_size: int,
        layer_norm_eps: float = 1e-12,
        prefix: Optional[IndexPrefix] = None,
    ):
        super().__init__()
        self.prefix = prefix or IndexPrefix(num_instances)
        if self.prefix.num_instances != num_instances:
            raise ValueError(f"prefix is for {self.prefix.num_instances} instances, not {num_instances}")
        self.dense = nn.Linear(2 * hidden_size, hidden_size)
        self.layer_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)

    def add_prefix(
        self,
        input_ids: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        token_type_ids: Optional[torch.Tensor] = None,
    ) -> tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
        """``(B, L)`` ids (and mask / token types) to ``(B, L + N + 1)``; see ``IndexPrefix.apply``."""
        return self.prefix.apply(input_ids, attention_mask, token_type_ids)

    def instance_keys(self, h: torch.Tensor) -> torch.Tensor:
        return h[:, : self.prefix.num_instances]

    def first_layer(self) -> tuple[nn.Linear, Optional[nn.LayerNorm]]:
        return self.dense, self.layer_norm


class IndexPrefixRetrievalHead(IndexPrefixDemultiplexer):
    """The ``index`` retrieval / masked-LM head: its own ``dense`` and ``layer_norm``, then ``decoder (d -> V)``."""

    def __init__(
        self,
        num_instances: int,
        hidden_size: int,
        vocab_size: int,
        layer_norm_eps: float = 1e-12,
        prefix: Optional[IndexPrefix] = None,
    ):
        super().__init__(num_instances, hidden_size, layer_norm_eps, prefix)
        self.decoder = nn.Linear(hidden_size, vocab_size)

    def transform(self, a: torch.Tensor) -> torch.Tensor:
        return self.decoder(a)
