"""The skeleton shared by the index-keyed demultiplexers (SPEC §3.1, §3.3).

Instance i at position t starts from ``LN?(GELU(W [key_i ; h_t] + b))`` — one ``ops.demultiplex``
call, which never builds the ``[key ; h]`` concatenation — then goes through a per-row stack that
each variant defines. Two ways in:

* ``forward(h, positions)``: every instance at a slice of positions, ``(G, N, P, e)``;
* ``select(h, groups, instances, positions)``: only the listed ``(g, i, t)`` triples, ``(R, e)``,
  for losses that need a few rows (retrieval, masked LM): the rest is never computed.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .. import ops
from .op_inputs import cast


class KeyedDemultiplexer(nn.Module):
    """Subclasses define ``instance_keys``, ``first_layer`` and optionally ``transform``."""

    def instance_keys(self, h: torch.Tensor) -> torch.Tensor:
        """The keys: ``(N, d)`` shared by all groups, or ``(G, N, d)`` per group."""
        raise NotImplementedError

    def first_layer(self) -> tuple[nn.Linear, Optional[nn.LayerNorm]]:
        """The ``2d -> e`` Linear on ``[key ; h]`` and the LayerNorm after its GELU (None: no LayerNorm)."""
        raise NotImplementedError

    def transform(self, a: torch.Tensor) -> torch.Tensor:
        """What follows the first layer, applied along the last dim."""
        return a

    def _demultiplex(self, h: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        dense, norm = self.first_layer()
        dtype = h.dtype
        return ops.demultiplex(
            h,
            keys.to(dtype),
            dense.weight.to(dtype),
            cast(dense.bias, dtype),
            cast(norm.weight if norm is not None else None, dtype),
            cast(norm.bias if norm is not None else None, dtype),
            norm.eps if norm is not None else 1e-12,
        )

    def forward(self, h: torch.Tensor, positions: slice = slice(None)) -> torch.Tensor:
        """``h (G, L, d)`` encoder output; returns every instance at ``h[:, positions]``: ``(G, N, P, e)``."""
        return self.transform(self._demultiplex(h[:, positions], self.instance_keys(h)))

    def select(
        self, h: torch.Tensor, groups: torch.Tensor, instances: torch.Tensor, positions: torch.Tensor
    ) -> torch.Tensor:
        """Instance ``instances[r]`` of group ``groups[r]`` at position ``positions[r]``: ``(R, e)``."""
        keys = self.instance_keys(h)
        key_rows = keys[instances] if keys.dim() == 2 else keys[groups, instances]
        # Each selected row is its own one-key, one-position group: (R, 1, d) -> (R, 1, 1, e).
        a = self._demultiplex(h[groups, positions].unsqueeze(1), key_rows.unsqueeze(1))
        return self.transform(a.flatten(0, 2))
