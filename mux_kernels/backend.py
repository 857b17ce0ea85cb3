"""Which implementation serves each device: C++ on the CPU, Triton on CUDA.

``MUX_KERNELS_BACKEND=triton`` registers the Triton launchers for CPU tensors too (run them under
``TRITON_INTERPRET=1``): the op test suite then exercises the Triton code on a machine with no GPU.
"""

from __future__ import annotations

import importlib.util
import os

_ACTIVE = {"cpu": "cpp"}


def _register_triton() -> None:
    if importlib.util.find_spec("triton") is None:
        if os.environ.get("MUX_KERNELS_BACKEND") == "triton":
            raise ImportError("MUX_KERNELS_BACKEND=triton needs Triton: pip install triton")
        return
    from . import triton as triton_kernels

    triton_kernels.register("cuda")
    _ACTIVE["cuda"] = "triton"
    if os.environ.get("MUX_KERNELS_BACKEND") == "triton":
        triton_kernels.register("cpu")
        _ACTIVE["cpu"] = "triton"


def active_backends() -> dict[str, str]:
    """Device type -> implementation name, e.g. ``{"cpu": "cpp", "cuda": "triton"}``."""
    return dict(_ACTIVE)


_register_triton()
