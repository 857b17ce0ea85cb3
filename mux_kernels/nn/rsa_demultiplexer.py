"""MUX-PLMs RSA-inspired demultiplexing, ``demuxing_variant: index_pos`` (SPEC §3.3).

Learned private keys ``k_i`` replace the index prefix, so the sequence keeps its length. One
``RSADemuxModule`` (keys and the ``dense_j`` stack) is shared by the task path
(``RSADemultiplexer``) and the retrieval / masked-LM path (``RSARetrievalHead``), as in the
reference, where it is registered under both and saved twice (``*.demux_module.*`` aliases).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .keyed_demultiplexer import KeyedDemultiplexer


def _gelu_of_fresh(z: torch.Tensor) -> torch.Tensor:
    """GELU of a tensor nothing else holds (a Linear's output): in place when no gradient flows
    through it, which spares a (G, N, P, d) buffer per layer on the widest tensors of token tasks."""
    return F.gelu(z) if z.requires_grad else torch.ops.aten.gelu_(z)


class RSADemuxModule(nn.Module):
    """``demux_instance_embedding (N, d)`` (init ``randn``: unit entries, not normalised),
    ``dense_1: 2d -> d``, ``dense_j: d -> d`` for j = 2..n, with ``layer_norm_j`` and ``dropout_j``."""

    def __init__(
        self,
        num_instances: int,
        hidden_size: int,
        num_hidden_demux_layers: int = 3,
        layer_norm_eps: float = 1e-12,
        dropout: float = 0.1,
        generator: Optional[torch.Generator] = None,
    ):
        super().__init__()
        if num_hidden_demux_layers < 1:
            raise ValueError(f"num_hidden_demux_layers must be >= 1, got {num_hidden_demux_layers}")
        self.num_layers = num_hidden_demux_layers
        self.demux_instance_embedding = nn.Parameter(torch.randn(num_instances, hidden_size, generator=generator))
        for j in range(1, num_hidden_demux_layers + 1):
            setattr(self, f"dense_{j}", nn.Linear(2 * hidden_size if j == 1 else hidden_size, hidden_size))
            setattr(self, f"layer_norm_{j}", nn.LayerNorm(hidden_size, eps=layer_norm_eps))
            setattr(self, f"dropout_{j}", nn.Dropout(dropout))

    def layer(self, j: int) -> tuple[nn.Linear, nn.LayerNorm, nn.Dropout]:
        return getattr(self, f"dense_{j}"), getattr(self, f"layer_norm_{j}"), getattr(self, f"dropout_{j}")


class RSADemultiplexer(KeyedDemultiplexer):
    """The task path, as the released checkpoints execute it (n = ``num_hidden_demux_layers``)::

        a_1 = Dropout(GELU(W_1 [k_i ; h_t] + b_1))
        a_j = Dropout(GELU(W_j a_{j-1} + b_j)) + a_{j-1}      for j = 2 .. n-1
        out = LN_pd(GELU(W_pd a + b_pd)) + a

    Reference quirks kept for parity: ``layer_norm_j`` is never applied (the loop looks up
    ``dropout_j`` instead) and the loop stops one short, so ``dense_n`` is unused.
    """

    def __init__(
        self,
        num_instances: int,
        hidden_size: int,
        num_hidden_demux_layers: int = 3,
        layer_norm_eps: float = 1e-12,
        dropout: float = 0.1,
        demux_module: Optional[RSADemuxModule] = None,
    ):
        super().__init__()
        self.demux_module = demux_module or RSADemuxModule(
            num_instances, hidden_size, num_hidden_demux_layers, layer_norm_eps, dropout
        )
        self.pre_decoder = nn.Linear(hidden_size, hidden_size)
        self.pre_decoder_layer_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)

    def instance_keys(self, h: torch.Tensor) -> torch.Tensor:
        return self.demux_module.demux_instance_embedding

    def first_layer(self) -> tuple[nn.Linear, Optional[nn.LayerNorm]]:
        return self.demux_module.dense_1, None

    def transform(self, a: torch.Tensor) -> torch.Tensor:
        # The residual adds go in place into fresh outputs (no GELU / LayerNorm backward reads its
        # output): one (G, N, P, d) buffer less per layer on the widest tensors of token tasks.
        module = self.demux_module
        a = module.dropout_1(a)
        for j in range(2, module.num_layers):
            dense, _, dropout = module.layer(j)
            a = dropout(_gelu_of_fresh(dense(a))).add_(a)
        return self.pre_decoder_layer_norm(_gelu_of_fresh(self.pre_decoder(a))).add_(a)


class RSARetrievalHead(KeyedDemultiplexer):
    """The retrieval / masked-LM path: LayerNorms used, no residuals, logits over the vocabulary::

        dense_1 -> GELU -> LN_1 -> dense_j -> GELU -> LN_j (j = 2 .. n-1) -> pre_decoder -> GELU
        -> pre_decoder_layer_norm -> decoder

    ``decoder.weight`` is tied to the word embeddings by the model that owns the head.
    """

    def __init__(self, demux_module: RSADemuxModule, vocab_size: int):
        super().__init__()
        hidden_size = demux_module.dense_1.out_features
        self.demux_module = demux_module
        self.pre_decoder = nn.Linear(hidden_size, hidden_size)
        self.pre_decoder_layer_norm = nn.LayerNorm(hidden_size, eps=demux_module.layer_norm_1.eps)
        self.decoder = nn.Linear(hidden_size, vocab_size)

    def instance_keys(self, h: torch.Tensor) -> torch.Tensor:
        return self.demux_module.demux_instance_embedding

    def first_layer(self) -> tuple[nn.Linear, Optional[nn.LayerNorm]]:
        return self.demux_module.dense_1, self.demux_module.layer_norm_1

    def transform(self, a: torch.Tensor) -> torch.Tensor:
        for j in range(2, self.demux_module.num_layers):
            dense, norm, _ = self.demux_module.layer(j)
            a = norm(_gelu_of_fresh(dense(a)))
        return self.decoder(self.pre_decoder_layer_norm(_gelu_of_fresh(self.pre_decoder(a))))
