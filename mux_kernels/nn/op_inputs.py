"""Calling the ``torch.ops.mux`` ops from modules that may run under autocast.

The ops take their compute dtype from their inputs and require every tensor argument in the
activation dtype, so parameters are cast first. Autocast is switched off around the call: the
C++ CPU kernels run their internal GEMMs (``at::mm``) in fp32, and an active autocast would recast
those to bf16/fp16 and break the kernel (see the note in the issue report).
"""

from __future__ import annotations

import contextlib
from typing import Optional

import torch


def cast(t: Optional[torch.Tensor], dtype: torch.dtype) -> Optional[torch.Tensor]:
    return None if t is None else t.to(dtype)


def autocast_off(x: torch.Tensor) -> contextlib.AbstractContextManager:
    """Disable autocast for ``x``'s device while an op runs."""
    if torch.amp.is_autocast_available(x.device.type):
        return torch.autocast(x.device.type, enabled=False)
    return contextlib.nullcontext()
