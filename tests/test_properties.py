"""Property-based tests (hypothesis) of every ``torch.ops.mux`` op against the reference.

Each example draws a tiny problem: shapes (odd sizes, empty dims, N = 1), dtypes, scale/eps, optional
arguments, and for every tensor argument a random layout (dimension order, steps between elements,
padding, a storage offset, stride-0 expanded dims), built with ``as_strided`` on a NaN-filled buffer
(out-of-range ids for index tensors) so a kernel that reads outside the view fails. Forward output
and every input gradient are compared with the reference, and the fake (meta) kernel's output shape
with the real one.

Oracle: the reference evaluated in float64 ("truth"). An element passes when its error is within the
per-dtype tolerance, or within 8x the largest error of the reference evaluated in the kernel's own dtype,
on the inputs as drawn and on two copies moved by about one rounding error of that dtype (an
ill-conditioned LayerNorm row amplifies the rounding of its input by max|x| / std; one evaluation can
land close to the truth by luck, three rarely all do; that noise is no kernel bug).

Example counts come from a hypothesis profile: ``HYPOTHESIS_PROFILE=ci`` runs 1000 examples per
op, the default 200; with ``MUX_KERNELS_BACKEND=triton`` (Triton interpreter) the ``triton``
profile runs far fewer, in fp32/fp16 only (``HYPOTHESIS_PROFILE=ci`` gives ``triton-ci`` there).
"""

from __future__ import annotations

import contextlib
import os

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import mux_kernels  # registers torch.ops.mux (tests/conftest.py switches on TRITON_INTERPRET first)
from mux_kernels import reference

M = torch.ops.mux
TRITON = mux_kernels.active_backends()["cpu"] == "triton"
DTYPES = [torch.float32, torch.float16] if TRITON else [torch.float32, torch.float16, torch.bfloat16]

_COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
               print_blob=True)
settings.register_profile("mux-dev", max_examples=200, **_COMMON)
settings.register_profile("mux-ci", max_examples=1000, **_COMMON)
settings.register_profile("mux-triton", max_examples=15, **_COMMON)
settings.register_profile("mux-triton-ci", max_examples=60, **_COMMON)
_REQUESTED = os.environ.get("HYPOTHESIS_PROFILE", "dev")
PROFILE = ("triton-ci" if _REQUESTED == "ci" else "triton") if TRITON else ("ci" if _REQUESTED == "ci" else "dev")
SETTINGS = settings.get_profile(f"mux-{PROFILE}")  # applied per test: the global profile is untouched

# (rtol, atol); atol scales with the largest magnitude of the expected tensor.
TOL = {torch.float32: (1e-5, 1e-5), torch.float16: (1e-2, 1e-2), torch.bfloat16: (5e-2, 5e-2)}


# ----------------------------------------------------------------------------------------------
# Random layouts
# ----------------------------------------------------------------------------------------------


@st.composite
def layouts(draw, ndim, no_expand=()):
    """A layout for an ndim tensor: (outer-to-inner dim order, step per dim, pad per dim, offset, expanded dims).

    ``no_expand``: dims never expanded, where a stride-0 view would make every LayerNorm input row constant
    (an ill-conditioned problem, eps = 1e-12, whose float32 gradients are ~1e6 and cancel to noise)."""
    kind = draw(st.sampled_from(["contiguous", "random", "random", "random"]))
    if kind == "contiguous" or ndim == 0:
        return None
    order = draw(st.permutations(range(ndim)))
    steps = draw(st.lists(st.integers(1, 3), min_size=ndim, max_size=ndim))
    pads = draw(st.lists(st.integers(0, 2), min_size=ndim, max_size=ndim))
    offset = draw(st.integers(0, 5))
    expanded = draw(st.lists(st.booleans(), min_size=ndim, max_size=ndim)) if draw(st.integers(0, 4)) == 0 else [False] * ndim
    expanded = [x and k not in no_expand for k, x in enumerate(expanded)]
    return order, steps, pads, offset, expanded


def apply_layout(t, layout):
    """(leaf, view_fn): view_fn(leaf) has t's shape and the drawn layout. Values equal t's, except along
    expanded dims (stride 0), where every entry repeats index 0. Unused storage is poisoned."""
    if layout is None or t.numel() == 0:
        return t, None
    order, steps, pads, offset, expanded = layout
    shape = tuple(t.shape)
    strides = [0] * t.dim()
    acc = 1
    for dim in reversed(order):  # innermost last in `order`
        if expanded[dim] and shape[dim] > 1:
            continue  # stride 0
        strides[dim] = acc * steps[dim]
        acc = strides[dim] * shape[dim] + pads[dim]
    size = offset + sum((s - 1) * st_ for s, st_ in zip(shape, strides)) + 1
    poison = float("nan") if t.is_floating_point() else torch.iinfo(t.dtype).max  # an out-of-range id
    leaf = torch.full((size,), poison, dtype=t.dtype)
    # Write through a view without the stride-0 dims (their value is index 0 of t).
    write_shape = tuple(1 if strides[k] == 0 else s for k, s in enumerate(shape))
    src = t[tuple(slice(0, 1) if strides[k] == 0 else slice(None) for k in range(t.dim()))]
    leaf.as_strided(write_shape, strides, offset).copy_(src)
    strides = tuple(strides)
    return leaf, lambda b: b.as_strided(shape, strides, offset)


# ----------------------------------------------------------------------------------------------
# Comparison
# ----------------------------------------------------------------------------------------------


def _check(actual, truth, lows, what):
    """actual within tolerance of truth, or no more than 8x as far from it as the farthest same-dtype
    reference evaluation (``lows``) is anywhere in the tensor: the kernel rounds in its own order (e.g. the
    factorised GEMMs), which three input perturbations sample only roughly."""
    assert actual.shape == truth.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(truth.shape)}"
    assert actual.dtype == lows[0].dtype, f"{what}: dtype {actual.dtype} != {lows[0].dtype}"
    if actual.numel() == 0:
        return
    rtol, atol = TOL[actual.dtype]
    a, t = actual.detach().double(), truth.detach().double()
    assert torch.equal(a.isnan(), t.isnan()), f"{what}: NaN where the reference has none (or the reverse)"
    a, t = a.nan_to_num(), t.nan_to_num()
    noise = max((low.detach().double().nan_to_num() - t).abs().max().item() for low in lows)
    scale = max(1.0, t.abs().max().item())
    err = (a - t).abs()
    allowed = atol * scale + rtol * t.abs() + 8 * noise
    bad = err > allowed
    assert not bad.any(), (
        f"{what}: {int(bad.sum())}/{a.numel()} elements off; worst |actual - truth| = {err.max().item():.3g}, "
        f"allowed there {allowed.flatten()[err.flatten().argmax()].item():.3g}"
    )


def compare(op, reference_fn, args, layout_of, derived=None, seed=0):
    """Runs op(args) with every tensor viewed through its drawn layout, and the reference on the same views
    in the kernel's dtype and in float64; compares the output and the gradient of every float leaf.
    ``derived(args)`` may add arguments computed from others (e.g. keys = h[:, :N])."""
    def build(cast=None, perturb=None):
        leaves, out = {}, {}
        for k, v in args.items():
            if isinstance(v, torch.Tensor):
                leaf, view = apply_layout(v, layout_of.get(k))
                leaf = leaf.detach().clone()
                if leaf.is_floating_point():
                    if cast is not None:
                        leaf = leaf.to(cast)
                    if perturb is not None:  # about one rounding error of the dtype, as the dtype
                        noise = torch.randn(leaf.shape, generator=perturb, dtype=torch.float64)
                        leaf = (leaf.double() * (1 + torch.finfo(leaf.dtype).eps * noise)).to(leaf.dtype)
                    leaf.requires_grad_()
                    leaves[k] = leaf
                out[k] = view(leaf) if view else leaf
            else:
                out[k] = v
        if derived:
            out.update(derived(out))
        return leaves, out

    leaves_k, a_k = build()
    leaves_t, a_t = build(torch.float64)
    # The reference in the kernel's dtype, as drawn and on two perturbed copies: its rounding noise.
    lows = [build()] + [build(perturb=torch.Generator().manual_seed(seed + k)) for k in (1, 2)]
    out = getattr(M, op)(**a_k)
    truth = reference_fn(*a_t.values())
    low_outs = [reference_fn(*a.values()) for _, a in lows]
    _check(out, truth, low_outs, f"{op} forward")
    fake = getattr(M, op)(**{k: (v.detach().to("meta") if isinstance(v, torch.Tensor) else v) for k, v in a_k.items()})
    assert fake.shape == out.shape and fake.dtype == out.dtype, "fake kernel disagrees on the output"
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed)).to(out.dtype)
    out.backward(grad_out)
    truth.backward(grad_out.double())
    for low in low_outs:
        low.backward(grad_out)

    def grad(leaves, k):
        return leaves[k].grad if leaves[k].grad is not None else torch.zeros_like(leaves[k])

    for k in leaves_k:
        _check(grad(leaves_k, k), grad(leaves_t, k), [grad(leaves, k) for leaves, _ in lows], f"{op} grad {k}")


# ----------------------------------------------------------------------------------------------
# The properties
# ----------------------------------------------------------------------------------------------

seeds = st.integers(0, 2**32 - 1)
# Intra-op threads per example: mostly 1 (the examples are tiny, and on a busy 2-core machine every
# parallel region costs more than the work), sometimes 2 so the chunked reductions of the backward
# kernels split rows unevenly too.
threads = st.sampled_from([1, 1, 1, 2])


@contextlib.contextmanager
def num_threads(n):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _randn(shape, dtype, gen, scale=1.0):
    return (torch.randn(shape, generator=gen) * scale).to(dtype)


@SETTINGS
@given(data=st.data(), dtype=st.sampled_from(DTYPES), matrix=st.booleans(), G=st.integers(0, 3),
       N=st.integers(1, 5), L=st.integers(0, 5), d=st.integers(1, 9),
       scale=st.sampled_from([None, 0.5, 1.0, -1.75]), seed=seeds, n_threads=threads)
def test_multiplex_matches_reference(data, dtype, matrix, G, N, L, d, scale, seed, n_threads):
    gen = torch.Generator().manual_seed(seed)
    x = _randn((G, N, L, d), dtype, gen)
    weight = _randn((N, d, d) if matrix else (N, d), dtype, gen, scale=d**-0.5 if matrix else 1.0)
    scale = mux_kernels.ops.default_scale(N, matrix) if scale is None else scale
    args = {"x": x, "weight": weight, "scale": scale}
    layout_of = {k: data.draw(layouts(v.dim()), label=f"layout {k}") for k, v in args.items() if isinstance(v, torch.Tensor)}
    with num_threads(n_threads):
        compare("multiplex", reference.multiplex, args, layout_of, seed=seed)


@SETTINGS
@given(data=st.data(), dtype=st.sampled_from(DTYPES), G=st.integers(0, 3), N=st.integers(1, 4),
       L=st.integers(0, 5), extra_pos=st.integers(0, 2), V=st.integers(1, 8), T=st.integers(1, 3),
       d=st.integers(1, 9), token_types=st.booleans(), ids_dtype=st.sampled_from([torch.int64, torch.int32]),
       scale=st.sampled_from([None, 0.5, -1.25]), eps=st.sampled_from([1e-12, 1e-5]), seed=seeds,
       n_threads=threads)
def test_multiplex_embeddings_matches_reference(data, dtype, G, N, L, extra_pos, V, T, d, token_types, ids_dtype,
                                                scale, eps, seed, n_threads):
    gen = torch.Generator().manual_seed(seed)
    args = {
        "ids": torch.randint(0, V, (G, N, L), generator=gen).to(ids_dtype),
        "token_type_ids": torch.randint(0, T, (G, N, L), generator=gen).to(ids_dtype) if token_types else None,
        "word": _randn((V, d), dtype, gen),
        "pos": _randn((L + extra_pos, d), dtype, gen),
        "type": _randn((T, d), dtype, gen),
        "ln_weight": (1 + 0.2 * torch.randn(d, generator=gen)).to(dtype),
        "ln_bias": _randn((d,), dtype, gen, scale=0.2),
        "weight": _randn((N, d), dtype, gen),
        "scale": 1.0 / N if scale is None else scale,
        "eps": eps,
    }
    no_expand = {"word": (1,), "pos": (1,), "type": (1,)}  # constant LayerNorm rows: ill-conditioned
    layout_of = {k: data.draw(layouts(v.dim(), no_expand.get(k, ())), label=f"layout {k}")
                 for k, v in args.items() if isinstance(v, torch.Tensor)}
    with num_threads(n_threads):
        compare("multiplex_embeddings", reference.multiplex_embeddings, args, layout_of, seed=seed)


@SETTINGS
@given(data=st.data(), dtype=st.sampled_from(DTYPES), G=st.integers(0, 3), N=st.integers(0, 4),
       L=st.integers(0, 5), d=st.integers(1, 8), e=st.integers(1, 8),
       keys_kind=st.sampled_from(["shared", "per_group", "prefix"]), bias=st.booleans(),
       ln=st.sampled_from(["none", "weight", "weight_bias"]), eps=st.sampled_from([1e-12, 1e-5]), seed=seeds,
       n_threads=threads)
def test_demultiplex_matches_reference(data, dtype, G, N, L, d, e, keys_kind, bias, ln, eps, seed, n_threads):
    if keys_kind == "prefix":
        assume(N <= L)  # keys = h[:, :N], the index-prefix demux
    # A LayerNorm over e = 2 features outputs +-1 whatever its input: its input gradient is exactly 0
    # and any computed value is rounding noise times rstd (up to 1/sqrt(eps)), in kernel and reference.
    assume(ln == "none" or e >= 3)
    gen = torch.Generator().manual_seed(seed)
    args = {
        "h": _randn((G, L, d), dtype, gen),
        "keys": None if keys_kind == "prefix" else _randn((N, d) if keys_kind == "shared" else (G, N, d), dtype, gen),
        "weight": _randn((e, 2 * d), dtype, gen, scale=(2 * d) ** -0.5 * 2),
        "bias": _randn((e,), dtype, gen, scale=0.5) if bias else None,
        "ln_weight": (1 + 0.2 * torch.randn(e, generator=gen)).to(dtype) if ln != "none" else None,
        "ln_bias": _randn((e,), dtype, gen, scale=0.2) if ln == "weight_bias" else None,
        "eps": eps,
    }
    derived = (lambda a: {"keys": a["h"][:, :N]}) if keys_kind == "prefix" else None
    # With the LayerNorm, a stride-0 weight makes the pre-LayerNorm rows constant (along e) or rank-1
    # functions of one scalar (along 2d): ill-conditioned, gradients ~1/that scalar. Expanded without it.
    no_expand = {"weight": (0, 1)} if ln != "none" else {}
    layout_of = {k: data.draw(layouts(v.dim(), no_expand.get(k, ())), label=f"layout {k}")
                 for k, v in args.items() if isinstance(v, torch.Tensor)}
    with num_threads(n_threads):
        compare("demultiplex", reference.demultiplex, args, layout_of, derived=derived, seed=seed)


def test_profile_is_selected_from_the_environment():
    expected = {"dev": 200, "ci": 1000, "triton": 15, "triton-ci": 60}[PROFILE]
    assert SETTINGS.max_examples == expected
    if not TRITON and os.environ.get("HYPOTHESIS_PROFILE") == "ci":
        assert SETTINGS.max_examples >= 1000


@pytest.mark.parametrize("ndim", [1, 2, 3, 4])
def test_layout_helper_keeps_values(ndim):
    """apply_layout's views hold the tensor's values (index 0 along expanded dims)."""
    t = torch.randn(*([3] * ndim))
    layout = (list(reversed(range(ndim))), [2] * ndim, [1] * ndim, 3, [False] * ndim)
    leaf, f = apply_layout(t, layout)
    v = f(leaf)
    assert torch.equal(v, t) and not v.is_contiguous() and v.storage_offset() == 3
    layout = (list(range(ndim)), [1] * ndim, [0] * ndim, 0, [True] + [False] * (ndim - 1))
    leaf, f = apply_layout(t, layout)
    v = f(leaf)
    assert v.stride(0) == 0 and torch.equal(v, t[:1].expand_as(t))
