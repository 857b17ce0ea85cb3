"""Calling the ``torch.ops.mux`` ops from modules that may run under autocast.

The ops take their compute dtype from their inputs and require every tensor argument in the
activation dtype, so parameters are cast first. (Inside the ops autocast is off: the C++ kernels
and the Triton launchers run their internal GEMMs in the dtypes they chose.)
"""

from __future__ import annotations

from typing import Optional

import torch


def cast(t: Optional[torch.Tensor], dtype: torch.dtype) -> Optional[torch.Tensor]:
    return None if t is None else t.to(dtype)
