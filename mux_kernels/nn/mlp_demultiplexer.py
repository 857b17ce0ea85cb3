"""DataMUX ``mlp`` demultiplexing (SPEC §3.2): N independent MLPs read the same hidden state."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class MLPDemultiplexer(nn.Module):
    """``u_i = LN_i(GELU(W_i Dropout(h) + b_i))`` for every instance i.

    The reference's N ``dense_i`` / ``layer_norm_i`` modules are stored stacked (``weight (N, e, d)``,
    ``bias``, ``ln_weight``, ``ln_bias (N, e)``) and applied as one einsum, not N Linears in a loop.
    """

    def __init__(
        self, num_instances: int, hidden_size: int, out_features: int | None = None,
        layer_norm_eps: float = 1e-12, dropout: float = 0.1,
    ):
        super().__init__()
        e = out_features or hidden_size
        bound = 1.0 / math.sqrt(hidden_size)  # nn.Linear's default init range
        self.weight = nn.Parameter(torch.empty(num_instances, e, hidden_size).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(num_instances, e).uniform_(-bound, bound))
        self.ln_weight = nn.Parameter(torch.ones(num_instances, e))
        self.ln_bias = nn.Parameter(torch.zeros(num_instances, e))
        self.eps = layer_norm_eps
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor, positions: slice = slice(None)) -> torch.Tensor:
        """``h (G, L, d)``; returns every instance at ``h[:, positions]``: ``(G, N, P, e)``."""
        x = self.dropout(h[:, positions])
        dtype = x.dtype
        z = torch.einsum("gpd,ned->gnpe", x, self.weight.to(dtype)) + self.bias.to(dtype)[None, :, None]
        a = F.layer_norm(F.gelu(z), z.shape[-1:], eps=self.eps)
        return a * self.ln_weight.to(dtype)[None, :, None] + self.ln_bias.to(dtype)[None, :, None]
