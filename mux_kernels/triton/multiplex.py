"""mux::multiplex in Triton: the Hadamard mix in one pass over x, the matrix mix as one GEMM with K = N*d.

Hadamard ``out[g, l] = scale * sum_i x[g, i, l] * w[i]``: each program owns a tile of (g, l) rows and a
block of d, loops over the N instances and writes its tile once. Matrix ``out[g, l] = scale * sum_i
x[g, i, l] @ W[i]``: x read through its strides as the (G*L, N*d) operand of a single GEMM with the
(N*d, d) weight. The backward of each is fused the same way (see the kernels).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import checks
from ..outputs import new_output
from ._common import accumulator, autotune, dot_precision, on_device

# Rows per program in the Hadamard backward: fixed (not tuned) because it sets the number of
# grad_weight partials, which are allocated before the launch.
_BWD_ROWS = 32


@autotune(
    configs=[
        triton.Config({"BLOCK_R": r, "BLOCK_D": b}, num_warps=w)
        for r, b, w in ((8, 256, 4), (16, 128, 4), (16, 256, 8), (32, 128, 8))
    ],
    fixed_config=triton.Config({"BLOCK_R": 8, "BLOCK_D": 128}),
    key=["N", "d"],
)
@triton.jit
def _multiplex_fwd_kernel(
    x_ptr, w_ptr, out_ptr, rows, N, L, d,
    sxg, sxn, sxl, sxd, swn, swd, scale,
    ACC: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr,
):
    r = (tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    mask = (r < rows)[:, None] & (cols < d)[None, :]
    x_ptrs = x_ptr + ((r // L) * sxg + (r % L) * sxl)[:, None] + cols[None, :] * sxd
    w_ptrs = w_ptr + cols * swd
    acc = tl.zeros((BLOCK_R, BLOCK_D), dtype=ACC)
    for _ in range(N):
        x = tl.load(x_ptrs, mask=mask, other=0.0).to(ACC)
        w = tl.load(w_ptrs, mask=cols < d, other=0.0).to(ACC)
        acc += x * w[None, :]
        x_ptrs += sxn
        w_ptrs += swn
    out = acc * scale
    tl.store(out_ptr + r[:, None] * d + cols[None, :], out.to(out_ptr.dtype.element_ty), mask=mask)


@autotune(
    configs=[triton.Config({"BLOCK_D": b}, num_warps=w) for b, w in ((64, 4), (128, 4), (128, 8), (256, 8))],
    fixed_config=triton.Config({"BLOCK_D": 128}),
    key=["N", "d"],
)
@triton.jit
def _multiplex_bwd_kernel(
    go_ptr, x_ptr, w_ptr, gx_ptr, partial_ptr, rows, N, L, d,
    sgg, sgl, sgd, sxg, sxn, sxl, sxd, swn, swd, scale,
    ACC: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """grad_x[g, i, l] = scale * go[g, l] * w[i] (written once); this program's share of
    sum_{g, l} x[g, i, l] * go[g, l] goes to partial[program, i] (summed on the host, deterministic)."""
    pid_r = tl.program_id(0).to(tl.int64)
    r = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    col_mask = cols < d
    mask = (r < rows)[:, None] & col_mask[None, :]
    g = r // L
    l = r % L
    go = tl.load(go_ptr + (g * sgg + l * sgl)[:, None] + cols[None, :] * sgd, mask=mask, other=0.0).to(ACC)
    x_ptrs = x_ptr + (g * sxg + l * sxl)[:, None] + cols[None, :] * sxd
    gx_ptrs = gx_ptr + (g * N * L * d + l * d)[:, None] + cols[None, :]  # grad_x is contiguous
    w_ptrs = w_ptr + cols * swd
    partial_ptrs = partial_ptr + pid_r * N * d + cols
    for _ in range(N):
        w = tl.load(w_ptrs, mask=col_mask, other=0.0).to(ACC)
        tl.store(gx_ptrs, (go * (w * scale)[None, :]).to(gx_ptr.dtype.element_ty), mask=mask)
        x = tl.load(x_ptrs, mask=mask, other=0.0).to(ACC)
        tl.store(partial_ptrs, tl.sum(x * go, axis=0), mask=col_mask)
        x_ptrs += sxn
        gx_ptrs += L * d
        w_ptrs += swn
        partial_ptrs += d


@autotune(
    configs=[
        triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": 64}, num_warps=w, num_stages=s)
        for m, n, w, s in ((128, 128, 8, 3), (128, 64, 4, 4), (64, 128, 4, 4), (64, 64, 4, 3))
    ],
    fixed_config=triton.Config({"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 32}),
    key=["M", "N", "K", "J", "SPLIT_M"],
)
@triton.jit
def _multiplex_matmul_kernel(
    a_ptr, b_ptr, c_ptr, M, N, K, J, LM,
    sa_b, sa_m1, sa_m0, sa_j, sa_k,
    sb_b, sb_j, sb_k, sb_n,
    sc_b, sc_m1, sc_m0, sc_n, scale,
    SPLIT_M: tl.constexpr, ACC: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """C[b, m, n] = scale * sum_{j < J} sum_{k < K} A[b, m, j, k] * B[b, j, k, n], every operand read
    through its strides. With SPLIT_M, row m is the (m // LM, m % LM) = (g, l) row of a (G, ., L, .)
    tensor. The forward and both backward GEMMs of the matrix mix are launches of this kernel."""
    pid = tl.program_id(0)
    batch = tl.program_id(1).to(tl.int64)
    n_tiles = tl.cdiv(N, BLOCK_N)
    m = ((pid // n_tiles) * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    n = (pid % n_tiles) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    if SPLIT_M:
        a_rows = (m // LM) * sa_m1 + (m % LM) * sa_m0
        c_rows = (m // LM) * sc_m1 + (m % LM) * sc_m0
    else:
        a_rows = m * sa_m0
        c_rows = m * sc_m0
    a_ptrs = a_ptr + batch * sa_b + a_rows[:, None]
    b_ptrs = b_ptr + batch * sb_b + n[None, :] * sb_n
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    for _ in range(J):
        for k0 in range(0, K, BLOCK_K):
            k = k0 + offs_k
            a = tl.load(a_ptrs + k[None, :] * sa_k, mask=(m < M)[:, None] & (k < K)[None, :], other=0.0)
            b = tl.load(b_ptrs + k[:, None] * sb_k, mask=(k < K)[:, None] & (n < N)[None, :], other=0.0)
            acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION)
        a_ptrs += sa_j
        b_ptrs += sb_j
    c = (acc * scale).to(c_ptr.dtype.element_ty)
    tl.store(c_ptr + batch * sc_b + c_rows[:, None] + n[None, :] * sc_n, c, mask=(m < M)[:, None] & (n < N)[None, :])


def _matmul(a, b, c, *, M, N, K, J, batch, a_strides, b_strides, c_strides, scale, rows_per_group=None):
    """Launches ``_multiplex_matmul_kernel``; ``rows_per_group`` (L) turns on the (g, l) row split.
    Strides: a (batch, g, l-or-m, j, k), b (batch, j, k, n), c (batch, g, l-or-m, n)."""
    if M == 0 or N == 0 or batch == 0:
        return
    grid = lambda meta: (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]), batch)  # noqa: E731
    _multiplex_matmul_kernel[grid](
        a, b, c, M, N, K, J, rows_per_group or 1, *a_strides, *b_strides, *c_strides, scale,
        SPLIT_M=rows_per_group is not None, ACC=accumulator(a.dtype)[1], DOT_PRECISION=dot_precision(a.dtype),
    )


def multiplex(x: torch.Tensor, weight: torch.Tensor, scale: float) -> torch.Tensor:
    checks.check_multiplex(x, weight)
    G, N, L, d = x.shape
    out = new_output((G, L, d), dtype=x.dtype, device=x.device)
    with on_device(x):
        if weight.dim() == 3:
            sxg, sxn, sxl, sxd = x.stride()
            _matmul(
                x, weight, out, M=G * L, N=d, K=d, J=N, batch=1, rows_per_group=L, scale=scale,
                a_strides=(0, sxg, sxl, sxn, sxd), b_strides=(0, *weight.stride()), c_strides=(0, L * d, d, 1),
            )
        elif out.numel() > 0:
            grid = lambda meta: (triton.cdiv(G * L, meta["BLOCK_R"]), triton.cdiv(d, meta["BLOCK_D"]))  # noqa: E731
            _multiplex_fwd_kernel[grid](
                x, weight, out, G * L, N, L, d, *x.stride(), *weight.stride(), scale, ACC=accumulator(x.dtype)[1]
            )
    return out


def multiplex_backward(grad_out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, scale: float):
    checks.check_multiplex(x, weight)
    G, N, L, d = x.shape
    checks.check_grad_out(grad_out, x, "x", (G, L, d), "(G, L, d)")
    grad_x = new_output((G, N, L, d), dtype=x.dtype, device=x.device)
    sgg, sgl, sgd = grad_out.stride()
    sxg, sxn, sxl, sxd = x.stride()
    with on_device(x):
        if weight.dim() == 3:
            sw0, sw1, sw2 = weight.stride()
            grad_w = new_output((N, d, d), dtype=weight.dtype, device=x.device)
            # grad_x[g, i, l] = scale * go[g, l] @ W[i]^T: one GEMM per instance, written in place.
            _matmul(
                grad_out, weight, grad_x, M=G * L, N=d, K=d, J=1, batch=N, rows_per_group=L, scale=scale,
                a_strides=(0, sgg, sgl, 0, sgd), b_strides=(sw0, 0, sw2, sw1), c_strides=(L * d, N * L * d, d, 1),
            )
            # grad_W[i] = scale * sum_g x[g, i]^T @ go[g]: K runs over L inside a loop over the G groups.
            _matmul(
                x, grad_out, grad_w, M=d, N=d, K=L, J=G, batch=N, scale=scale,
                a_strides=(sxn, 0, sxd, sxg, sxl), b_strides=(0, sgg, sgl, sgd), c_strides=(d * d, 0, d, 1),
            )
            return grad_x, grad_w
        tiles = triton.cdiv(G * L, _BWD_ROWS)
        acc_dtype, acc = accumulator(x.dtype)
        partial = new_output((tiles, N, d), dtype=acc_dtype, device=x.device)
        if grad_x.numel() > 0:
            grid = lambda meta: (tiles, triton.cdiv(d, meta["BLOCK_D"]))  # noqa: E731
            _multiplex_bwd_kernel[grid](
                grad_out, x, weight, grad_x, partial, G * L, N, L, d,
                sgg, sgl, sgd, sxg, sxn, sxl, sxd, *weight.stride(), scale, ACC=acc, BLOCK_R=_BWD_ROWS,
            )
    grad_w = partial.sum(0).mul_(scale).to(weight.dtype)
    return grad_x, grad_w
