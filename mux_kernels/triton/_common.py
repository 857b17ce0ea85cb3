"""Pieces shared by the Triton kernels: row LayerNorm and GELU (erf) with their derivatives, and the
host-side choices every launcher makes (autotuning, block sizes, accumulation dtype, matmul
precision, device guard). Launchers allocate what a kernel must fill entirely with
``mux_kernels.outputs.new_output`` (NaN-filled in tests), and what it accumulates into with zeros."""

from __future__ import annotations

import contextlib
import os

import torch
import triton
import triton.language as tl

# One fixed config per kernel, no tuning: under the interpreter (it runs programs one by one on the
# CPU), and with MUX_KERNELS_AUTOTUNE=0 (test runs, where tuning every small shape costs minutes).
FIXED_CONFIGS = os.environ.get("TRITON_INTERPRET") == "1" or os.environ.get("MUX_KERNELS_AUTOTUNE") == "0"


def autotune(configs, fixed_config, key, **kwargs):
    """``triton.autotune`` over ``configs``, or over ``fixed_config`` alone (see FIXED_CONFIGS)."""
    return triton.autotune(configs=[fixed_config] if FIXED_CONFIGS else configs, key=key, **kwargs)


def block_size(n: int) -> int:
    """A power-of-two block covering ``n`` (at least 16, the smallest tile ``tl.dot`` accepts)."""
    return max(16, triton.next_power_of_2(n))


def accumulator(dtype: torch.dtype):
    """The accumulation dtype as (torch, Triton) dtypes: fp64 for fp64 inputs (gradcheck), else fp32."""
    return (torch.float64, tl.float64) if dtype == torch.float64 else (torch.float32, tl.float32)


def dot_precision(dtype: torch.dtype) -> str:
    """fp32 operands follow torch's matmul setting (TF32 only when torch would use it as well)."""
    if dtype == torch.float64 or (dtype == torch.float32 and torch.get_float32_matmul_precision() == "highest"):
        return "ieee"
    return "tf32"


def on_device(t: torch.Tensor):
    """Launch on the tensor's GPU, whichever is current (Triton launches on the current device)."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


@triton.jit
def gelu(z):
    """GELU with the exact erf, as ``torch.nn.functional.gelu``."""
    return 0.5 * z * (1.0 + tl.erf(z * 0.7071067811865476))


@triton.jit
def gelu_grad(z):
    """GELU'(z) = Phi(z) + z * phi(z)."""
    cdf = 0.5 * (1.0 + tl.erf(z * 0.7071067811865476))
    pdf = 0.3989422804014327 * tl.exp(-0.5 * z * z)
    return cdf + z * pdf


@triton.jit
def layer_norm_rows(x, mask, n, eps):
    """Normalises each row of the tile ``x`` over its ``n`` valid columns (two-pass, as torch).

    Returns ``xhat = (x - mean) * rstd`` (zero outside ``mask``) and ``rstd`` per row.
    """
    x = tl.where(mask, x, 0.0)
    mean = tl.sum(x, axis=1) / n
    xc = tl.where(mask, x - mean[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(xc * xc, axis=1) / n + eps)
    return xc * rstd[:, None], rstd


@triton.jit
def layer_norm_rows_backward(dxhat, xhat, rstd, mask, n):
    """Gradient w.r.t. the LayerNorm input, given the gradient w.r.t. ``xhat`` (zero outside ``mask``)."""
    dxhat = tl.where(mask, dxhat, 0.0)
    mean_dxhat = tl.sum(dxhat, axis=1) / n
    mean_dxhat_xhat = tl.sum(dxhat * xhat, axis=1) / n
    dx = rstd[:, None] * (dxhat - mean_dxhat[:, None] - xhat * mean_dxhat_xhat[:, None])
    return tl.where(mask, dx, 0.0)
