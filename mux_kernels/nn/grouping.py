"""The batch layout shared by every multiplexer and demultiplexer (SPEC §1).

Rows are grouped consecutively: un-multiplexed row ``g*N + i`` is instance ``i`` of group ``g``, so
``(B, ...)`` views as ``(G, N, ...)`` and the demultiplexed output comes back in input order.
"""

from __future__ import annotations

from typing import Optional

import torch


def rows_to_pad(batch_size: int, num_instances: int) -> int:
    """How many rows make ``batch_size`` a multiple of ``num_instances``."""
    return -batch_size % num_instances


def pad_rows(t: Optional[torch.Tensor], extra: int) -> Optional[torch.Tensor]:
    """Append ``extra`` copies of the last row (deterministic, unlike the reference's random rows)."""
    if t is None or extra == 0:
        return t
    return torch.cat([t, t[-1:].expand(extra, *t.shape[1:])])


def group_instances(x: torch.Tensor, num_instances: int) -> torch.Tensor:
    """``(B, ...)`` to ``(B // N, N, ...)``; B must be a multiple of N (see ``pad_rows``)."""
    if x.shape[0] % num_instances:
        raise ValueError(
            f"the batch ({x.shape[0]} rows) must be a multiple of num_instances ({num_instances}); "
            "pad it first (mux_kernels.nn.grouping.pad_rows)"
        )
    return x.view(x.shape[0] // num_instances, num_instances, *x.shape[1:])


def multiplexed_attention_mask(attention_mask: torch.Tensor, num_instances: int) -> torch.Tensor:
    """``(B, L)`` to ``(G, L)``: a multiplexed position is padding only if all N instances pad there."""
    return group_instances(attention_mask, num_instances).amax(dim=1)


def as_groups(x: torch.Tensor, num_instances: int) -> torch.Tensor:
    """Accept ``(G, N, L, d)`` as is, or the un-multiplexed ``(B, L, d)`` in the grouping above."""
    if x.dim() == 4:
        if x.shape[1] != num_instances:
            raise ValueError(f"x has shape {tuple(x.shape)}: dim 1 must be num_instances = {num_instances}")
        return x
    if x.dim() != 3:
        raise ValueError(f"x must have shape (G, N, L, d) or (B, L, d), got {tuple(x.shape)}")
    return group_instances(x, num_instances)
