"""Python side of the ``torch.ops.mux`` op library: typed wrappers, fake kernels, autograd.

The schemas and the CPU kernels live in C++ (``csrc/``, loaded as ``mux_kernels._C``); the CUDA
kernels are the Triton launchers in ``mux_kernels.triton``. Gradients go through the private
``mux::*_backward`` ops, so every backend's backward is as fused as its forward.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from . import _C  # noqa: F401  (registers the schemas and CPU kernels)
from . import checks

_ops = torch.ops.mux


# ----------------------------------------------------------------------------------------------
# Public wrappers
# ----------------------------------------------------------------------------------------------


def default_scale(num_instances: int, matrix: bool) -> float:
    """The released models' scale: the mean (1/N) for Hadamard vectors, 1/sqrt(N) for matrices."""
    if num_instances < 1:
        raise ValueError(
            f"the default scale (1/N or 1/sqrt(N)) needs at least one instance, got N = {num_instances}: "
            "pass scale explicitly"
        )
    return 1.0 / math.sqrt(num_instances) if matrix else 1.0 / num_instances


def multiplex(x: torch.Tensor, weight: torch.Tensor, scale: Optional[float] = None) -> torch.Tensor:
    """Mix ``x (G, N, L, d)`` into ``(G, L, d)`` with ``weight (N, d)`` or ``(N, d, d)``."""
    if scale is None:
        scale = default_scale(x.shape[1], weight.dim() == 3)
    return _ops.multiplex(x, weight, float(scale))


def multiplex_embeddings(
    ids: torch.Tensor,
    word: torch.Tensor,
    pos: torch.Tensor,
    type_: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    weight: torch.Tensor,
    token_type_ids: Optional[torch.Tensor] = None,
    scale: Optional[float] = None,
    eps: float = 1e-12,
) -> torch.Tensor:
    """Token ids ``(G, N, L)`` to the multiplexed encoder input ``(G, L, d)`` in one pass (SPEC §2.1)."""
    if scale is None:
        scale = default_scale(ids.shape[1], matrix=False)
    return _ops.multiplex_embeddings(
        ids, token_type_ids, word, pos, type_, ln_weight, ln_bias, weight, float(scale), float(eps)
    )


def demultiplex(
    h: torch.Tensor,
    keys: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    ln_weight: Optional[torch.Tensor] = None,
    ln_bias: Optional[torch.Tensor] = None,
    eps: float = 1e-12,
) -> torch.Tensor:
    """``LN(GELU(weight @ [key ; h] + bias))`` for every instance: ``(G, L, d)`` to ``(G, N, L, e)``."""
    return _ops.demultiplex(h, keys, weight, bias, ln_weight, ln_bias, float(eps))


# ----------------------------------------------------------------------------------------------
# Fake kernels: output shapes for torch.compile / meta tensors
# ----------------------------------------------------------------------------------------------


@torch.library.register_fake("mux::multiplex")
def _multiplex_fake(x, weight, scale):
    checks.check_multiplex(x, weight)
    G, _, L, d = x.shape
    return x.new_empty((G, L, d))


@torch.library.register_fake("mux::multiplex_backward")
def _multiplex_backward_fake(grad_out, x, weight, scale):
    checks.check_multiplex(x, weight)
    G, _, L, d = x.shape
    checks.check_grad_out(grad_out, x, "x", (G, L, d), "(G, L, d)")
    return torch.empty_like(x, memory_format=torch.contiguous_format), torch.empty_like(weight, memory_format=torch.contiguous_format)


@torch.library.register_fake("mux::multiplex_embeddings")
def _multiplex_embeddings_fake(ids, token_type_ids, word, pos, type_, ln_weight, ln_bias, weight, scale, eps):
    checks.check_multiplex_embeddings(ids, token_type_ids, word, pos, type_, ln_weight, ln_bias, weight)
    G, _, L = ids.shape
    return word.new_empty((G, L, word.shape[1]))


@torch.library.register_fake("mux::multiplex_embeddings_backward")
def _multiplex_embeddings_backward_fake(
    grad_out, ids, token_type_ids, word, pos, type_, ln_weight, ln_bias, weight, scale, eps
):
    checks.check_multiplex_embeddings(ids, token_type_ids, word, pos, type_, ln_weight, ln_bias, weight)
    G, _, L = ids.shape
    checks.check_grad_out(grad_out, word, "word", (G, L, word.shape[1]), "(G, L, d)")
    return tuple(torch.empty_like(t, memory_format=torch.contiguous_format) for t in (word, pos, type_, ln_weight, ln_bias, weight))


@torch.library.register_fake("mux::demultiplex")
def _demultiplex_fake(h, keys, weight, bias, ln_weight, ln_bias, eps):
    checks.check_demultiplex(h, keys, weight, bias, ln_weight, ln_bias)
    G, L, _ = h.shape
    return h.new_empty((G, keys.shape[-2], L, weight.shape[0]))


@torch.library.register_fake("mux::demultiplex_backward")
def _demultiplex_backward_fake(grad_out, h, keys, weight, bias, ln_weight, ln_bias, eps):
    checks.check_demultiplex(h, keys, weight, bias, ln_weight, ln_bias)
    G, L, _ = h.shape
    checks.check_grad_out(grad_out, h, "h", (G, keys.shape[-2], L, weight.shape[0]), "(G, N, L, e)")
    e = weight.shape[0]
    vectors = tuple(h.new_empty((e,)) for _ in range(3))  # bias, ln_weight, ln_bias grads
    return (torch.empty_like(h, memory_format=torch.contiguous_format), keys.new_empty(keys.shape),
            torch.empty_like(weight, memory_format=torch.contiguous_format)) + vectors


# ----------------------------------------------------------------------------------------------
# Autograd
# ----------------------------------------------------------------------------------------------


def _multiplex_setup(ctx, inputs, output):
    x, weight, scale = inputs
    ctx.save_for_backward(x, weight)
    ctx.scale = scale


def _multiplex_backward(ctx, grad_out):
    x, weight = ctx.saved_tensors
    grad_x, grad_weight = _ops.multiplex_backward(grad_out, x, weight, ctx.scale)
    return grad_x, grad_weight, None


torch.library.register_autograd("mux::multiplex", _multiplex_backward, setup_context=_multiplex_setup)


def _multiplex_embeddings_setup(ctx, inputs, output):
    ids, token_type_ids, word, pos, type_, ln_weight, ln_bias, weight, scale, eps = inputs
    ctx.has_token_types = token_type_ids is not None
    tensors = (ids, word, pos, type_, ln_weight, ln_bias, weight)
    ctx.save_for_backward(*tensors, *((token_type_ids,) if ctx.has_token_types else ()))
    ctx.scale, ctx.eps = scale, eps


def _multiplex_embeddings_backward(ctx, grad_out):
    ids, word, pos, type_, ln_weight, ln_bias, weight, *tt = ctx.saved_tensors
    grads = _ops.multiplex_embeddings_backward(
        grad_out, ids, tt[0] if tt else None, word, pos, type_, ln_weight, ln_bias, weight, ctx.scale, ctx.eps
    )
    return (None, None, *grads, None, None)


torch.library.register_autograd(
    "mux::multiplex_embeddings", _multiplex_embeddings_backward, setup_context=_multiplex_embeddings_setup
)


def _demultiplex_setup(ctx, inputs, output):
    h, keys, weight, bias, ln_weight, ln_bias, eps = inputs
    ctx.present = tuple(t is not None for t in (bias, ln_weight, ln_bias))
    ctx.save_for_backward(h, keys, weight, *(t for t in (bias, ln_weight, ln_bias) if t is not None))
    ctx.eps = eps


def _demultiplex_backward(ctx, grad_out):
    h, keys, weight, *rest = ctx.saved_tensors
    it = iter(rest)
    bias, ln_weight, ln_bias = (next(it) if present else None for present in ctx.present)
    grad_h, grad_keys, grad_weight, grad_bias, grad_ln_weight, grad_ln_bias = _ops.demultiplex_backward(
        grad_out, h, keys, weight, bias, ln_weight, ln_bias, ctx.eps
    )
    optional = (grad_bias, grad_ln_weight, grad_ln_bias)
    return (grad_h, grad_keys, grad_weight, *(g if p else None for g, p in zip(optional, ctx.present)), None)


torch.library.register_autograd("mux::demultiplex", _demultiplex_backward, setup_context=_demultiplex_setup)
