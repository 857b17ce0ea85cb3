"""mux::demultiplex in Triton, factorised so the (G, N, L, 2d) concatenation never exists (SPEC §7.2):

    P = h @ W_h^T          a tiled Triton GEMM over the G*L rows (W_h = weight[:, d:]),
    K = keys @ W_k^T + b   once per key, with torch.addmm (N or G*N rows: negligible work),
    out[g, i, l] = LN(GELU(P[g, l] + K[g, i]))   in the GEMM's epilogue, for every instance.

The epilogue normalises over e, so a tile spans all of it (BLOCK_E = next_pow2(e); meant for
e <= 1024). The backward recomputes P the same way, goes back through LN and GELU, and sums the
pre-activation gradient over instances (dP) and over positions (dK) in the same pass; GEMMs with
W finish the job.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import checks
from ..outputs import new_output
from ._common import (
    accumulator,
    autotune,
    block_size,
    dot_precision,
    gelu,
    gelu_grad,
    layer_norm_rows,
    layer_norm_rows_backward,
    on_device,
)


@triton.jit
def _hidden_projection(
    h_ptr, w_ptr, h_rows, row_mask, cols, col_mask, d, s_hd, s_we, s_wk,
    ACC: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """The tile's rows of P = h @ weight[:, d:]^T, accumulated in ACC; ``h_rows`` are the rows'
    offsets in h."""
    acc = tl.zeros((BLOCK_M, BLOCK_E), dtype=ACC)
    offs_k = tl.arange(0, BLOCK_K)
    for k0 in range(0, d, BLOCK_K):
        k = k0 + offs_k
        a = tl.load(h_ptr + h_rows[:, None] + k[None, :] * s_hd, mask=row_mask[:, None] & (k < d)[None, :], other=0.0)
        b = tl.load(
            w_ptr + (d + k)[:, None] * s_wk + cols[None, :] * s_we, mask=(k < d)[:, None] & col_mask[None, :], other=0.0
        )
        acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION)
    return acc


@triton.jit
def _key_rows(k_ptr, i, g, N, e, cols, mask, col_mask, PER_GROUP_KEYS: tl.constexpr):
    """K of instance i for the tile's rows: each row's group's key, or the one shared key row."""
    if PER_GROUP_KEYS:
        k = tl.load(k_ptr + (g * N + i)[:, None] * e + cols[None, :], mask=mask, other=0.0)
    else:
        k = tl.load(k_ptr + i * e + cols, mask=col_mask, other=0.0)[None, :]
    return k


def _fitting_configs(configs, named_args, **kwargs):
    """Drops the configs whose (BLOCK_M, BLOCK_E) accumulator tiles need over 64 registers a thread:
    with several such tiles live they spill heavily (e = 768 wants 8 or 16 warps at BLOCK_M = 16)."""

    def per_thread(c):
        return c.kwargs.get("BLOCK_M", kwargs.get("BLOCK_M")) * kwargs["BLOCK_E"] // (32 * c.num_warps)

    return [c for c in configs if per_thread(c) <= 64] or [min(configs, key=per_thread)]


@autotune(
    configs=[
        triton.Config({"BLOCK_M": m, "BLOCK_K": k}, num_warps=w, num_stages=s)
        for m, k, w, s in ((64, 32, 4, 3), (16, 32, 4, 3), (16, 64, 8, 2), (16, 16, 8, 2), (16, 32, 16, 2))
    ],
    # BLOCK_K = 16 and 2 stages keep the (BLOCK_K, BLOCK_E) weight tiles within shared memory up to
    # e = 1024 in fp32 and fp64 as well.
    fixed_config=triton.Config({"BLOCK_M": 16, "BLOCK_K": 16}, num_warps=8, num_stages=2),
    key=["N", "d", "e"],
    prune_configs_by={"early_config_prune": _fitting_configs},
)
@triton.jit
def _demultiplex_fwd_kernel(
    h_ptr, w_ptr, k_ptr, lnw_ptr, lnb_ptr, out_ptr, rows, N, L, d, e,
    s_hg, s_hl, s_hd, s_we, s_wk, eps,
    PER_GROUP_KEYS: tl.constexpr, HAS_LN: tl.constexpr, ACC: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_K: tl.constexpr,
):
    r = (tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    g = r // L
    l = r % L
    cols = tl.arange(0, BLOCK_E)
    col_mask = cols < e
    row_mask = r < rows
    mask = row_mask[:, None] & col_mask[None, :]
    p = _hidden_projection(
        h_ptr, w_ptr, g * s_hg + l * s_hl, row_mask, cols, col_mask, d, s_hd, s_we, s_wk,
        ACC, DOT_PRECISION, BLOCK_M, BLOCK_E, BLOCK_K,
    )
    if HAS_LN:
        lnw = tl.load(lnw_ptr + cols, mask=col_mask, other=0.0).to(ACC)
        lnb = tl.load(lnb_ptr + cols, mask=col_mask, other=0.0).to(ACC)
    out_rows = g * N * L * e + l * e  # out is (G, N, L, e), contiguous
    for i in range(N):
        a = gelu(p + _key_rows(k_ptr, i, g, N, e, cols, mask, col_mask, PER_GROUP_KEYS))
        if HAS_LN:
            xhat, _ = layer_norm_rows(a, mask, e, eps)
            a = xhat * lnw[None, :] + lnb[None, :]
        tl.store(out_ptr + (out_rows + i * L * e)[:, None] + cols[None, :], a.to(out_ptr.dtype.element_ty), mask=mask)


@autotune(
    configs=[
        triton.Config({"BLOCK_K": k}, num_warps=w, num_stages=s)
        for k, w, s in ((32, 4, 3), (64, 8, 2), (16, 8, 2), (32, 16, 2))
    ],
    fixed_config=triton.Config({"BLOCK_K": 16}, num_warps=8, num_stages=2),
    key=["N", "d", "e"],
    prune_configs_by={"early_config_prune": _fitting_configs},
)
@triton.jit
def _demultiplex_bwd_kernel(
    go_ptr, h_ptr, w_ptr, k_ptr, lnw_ptr, dp_ptr, dk_partial_ptr, lnw_partial_ptr, lnb_partial_ptr,
    N, L, d, e, seg_rows, tiles_per_seg,
    s_gg, s_gn, s_gl, s_ge, s_hg, s_hl, s_hd, s_we, s_wk, eps,
    PER_GROUP_KEYS: tl.constexpr, HAS_LN: tl.constexpr, ACC: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """Rows are cut into segments of ``seg_rows`` (one group with per-group keys, else all G*L rows)
    and each program owns one tile of a segment, so all its rows share their key rows: its sum of dz
    over rows per instance is one partial of dK (summed on the host, deterministic)."""
    pid = tl.program_id(0).to(tl.int64)
    local = (pid % tiles_per_seg) * BLOCK_M + tl.arange(0, BLOCK_M)
    r = (pid // tiles_per_seg) * seg_rows + local
    g = r // L
    l = r % L
    cols = tl.arange(0, BLOCK_E)
    col_mask = cols < e
    row_mask = local < seg_rows
    mask = row_mask[:, None] & col_mask[None, :]
    p = _hidden_projection(
        h_ptr, w_ptr, g * s_hg + l * s_hl, row_mask, cols, col_mask, d, s_hd, s_we, s_wk,
        ACC, DOT_PRECISION, BLOCK_M, BLOCK_E, BLOCK_K,
    )
    if HAS_LN:
        lnw = tl.load(lnw_ptr + cols, mask=col_mask, other=0.0).to(ACC)
        dlnw = tl.zeros((BLOCK_E,), dtype=ACC)
        dlnb = tl.zeros((BLOCK_E,), dtype=ACC)
    dp = tl.zeros((BLOCK_M, BLOCK_E), dtype=ACC)
    go_ptrs = go_ptr + (g * s_gg + l * s_gl)[:, None] + cols[None, :] * s_ge
    dk_ptrs = dk_partial_ptr + pid * N * e + cols
    for i in range(N):
        z = p + _key_rows(k_ptr, i, g, N, e, cols, mask, col_mask, PER_GROUP_KEYS)
        da = tl.load(go_ptrs, mask=mask, other=0.0).to(ACC)
        if HAS_LN:
            xhat, rstd = layer_norm_rows(gelu(z), mask, e, eps)
            dlnw += tl.sum(da * xhat, axis=0)
            dlnb += tl.sum(da, axis=0)
            da = layer_norm_rows_backward(da * lnw[None, :], xhat, rstd, mask, e)
        dz = da * gelu_grad(z)
        dp += dz
        tl.store(dk_ptrs, tl.sum(dz, axis=0), mask=col_mask)
        go_ptrs += s_gn
        dk_ptrs += e
    tl.store(dp_ptr + r[:, None] * e + cols[None, :], dp.to(dp_ptr.dtype.element_ty), mask=mask)
    if HAS_LN:
        tl.store(lnw_partial_ptr + pid * e + cols, dlnw, mask=col_mask)
        tl.store(lnb_partial_ptr + pid * e + cols, dlnb, mask=col_mask)


def _key_projection(keys, weight, bias):
    """The key rows (N or G*N, d), W_k and K = keys @ W_k^T + b, all in the accumulation dtype
    (torch.addmm: tiny next to the rest)."""
    acc = accumulator(keys.dtype)[0]
    d = keys.shape[-1]
    k2 = keys.reshape(keys.shape[:-1].numel(), d).to(acc)  # explicit rows: d may be 0
    wk = weight[:, :d].to(acc)
    K = torch.mm(k2, wk.t()) if bias is None else torch.addmm(bias.to(acc), k2, wk.t())
    return k2, wk, K


def _layer_norm_vectors(h, ln_weight, ln_bias):
    """The LayerNorm weight and bias, contiguous (a zero bias if absent); h stands in, never read,
    when there is no LayerNorm."""
    if ln_weight is None:
        return h, h
    return ln_weight.contiguous(), torch.zeros_like(ln_weight) if ln_bias is None else ln_bias.contiguous()


def demultiplex(h, keys, weight, bias, ln_weight, ln_bias, eps):
    checks.check_demultiplex(h, keys, weight, bias, ln_weight, ln_bias)
    G, L, d = h.shape
    N, e = keys.shape[-2], weight.shape[0]
    out = new_output((G, N, L, e), dtype=h.dtype, device=h.device)
    if out.numel() == 0:
        return out
    _, _, K = _key_projection(keys, weight, bias)
    with on_device(h):
        grid = lambda meta: (triton.cdiv(G * L, meta["BLOCK_M"]),)  # noqa: E731
        _demultiplex_fwd_kernel[grid](
            h, weight, K, *_layer_norm_vectors(h, ln_weight, ln_bias), out,
            G * L, N, L, d, e, *h.stride(), *weight.stride(), eps,
            PER_GROUP_KEYS=keys.dim() == 3, HAS_LN=ln_weight is not None, ACC=accumulator(h.dtype)[1],
            DOT_PRECISION=dot_precision(h.dtype), BLOCK_E=block_size(e),
        )
    return out


def demultiplex_backward(grad_out, h, keys, weight, bias, ln_weight, ln_bias, eps):
    checks.check_demultiplex(h, keys, weight, bias, ln_weight, ln_bias)
    G, L, d = h.shape
    N, e = keys.shape[-2], weight.shape[0]
    checks.check_grad_out(grad_out, h, "h", (G, N, L, e), "(G, N, L, e)")
    per_group = keys.dim() == 3
    block_e = block_size(e)
    block_m = max(16, min(64, 8192 // block_e))  # fixed, not tuned: it sets the number of partials
    seg_rows, segments = (L, G) if per_group else (G * L, 1)
    tiles_per_seg = triton.cdiv(seg_rows, block_m)
    programs = segments * tiles_per_seg
    acc_dtype, acc = accumulator(h.dtype)
    # dP is kept in the input dtype, as autograd keeps a Linear's output gradient: the GEMMs below
    # then run on tensor cores (fp32 accumulation) and dP's traffic is halved for fp16/bf16.
    dp = new_output((G * L, e), dtype=h.dtype, device=h.device)
    dk_partial = new_output((programs, N, e), dtype=acc_dtype, device=h.device)
    ln_partials = new_output((2, programs if ln_weight is not None else 0, e), dtype=acc_dtype, device=h.device)
    k2, wk, K = _key_projection(keys, weight, bias)
    if programs > 0 and e > 0:
        with on_device(h):
            _demultiplex_bwd_kernel[(programs,)](
                grad_out, h, weight, K, _layer_norm_vectors(h, ln_weight, ln_bias)[0],
                dp, dk_partial, ln_partials[0], ln_partials[1],
                N, L, d, e, seg_rows, tiles_per_seg, *grad_out.stride(), *h.stride(), *weight.stride(), eps,
                PER_GROUP_KEYS=per_group, HAS_LN=ln_weight is not None, ACC=acc,
                DOT_PRECISION=dot_precision(h.dtype), BLOCK_M=block_m, BLOCK_E=block_e,
            )
    dk = dk_partial.view(segments, tiles_per_seg, N, e).sum(1).reshape(segments * N, e)  # (key rows, e), as K
    grad_h = torch.mm(dp, weight[:, d:]).view(G, L, d)
    grad_weight = torch.cat([torch.mm(dk.t(), k2).to(h.dtype), torch.mm(dp.t(), h.reshape(G * L, d))], dim=1)
    grad_keys = torch.mm(dk, wk).view(keys.shape).to(h.dtype)
    vectors = (dk.sum(0), *ln_partials.sum(1))  # bias, ln_weight, ln_bias (zeros without a LayerNorm)
    return (grad_h, grad_keys, grad_weight, *(v.to(h.dtype) for v in vectors))
