"""Argument checks for the Python side of the ops: the fake (meta) kernels and the Triton launchers.

They mirror the C++ TORCH_CHECKs in csrc/ (same wording), and use ``torch._check`` for sizes so they
work on fake tensors with symbolic shapes under ``torch.compile``.
"""

from __future__ import annotations

from typing import Optional

import torch

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _float(t: torch.Tensor, name: str) -> None:
    if t.dtype not in FLOAT_DTYPES:
        raise RuntimeError(f"{name} must be float32, float16, bfloat16 or float64, got {t.dtype}")


def _rank(t: torch.Tensor, name: str, rank: int, layout: str) -> None:
    if t.dim() != rank:
        raise RuntimeError(f"{name} must have shape {layout} ({rank} dims), got {t.dim()} dims with shape {tuple(t.shape)}")


def _same(t: torch.Tensor, ref: torch.Tensor, name: str, ref_name: str) -> None:
    if t.dtype != ref.dtype:
        raise RuntimeError(f"{name} must have the dtype of {ref_name} ({ref.dtype}), got {t.dtype}")
    if t.device != ref.device:
        raise RuntimeError(f"{name} must be on the device of {ref_name} ({ref.device}), got {t.device}")


def _size(t: torch.Tensor, name: str, dim: int, expected, what: str) -> None:
    torch._check(
        t.shape[dim] == expected,
        lambda: f"{name}.shape[{dim}] must equal {what} = {expected}, got {t.shape[dim]} (shape {tuple(t.shape)})",
    )


def check_multiplex(x: torch.Tensor, weight: torch.Tensor) -> None:
    _float(x, "x")
    _rank(x, "x", 4, "(G, N, L, d)")
    _same(weight, x, "weight", "x")
    if weight.dim() not in (2, 3):
        raise RuntimeError(
            f"weight must have shape (N, d) (Hadamard mix) or (N, d, d) (matrix mix), got shape {tuple(weight.shape)}"
        )
    _size(weight, "weight", 0, x.shape[1], "x.shape[1] (N)")
    for k in range(1, weight.dim()):
        _size(weight, "weight", k, x.shape[3], "x.shape[3] (d)")


def check_multiplex_embeddings(ids, token_type_ids, word, pos, type_, ln_weight, ln_bias, weight) -> None:
    """Shape, dtype and device checks; the id range check needs data and lives in the kernels."""
    _rank(ids, "ids", 3, "(G, N, L)")
    if ids.dtype not in (torch.int64, torch.int32):
        raise RuntimeError(f"ids must be int64 (or int32) token ids, got {ids.dtype}")
    _float(word, "word")
    _rank(word, "word", 2, "(V, d)")
    if ids.device != word.device:
        raise RuntimeError(f"ids must be on the device of word ({word.device}), got {ids.device}")
    _rank(pos, "pos", 2, "(max_positions, d)")
    _rank(type_, "type", 2, "(type_vocab_size, d)")
    _rank(ln_weight, "ln_weight", 1, "(d,)")
    _rank(ln_bias, "ln_bias", 1, "(d,)")
    _rank(weight, "weight", 2, "(N, d)")
    d = word.shape[1]
    for t, name in ((pos, "pos"), (type_, "type"), (ln_weight, "ln_weight"), (ln_bias, "ln_bias"), (weight, "weight")):
        _same(t, word, name, "word")
        _size(t, name, t.dim() - 1, d, "word.shape[1] (d)")
    _size(weight, "weight", 0, ids.shape[1], "ids.shape[1] (N)")
    torch._check(
        ids.shape[2] <= pos.shape[0],
        lambda: f"ids.shape[2] (L = {ids.shape[2]}) must not exceed the rows of pos (max_positions = {pos.shape[0]})",
    )
    torch._check(type_.shape[0] >= 1, lambda: "type must have at least one row (token type 0)")
    if token_type_ids is not None:
        if token_type_ids.shape != ids.shape:
            raise RuntimeError(
                f"token_type_ids must have the shape of ids {tuple(ids.shape)}, got {tuple(token_type_ids.shape)}"
            )
        if token_type_ids.dtype not in (torch.int64, torch.int32):
            raise RuntimeError(f"token_type_ids must be int64 (or int32) token ids, got {token_type_ids.dtype}")
        if token_type_ids.device != word.device:
            raise RuntimeError(
                f"token_type_ids must be on the device of word ({word.device}), got {token_type_ids.device}"
            )


def check_indices(t: torch.Tensor, name: str, upper: int, table: str) -> None:
    """Every index in [0, upper): a bad id is an error, never an out-of-bounds read (one sync)."""
    if t.numel() == 0:
        return
    lo, hi = torch.aminmax(t)
    lo, hi = int(lo), int(hi)
    if lo < 0 or hi >= upper:
        raise RuntimeError(f"{name} must lie in [0, {upper}) (the rows of {table}), got values in [{lo}, {hi}]")


def check_demultiplex(
    h: torch.Tensor,
    keys: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    ln_weight: Optional[torch.Tensor],
    ln_bias: Optional[torch.Tensor],
) -> None:
    _float(h, "h")
    _rank(h, "h", 3, "(G, L, d)")
    _same(keys, h, "keys", "h")
    if keys.dim() not in (2, 3):
        raise RuntimeError(
            f"keys must have shape (N, d) (shared keys) or (G, N, d) (per-group keys), got shape {tuple(keys.shape)}"
        )
    if keys.dim() == 3:
        _size(keys, "keys", 0, h.shape[0], "h.shape[0] (G)")
    _size(keys, "keys", keys.dim() - 1, h.shape[2], "h.shape[2] (d)")
    _same(weight, h, "weight", "h")
    _rank(weight, "weight", 2, "(e, 2d)")
    _size(weight, "weight", 1, 2 * h.shape[2], "2 * h.shape[2] (2d)")
    for t, name in ((bias, "bias"), (ln_weight, "ln_weight"), (ln_bias, "ln_bias")):
        if t is None:
            continue
        _same(t, h, name, "h")
        _rank(t, name, 1, "(e,)")
        _size(t, name, 0, weight.shape[0], "weight.shape[0] (e)")
    if ln_bias is not None and ln_weight is None:
        raise RuntimeError("ln_bias was given without ln_weight: pass ln_weight to apply the LayerNorm")


def check_grad_out(grad_out: torch.Tensor, ref: torch.Tensor, ref_name: str, shape, layout: str) -> None:
    """The upstream gradient of a backward op: the dtype and device of ``ref``, the forward output's shape."""
    _same(grad_out, ref, "grad_out", ref_name)
    if tuple(grad_out.shape) != tuple(shape):
        raise RuntimeError(f"grad_out must have shape {layout} = {tuple(shape)}, got {tuple(grad_out.shape)}")
