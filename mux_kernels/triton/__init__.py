"""Triton kernels for torch.ops.mux: one module per op family, each with its jit kernels and launchers.

``register(device_type)`` makes the launchers the kernels of every op for that device type: "cuda"
always (when Triton is installed), "cpu" too with MUX_KERNELS_BACKEND=triton, which runs them under
TRITON_INTERPRET=1 (see mux_kernels.backend).
"""

from __future__ import annotations

import functools
import warnings

import torch

from . import demultiplex, multiplex, multiplex_embeddings

LAUNCHERS = {
    "mux::multiplex": multiplex.multiplex,
    "mux::multiplex_backward": multiplex.multiplex_backward,
    "mux::multiplex_embeddings": multiplex_embeddings.multiplex_embeddings,
    "mux::multiplex_embeddings_backward": multiplex_embeddings.multiplex_embeddings_backward,
    "mux::demultiplex": demultiplex.demultiplex,
    "mux::demultiplex_backward": demultiplex.demultiplex_backward,
}


def _without_autocast(launcher, device_type: str):
    """Autocast stays on while a custom op without an autocast kernel runs; the launchers' own torch
    GEMMs (key projections, weight gradients) must keep the dtypes the launcher chose."""

    @functools.wraps(launcher)
    def run(*args):
        with torch.autocast(device_type, enabled=False):
            return launcher(*args)

    return run


def register(device_type: str) -> None:
    """Registers the Triton launcher of every mux op as its kernel for ``device_type``."""
    with warnings.catch_warnings():
        # Replacing the C++ CPU kernels is the point of registering for "cpu".
        warnings.filterwarnings(
            "ignore", message=r"(?s).*Overriding a previously registered kernel", category=UserWarning
        )
        for name, launcher in LAUNCHERS.items():
            torch.library.register_kernel(name, device_type, _without_autocast(launcher, device_type))
