"""mux::multiplex_embeddings in Triton: token ids to the encoder input in one pass (SPEC §2.1, §7.1).

Each program owns a tile of (g, l) rows with the whole hidden dim in registers (BLOCK_D =
next_pow2(d), masked). For each instance it gathers the word rows (int64 offsets), adds the
position/type rows, normalises, scales by weight[i] and accumulates; then it adds the position/type
rows again, normalises once more and writes (G, L, d) once. The backward recomputes all of it.

The small tables are prepared once on the host in the accumulation dtype (fp32; fp64 for fp64):
``pos_type[l] = pos[l] + type[0]`` (added by both passes) and ``type_delta[t] = type[t] - type[0]``
(the first pass's extra for token type t).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import checks
from ..outputs import new_output
from ._common import accumulator, autotune, block_size, layer_norm_rows, layer_norm_rows_backward, on_device


@triton.jit
def _instance_rows(
    i, ids_ptrs, tt_ptrs, s_in, s_tn, row_mask, word_ptr, s_wv, s_wd, type_delta_ptr, pos_type,
    cols, mask, d, eps, HAS_TYPES: tl.constexpr, ACC: tl.constexpr,
):
    """First embedding pass of instance i for the tile's rows: LN(word[ids] + pos + type[tt]).
    Returns xhat, rstd, and the ids and token types (0 without token_type_ids)."""
    ids = tl.load(ids_ptrs + i * s_in, mask=row_mask, other=0).to(tl.int64)
    x = tl.load(word_ptr + ids[:, None] * s_wv + cols[None, :] * s_wd, mask=mask, other=0.0).to(ACC)
    x += pos_type
    tt = tl.zeros_like(ids)
    if HAS_TYPES:
        tt = tl.load(tt_ptrs + i * s_tn, mask=row_mask, other=0).to(tl.int64)
        x += tl.load(type_delta_ptr + tt[:, None] * d + cols[None, :], mask=mask, other=0.0)
    xhat, rstd = layer_norm_rows(x, mask, d, eps)
    return xhat, rstd, ids, tt


@triton.jit
def _mixed_rows(
    ids_ptrs, tt_ptrs, s_in, s_tn, row_mask, word_ptr, s_wv, s_wd, type_delta_ptr, pos_type, lnw, lnb, w_ptr,
    N, cols, mask, d, scale, eps,
    HAS_TYPES: tl.constexpr, ACC: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """Both passes up to the final LayerNorm: returns its xhat and rstd."""
    mix = tl.zeros((BLOCK_R, BLOCK_D), dtype=ACC)
    for i in range(N):
        xhat, _, _, _ = _instance_rows(
            i, ids_ptrs, tt_ptrs, s_in, s_tn, row_mask, word_ptr, s_wv, s_wd, type_delta_ptr, pos_type,
            cols, mask, d, eps, HAS_TYPES, ACC,
        )
        w = tl.load(w_ptr + i * d + cols, mask=cols < d, other=0.0)
        mix += (xhat * lnw[None, :] + lnb[None, :]) * w[None, :]
    return layer_norm_rows(mix * scale + pos_type, mask, d, eps)


@autotune(
    configs=[triton.Config({"BLOCK_R": r}, num_warps=w) for r, w in ((1, 4), (2, 4), (4, 8), (8, 8))],
    fixed_config=triton.Config({"BLOCK_R": 4}),
    key=["N", "d"],
)
@triton.jit
def _multiplex_embeddings_fwd_kernel(
    ids_ptr, tt_ptr, word_ptr, pos_type_ptr, type_delta_ptr, lnw_ptr, lnb_ptr, w_ptr, out_ptr,
    rows, N, L, d, s_ig, s_in, s_il, s_tg, s_tn, s_tl, s_wv, s_wd, scale, eps,
    HAS_TYPES: tl.constexpr, ACC: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr,
):
    r = (tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)).to(tl.int64)
    g = r // L
    l = r % L
    cols = tl.arange(0, BLOCK_D)
    row_mask = r < rows
    mask = row_mask[:, None] & (cols < d)[None, :]
    pos_type = tl.load(pos_type_ptr + l[:, None] * d + cols[None, :], mask=mask, other=0.0)
    lnw = tl.load(lnw_ptr + cols, mask=cols < d, other=0.0)
    lnb = tl.load(lnb_ptr + cols, mask=cols < d, other=0.0)
    xhat, _ = _mixed_rows(
        ids_ptr + g * s_ig + l * s_il, tt_ptr + g * s_tg + l * s_tl, s_in, s_tn, row_mask, word_ptr, s_wv, s_wd,
        type_delta_ptr, pos_type, lnw, lnb, w_ptr, N, cols, mask, d, scale, eps, HAS_TYPES, ACC, BLOCK_R, BLOCK_D,
    )
    out = xhat * lnw[None, :] + lnb[None, :]
    tl.store(out_ptr + r[:, None] * d + cols[None, :], out.to(out_ptr.dtype.element_ty), mask=mask)


@autotune(
    configs=[triton.Config({}, num_warps=w) for w in (4, 8)],
    fixed_config=triton.Config({}),
    key=["N", "d"],
    reset_to_zero=["grad_word_ptr", "type_partial_ptr"],
)
@triton.jit
def _multiplex_embeddings_bwd_kernel(
    go_ptr, ids_ptr, tt_ptr, word_ptr, pos_type_ptr, type_delta_ptr, lnw_ptr, lnb_ptr, w_ptr,
    grad_word_ptr, row_grad_ptr, lnw_partial_ptr, lnb_partial_ptr, w_partial_ptr, type_partial_ptr,
    rows, N, L, d, num_types, s_gg, s_gl, s_gd, s_ig, s_in, s_il, s_tg, s_tn, s_tl, s_wv, s_wd, scale, eps,
    HAS_TYPES: tl.constexpr, ACC: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """Recomputes the forward, then goes back through the final LayerNorm, the mix and every
    instance's LayerNorm. Outputs per row: the gradient reaching pos_type[l] (row_grad); per program:
    partial sums for ln_weight, ln_bias, weight and (with token types) type_delta; the word rows
    directly into grad_word (see the atomic_add)."""
    pid = tl.program_id(0).to(tl.int64)
    r = pid * BLOCK_R + tl.arange(0, BLOCK_R)
    g = r // L
    l = r % L
    cols = tl.arange(0, BLOCK_D)
    col_mask = cols < d
    row_mask = r < rows
    mask = row_mask[:, None] & col_mask[None, :]
    pos_type = tl.load(pos_type_ptr + l[:, None] * d + cols[None, :], mask=mask, other=0.0)
    lnw = tl.load(lnw_ptr + cols, mask=col_mask, other=0.0)
    lnb = tl.load(lnb_ptr + cols, mask=col_mask, other=0.0)
    ids_ptrs = ids_ptr + g * s_ig + l * s_il
    tt_ptrs = tt_ptr + g * s_tg + l * s_tl
    xhat_final, rstd_final = _mixed_rows(
        ids_ptrs, tt_ptrs, s_in, s_tn, row_mask, word_ptr, s_wv, s_wd, type_delta_ptr, pos_type, lnw, lnb, w_ptr,
        N, cols, mask, d, scale, eps, HAS_TYPES, ACC, BLOCK_R, BLOCK_D,
    )
    go = tl.load(go_ptr + (g * s_gg + l * s_gl)[:, None] + cols[None, :] * s_gd, mask=mask, other=0.0)
    go = go.to(ACC)
    dlnw = tl.sum(go * xhat_final, axis=0)
    dlnb = tl.sum(go, axis=0)
    dmix = layer_norm_rows_backward(go * lnw[None, :], xhat_final, rstd_final, mask, d)
    row_grad = dmix
    for i in range(N):
        xhat, rstd, ids, tt = _instance_rows(
            i, ids_ptrs, tt_ptrs, s_in, s_tn, row_mask, word_ptr, s_wv, s_wd, type_delta_ptr, pos_type,
            cols, mask, d, eps, HAS_TYPES, ACC,
        )
        w = tl.load(w_ptr + i * d + cols, mask=col_mask, other=0.0)
        e = xhat * lnw[None, :] + lnb[None, :]
        tl.store(w_partial_ptr + (pid * N + i) * d + cols, tl.sum(dmix * e, axis=0), mask=col_mask)
        de = dmix * (w * scale)[None, :]
        dlnw += tl.sum(de * xhat, axis=0)
        dlnb += tl.sum(de, axis=0)
        dx = layer_norm_rows_backward(de * lnw[None, :], xhat, rstd, mask, d)
        # The word gradient is scattered with atomics straight from registers. The alternative,
        # writing the (G, N, L, d) per-row gradients for index_add_, costs a write and a read of the
        # largest tensor of the op, and index_add_ uses the same atomics on CUDA anyway.
        tl.atomic_add(grad_word_ptr + ids[:, None] * d + cols[None, :], dx, mask=mask, sem="relaxed")
        if HAS_TYPES:
            # Few token types: this program's sums per type, accumulated in its own partial rows.
            for t in range(num_types):
                ptrs = type_partial_ptr + (pid * num_types + t) * d + cols
                contribution = tl.sum(tl.where((tt == t)[:, None], dx, 0.0), axis=0)
                tl.store(ptrs, tl.load(ptrs, mask=col_mask, other=0.0) + contribution, mask=col_mask)
        row_grad += dx
    tl.store(row_grad_ptr + r[:, None] * d + cols[None, :], row_grad, mask=mask)
    tl.store(lnw_partial_ptr + pid * d + cols, dlnw, mask=col_mask)
    tl.store(lnb_partial_ptr + pid * d + cols, dlnb, mask=col_mask)


def _check(ids, token_type_ids, word, pos, type_, ln_weight, ln_bias, weight) -> None:
    checks.check_multiplex_embeddings(ids, token_type_ids, word, pos, type_, ln_weight, ln_bias, weight)
    checks.check_indices(ids, "ids", word.shape[0], "word")
    if token_type_ids is not None:
        checks.check_indices(token_type_ids, "token_type_ids", type_.shape[0], "type")


def _launch_args(ids, token_type_ids, word, pos, type_, ln_weight, ln_bias, weight):
    """What both kernels take besides the outputs: the tables in the accumulation dtype, the token
    types (ids stand in, never read, when there are none) and the ids/types/word strides."""
    acc = accumulator(word.dtype)[0]
    t0 = type_[0].to(acc)
    pos_type = (pos[: ids.shape[2]].to(acc) + t0).contiguous()
    type_delta = (type_.to(acc) - t0).contiguous()
    tables = (pos_type, type_delta, *(t.to(acc).contiguous() for t in (ln_weight, ln_bias, weight)))
    tt = ids if token_type_ids is None else token_type_ids
    return tables, tt, (*ids.stride(), *tt.stride(), *word.stride())


def multiplex_embeddings(ids, token_type_ids, word, pos, type_, ln_weight, ln_bias, weight, scale, eps):
    _check(ids, token_type_ids, word, pos, type_, ln_weight, ln_bias, weight)
    G, N, L = ids.shape
    d = word.shape[1]
    out = new_output((G, L, d), dtype=word.dtype, device=word.device)
    if out.numel() == 0:
        return out
    tables, tt, strides = _launch_args(ids, token_type_ids, word, pos, type_, ln_weight, ln_bias, weight)
    with on_device(word):
        grid = lambda meta: (triton.cdiv(G * L, meta["BLOCK_R"]),)  # noqa: E731
        _multiplex_embeddings_fwd_kernel[grid](
            ids, tt, word, *tables, out, G * L, N, L, d, *strides, scale, eps,
            HAS_TYPES=token_type_ids is not None, ACC=accumulator(word.dtype)[1], BLOCK_D=block_size(d),
        )
    return out


def multiplex_embeddings_backward(
    grad_out, ids, token_type_ids, word, pos, type_, ln_weight, ln_bias, weight, scale, eps
):
    _check(ids, token_type_ids, word, pos, type_, ln_weight, ln_bias, weight)
    G, N, L = ids.shape
    d = word.shape[1]
    checks.check_grad_out(grad_out, word, "word", (G, L, d), "(G, L, d)")
    rows, num_types = G * L, type_.shape[0]
    block_d = block_size(d)
    block_r = max(1, min(16, 4096 // block_d))  # fixed, not tuned: it sets the number of partials
    programs = triton.cdiv(rows, block_r)
    acc_dtype, acc = accumulator(word.dtype)
    f = dict(dtype=acc_dtype, device=word.device)
    grad_word = torch.zeros((word.shape[0], d), **f)
    row_grad = new_output((rows, d), **f)
    lnw_partial = new_output((programs, d), **f)
    lnb_partial = new_output((programs, d), **f)
    w_partial = new_output((programs, N, d), **f)
    type_partial = torch.zeros((programs if token_type_ids is not None else 1, num_types, d), **f)
    if rows > 0 and d > 0:
        tables, tt, strides = _launch_args(ids, token_type_ids, word, pos, type_, ln_weight, ln_bias, weight)
        with on_device(word):
            _multiplex_embeddings_bwd_kernel[(programs,)](
                grad_out, ids, tt, word, *tables, grad_word, row_grad, lnw_partial, lnb_partial, w_partial,
                type_partial, rows, N, L, d, num_types, *grad_out.stride(), *strides, scale, eps,
                HAS_TYPES=token_type_ids is not None, ACC=acc, BLOCK_R=block_r, BLOCK_D=block_d,
            )
    grad_pos = torch.zeros((pos.shape[0], d), **f)
    grad_pos[:L] = row_grad.view(G, L, d).sum(0)
    # row_grad reaches pos_type = pos + type[0]; type_delta[t] = type[t] - type[0] took the rest.
    grad_type = type_partial.sum(0)
    grad_type[0] += row_grad.sum(0) - grad_type.sum(0)
    grads = (grad_word, grad_pos, grad_type, lnw_partial.sum(0), lnb_partial.sum(0), w_partial.sum(0).mul_(scale))
    return tuple(grad.to(word.dtype) for grad in grads)
