"""Allocation of the tensors the Python/Triton launchers return (mirror of csrc/outputs.h).

With ``MUX_KERNELS_POISON_OUTPUTS=1`` (set by the test suite) outputs start as NaN, so an element a
kernel forgets to write fails the comparison with the reference.
"""

from __future__ import annotations

import os

import torch

POISON_OUTPUTS = os.environ.get("MUX_KERNELS_POISON_OUTPUTS") == "1"


def new_output(shape, *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    out = torch.empty(shape, dtype=dtype, device=device)
    if POISON_OUTPUTS:
        out.fill_(float("nan"))
    return out
