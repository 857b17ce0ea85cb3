"""torch.ops.mux.* against the plain-torch reference: forward, backward, opcheck, compile, bad input.

Runs against the active backend: the C++ kernels by default, the Triton kernels with
MUX_KERNELS_BACKEND=triton (through the interpreter on a machine without a GPU, where shapes are
kept small and bf16 is skipped: the interpreter computes bf16 tl.dot wrongly).
"""

from __future__ import annotations

import os

import pytest
import torch

import mux_kernels
from mux_kernels import reference

TRITON_ON_CPU = mux_kernels.active_backends()["cpu"] == "triton"
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
DTYPES = [torch.float32, torch.float16, torch.bfloat16]

# (G, N, L, d): every value of G in {1, 3}, N in {1, 2, 3, 5, 10}, L in {1, 5, 128} and
# d in {1, 7, 96, 768} appears, in odd combinations.
SHAPES = [
    (1, 1, 1, 1),
    (3, 2, 5, 7),
    (1, 3, 128, 96),
    (3, 5, 1, 768),
    (1, 10, 5, 96),
    (3, 10, 128, 7),
    (1, 2, 128, 768),
    (3, 5, 5, 1),
    (3, 3, 1, 96),
]
# The interpreter runs kernels in Python: small shapes only.
INTERPRETER_SHAPES = [(1, 1, 1, 1), (3, 2, 5, 7), (1, 3, 5, 96), (3, 5, 1, 33), (2, 10, 3, 16)]

# (atol, rtol) relative to the largest reference magnitude.
TOLERANCES = {
    torch.float64: (1e-10, 1e-10),
    torch.float32: (2e-5, 2e-5),
    torch.float16: (2e-3, 2e-3),
    torch.bfloat16: (1.6e-2, 1.6e-2),
}


def shapes_for(device: str):
    return INTERPRETER_SHAPES if device == "cpu" and TRITON_ON_CPU else SHAPES


def case_id(shape):
    return "G{}-N{}-L{}-d{}".format(*shape)


def skip_unsupported(device: str, dtype: torch.dtype):
    if device == "cpu" and TRITON_ON_CPU and dtype == torch.bfloat16:
        pytest.skip("the Triton interpreter computes bf16 tl.dot wrongly; bf16 Triton runs on CUDA only")


def grid(device_dtypes=DTYPES):
    """(device, dtype, shape) cases, each shape from the grid of its device's backend."""
    return [
        pytest.param(dev, dt, shape, id=f"{dev}-{str(dt)[6:]}-{case_id(shape)}")
        for dev in DEVICES
        for dt in device_dtypes
        for shape in shapes_for(dev)
    ]


def assert_close(actual: torch.Tensor, expected: torch.Tensor, name: str = "output"):
    assert actual.dtype == expected.dtype, f"{name}: dtype {actual.dtype} != {expected.dtype}"
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    atol, rtol = TOLERANCES[expected.dtype]
    scale = max(1.0, expected.double().abs().max().item()) if expected.numel() else 1.0
    torch.testing.assert_close(actual, expected, atol=atol * scale, rtol=rtol, msg=lambda m: f"{name}: {m}")


def strided(t: torch.Tensor) -> torch.Tensor:
    """The same values as a non-contiguous view (every other element of a wider buffer)."""
    filler = float("nan") if t.is_floating_point() else -1
    return torch.stack([t, torch.full_like(t, filler)], dim=-1)[..., 0]


def check_grads(op_fn, ref_fn, inputs, grad_indices):
    """Run op and reference forward + backward with one upstream gradient; compare every grad."""

    def leaves():
        return [t.detach().clone().requires_grad_(k in grad_indices) if torch.is_tensor(t) else t
                for k, t in enumerate(inputs)]

    op_in, ref_in = leaves(), leaves()
    out, expected = op_fn(*op_in), ref_fn(*ref_in)
    assert_close(out, expected)
    grad_out = torch.randn_like(expected)
    out.backward(grad_out)
    expected.backward(grad_out)
    for k, (a, b) in enumerate(zip(op_in, ref_in)):
        if torch.is_tensor(a) and a.requires_grad:
            assert a.grad is not None, f"input {k} got no gradient"
            assert_close(a.grad, b.grad, name=f"grad of input {k}")


# ----------------------------------------------------------------------------------------------
# Input builders
# ----------------------------------------------------------------------------------------------


def layer_norm_eps(width: int) -> float:
    """BERT's eps, except over one element, where LayerNorm's output is 0 and the reference's
    rounding noise times rstd = 1/sqrt(eps) would swamp its (zero) gradient."""
    return 1e-12 if width > 1 else 1e-3


def multiplex_inputs(shape, dtype, device, matrix=False):
    G, N, L, d = shape
    x = torch.randn(G, N, L, d, device=device).to(dtype)
    w = torch.randn(N, d, d, device=device) / d**0.5 if matrix else torch.randn(N, d, device=device)
    scale = 1 / N**0.5 if matrix else 1 / N
    return x, w.to(dtype), scale


def embedding_inputs(shape, dtype, device, token_types=True, vocab=50, max_pos=130):
    G, N, L, d = shape
    ids = torch.randint(0, vocab, (G, N, L), device=device)
    tt = torch.randint(0, 2, (G, N, L), device=device) if token_types else None
    tables = [torch.randn(vocab, d), torch.randn(max_pos, d), torch.randn(2, d)]
    ln = [1 + 0.1 * torch.randn(d), 0.1 * torch.randn(d)]
    weight = torch.randn(N, d) / d**0.5
    floats = [t.to(device=device, dtype=dtype) for t in (*tables, *ln, weight)]
    return (ids, tt, *floats, 1 / N, layer_norm_eps(d))


def demultiplex_inputs(shape, dtype, device, per_group_keys=False, bias=True, layer_norm=True, e=None):
    G, N, L, d = shape
    e = e or d
    h = torch.randn(G, L, d)
    keys = torch.randn(G, N, d) if per_group_keys else torch.randn(N, d)
    weight = torch.randn(e, 2 * d) / (2 * d) ** 0.5
    b = 0.1 * torch.randn(e) if bias else None
    ln_w = 1 + 0.1 * torch.randn(e) if layer_norm else None
    ln_b = 0.1 * torch.randn(e) if layer_norm else None
    to = lambda t: None if t is None else t.to(device=device, dtype=dtype)  # noqa: E731
    return (to(h), to(keys), to(weight), to(b), to(ln_w), to(ln_b), layer_norm_eps(e))


# ----------------------------------------------------------------------------------------------
# multiplex
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("matrix", [False, True], ids=["hadamard", "matrix"])
@pytest.mark.parametrize("device,dtype,shape", grid())
def test_multiplex_forward(device, dtype, shape, matrix):
    skip_unsupported(device, dtype)
    x, w, scale = multiplex_inputs(shape, dtype, device, matrix)
    assert_close(torch.ops.mux.multiplex(x, w, scale), reference.multiplex(x, w, scale))
    assert_close(torch.ops.mux.multiplex(strided(x), strided(w), scale), reference.multiplex(x, w, scale))


@pytest.mark.parametrize("matrix", [False, True], ids=["hadamard", "matrix"])
@pytest.mark.parametrize("device,dtype,shape", grid())
def test_multiplex_backward(device, dtype, shape, matrix):
    skip_unsupported(device, dtype)
    x, w, scale = multiplex_inputs(shape, dtype, device, matrix)
    check_grads(torch.ops.mux.multiplex, reference.multiplex, [x, w, scale], {0, 1})


# ----------------------------------------------------------------------------------------------
# multiplex_embeddings
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("token_types", [True, False], ids=["types", "no-types"])
@pytest.mark.parametrize("device,dtype,shape", grid())
def test_multiplex_embeddings_forward(device, dtype, shape, token_types):
    skip_unsupported(device, dtype)
    args = embedding_inputs(shape, dtype, device, token_types)
    expected = reference.multiplex_embeddings(*args)
    assert_close(torch.ops.mux.multiplex_embeddings(*args), expected)
    ids, tt, *floats, scale, eps = args
    views = [strided(t) for t in floats]
    assert_close(torch.ops.mux.multiplex_embeddings(strided(ids), tt, *views, scale, eps), expected)


@pytest.mark.parametrize("token_types", [True, False], ids=["types", "no-types"])
@pytest.mark.parametrize("device,dtype,shape", grid())
def test_multiplex_embeddings_backward(device, dtype, shape, token_types):
    skip_unsupported(device, dtype)
    args = list(embedding_inputs(shape, dtype, device, token_types))
    check_grads(torch.ops.mux.multiplex_embeddings, reference.multiplex_embeddings, args, set(range(2, 8)))


# ----------------------------------------------------------------------------------------------
# demultiplex
# ----------------------------------------------------------------------------------------------

DEMUX_VARIANTS = [
    pytest.param(dict(), id="shared-keys-ln"),
    pytest.param(dict(per_group_keys=True), id="group-keys-ln"),
    pytest.param(dict(layer_norm=False), id="no-ln"),
    pytest.param(dict(bias=False, per_group_keys=True, e=13), id="no-bias-e13"),
]


@pytest.mark.parametrize("variant", DEMUX_VARIANTS)
@pytest.mark.parametrize("device,dtype,shape", grid())
def test_demultiplex_forward(device, dtype, shape, variant):
    skip_unsupported(device, dtype)
    args = demultiplex_inputs(shape, dtype, device, **variant)
    expected = reference.demultiplex(*args)
    assert_close(torch.ops.mux.demultiplex(*args), expected)
    views = [None if t is None else strided(t) for t in args[:6]]
    assert_close(torch.ops.mux.demultiplex(*views, args[6]), expected)


@pytest.mark.parametrize("variant", DEMUX_VARIANTS)
@pytest.mark.parametrize("device,dtype,shape", grid())
def test_demultiplex_backward(device, dtype, shape, variant):
    skip_unsupported(device, dtype)
    args = list(demultiplex_inputs(shape, dtype, device, **variant))
    check_grads(torch.ops.mux.demultiplex, reference.demultiplex, args, {k for k in range(6) if args[k] is not None})


def test_demultiplex_prefix_keys_are_a_view_of_h():
    """Index-prefix demux: keys = h[:, :N] (a view of h); gradients from both uses add up in h."""
    h, _, weight, bias, ln_w, ln_b, eps = demultiplex_inputs((3, 2, 6, 8), torch.float32, DEVICES[-1])
    h1, h2 = h.clone().requires_grad_(), h.clone().requires_grad_()
    out = torch.ops.mux.demultiplex(h1, h1[:, :2], weight, bias, ln_w, ln_b, eps)
    expected = reference.demultiplex(h2, h2[:, :2], weight, bias, ln_w, ln_b, eps)
    assert_close(out, expected)
    grad = torch.randn_like(out)
    out.backward(grad)
    expected.backward(grad)
    assert_close(h1.grad, h2.grad, "grad of h")


@pytest.mark.parametrize("device", DEVICES)
def test_demultiplex_gelu_over_its_whole_range(device):
    """The pre-activation sweeps [-40, 40] (the erf tails, where the C++ kernel's fast erf and exp
    must still agree with torch's GELU), and +-inf through the bias; forward and backward."""
    e = 97
    h = torch.linspace(-40, 40, 2 * e).view(2, 1, e).to(device)  # (G=2, L=1, d=e)
    keys = torch.zeros(3, e, device=device)
    weight = torch.cat([torch.zeros(e, e), torch.eye(e)], dim=1).to(device)  # pre-activation = h + bias
    h[..., -2:] = 0
    bias = torch.zeros(e, device=device)
    bias[-2:] = torch.tensor([float("inf"), float("-inf")])
    expected = reference.demultiplex(h, keys, weight, bias)
    out = torch.ops.mux.demultiplex(h, keys, weight, bias, None, None, 1e-12)
    torch.testing.assert_close(out[..., :-2], expected[..., :-2], atol=2e-5, rtol=2e-5)
    # GELU(inf) = inf; GELU(-inf) = -inf * 0 is undefined. (torch's own F.gelu gives inf or nan
    # for +inf depending on whether its scalar or vectorised loop handles the element.)
    assert (out[..., -2] == float("inf")).all() and out[..., -1].isnan().all()
    args = [h, keys, weight, torch.zeros(e, device=device), torch.ones(e, device=device),
            torch.zeros(e, device=device), 1e-12]
    check_grads(torch.ops.mux.demultiplex, reference.demultiplex, args, {0, 1, 2, 3, 4, 5})


def test_factorised_reference_matches_concat_reference():
    args = demultiplex_inputs((3, 5, 7, 16), torch.float64, "cpu", per_group_keys=True)
    torch.testing.assert_close(reference.demultiplex_factorised(*args), reference.demultiplex(*args))


# ----------------------------------------------------------------------------------------------
# fp64 gradcheck, opcheck, torch.compile
# ----------------------------------------------------------------------------------------------

SMALL = (2, 3, 3, 5)


def gradcheck_cases(device):
    x, w, s = multiplex_inputs(SMALL, torch.float64, device)
    xm, wm, sm = multiplex_inputs(SMALL, torch.float64, device, matrix=True)
    emb = embedding_inputs(SMALL, torch.float64, device, vocab=7, max_pos=4)
    dem = demultiplex_inputs(SMALL, torch.float64, device, e=4)
    dem_group = demultiplex_inputs(SMALL, torch.float64, device, per_group_keys=True, layer_norm=False)
    return [
        pytest.param(torch.ops.mux.multiplex, (x, w, s), id=f"{device}-multiplex"),
        pytest.param(torch.ops.mux.multiplex, (xm, wm, sm), id=f"{device}-multiplex-matrix"),
        pytest.param(torch.ops.mux.multiplex_embeddings, emb, id=f"{device}-multiplex_embeddings"),
        pytest.param(torch.ops.mux.demultiplex, dem, id=f"{device}-demultiplex"),
        pytest.param(torch.ops.mux.demultiplex, dem_group, id=f"{device}-demultiplex-group-keys"),
    ]


def with_grad(args):
    return tuple(t.detach().clone().requires_grad_() if torch.is_tensor(t) and t.is_floating_point() else t for t in args)


@pytest.mark.parametrize("op,args", [c for dev in DEVICES for c in gradcheck_cases(dev)])
def test_gradcheck_fp64(op, args):
    assert torch.autograd.gradcheck(op, with_grad(args), eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("requires_grad", [False, True], ids=["no-grad", "grad"])
@pytest.mark.parametrize("op,args", [c for dev in DEVICES for c in gradcheck_cases(dev)])
def test_opcheck(op, args, requires_grad):
    args = tuple(t.float() if torch.is_tensor(t) and t.is_floating_point() else t for t in args)
    torch.library.opcheck(op.default, with_grad(args) if requires_grad else args)


@pytest.mark.parametrize("device", DEVICES)
def test_compile_fullgraph_all_ops(device):
    """One compiled graph through all three ops, forward and backward, with no graph break."""
    ids, tt, word, pos, type_, ln_w, ln_b, weight, scale, eps = embedding_inputs((2, 3, 5, 16), torch.float32, device)
    _, keys, dweight, dbias, dln_w, dln_b, _ = demultiplex_inputs((2, 3, 5, 16), torch.float32, device)
    params = [t.requires_grad_() for t in (word, keys, dweight)]

    def model(ids):
        mixed = torch.ops.mux.multiplex_embeddings(ids, tt, word, pos, type_, ln_w, ln_b, weight, scale, eps)
        again = torch.ops.mux.multiplex(mixed[:, None].expand(-1, 3, -1, -1), weight, scale)
        return torch.ops.mux.demultiplex(again, keys, dweight, dbias, dln_w, dln_b, eps)

    expected = model(ids)
    expected.square().sum().backward()
    expected_grads = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    compiled = torch.compile(model, fullgraph=True, backend="inductor")
    out = compiled(ids)
    out.square().sum().backward()
    assert_close(out, expected)
    for p, g in zip(params, expected_grads):
        assert_close(p.grad, g, "compiled gradient")


# ----------------------------------------------------------------------------------------------
# Bad input: an error naming the argument, never a crash or an out-of-bounds read
# ----------------------------------------------------------------------------------------------


def _bad_multiplex():
    x, w, s = multiplex_inputs((2, 3, 4, 5), torch.float32, "cpu")
    yield "x must have shape", (x[0], w, s)
    yield r"weight.shape\[0\] must equal x.shape\[1\] \(N\)", (x, w[:2], s)
    yield r"weight.shape\[1\] must equal x.shape\[3\] \(d\)", (x, w[:, :4], s)
    yield "weight must have the dtype of x", (x, w.double(), s)
    yield "x must be float32", (x.int(), w.int(), s)


def _bad_embeddings():
    args = list(embedding_inputs((2, 3, 4, 5), torch.float32, "cpu", vocab=10, max_pos=6))
    ids = args[0]

    def replace(k, value):
        bad = list(args)
        bad[k] = value
        return tuple(bad)

    yield r"ids must lie in \[0, 10\)", replace(0, ids.clone().index_fill_(2, torch.tensor([1]), 10))
    yield r"ids must lie in \[0, 10\)", replace(0, ids.clone().index_fill_(2, torch.tensor([0]), -1))
    yield r"token_type_ids must lie in \[0, 2\)", replace(1, torch.full_like(ids, 2))
    yield "ids must be int64", replace(0, ids.float())
    yield "ids must have shape", replace(0, ids[0])
    yield r"ids.shape\[2\] \(L = 7\) must not exceed the rows of pos", replace(0, torch.zeros(2, 3, 7, dtype=torch.long))
    yield r"weight.shape\[0\] must equal ids.shape\[1\] \(N\)", replace(7, args[7][:2])
    yield r"pos.shape\[1\] must equal word.shape\[1\] \(d\)", replace(3, args[3][:, :4])
    yield "ln_weight must have the dtype of word", replace(5, args[5].half())
    yield "token_type_ids must have the shape of ids", replace(1, args[1][:, :, :2])


def _bad_demultiplex():
    h, keys, w, b, ln_w, ln_b, eps = demultiplex_inputs((2, 3, 4, 5), torch.float32, "cpu")
    yield "h must have shape", (h[0], keys, w, b, ln_w, ln_b, eps)
    yield r"keys.shape\[0\] must equal h.shape\[0\] \(G\)", (h, keys.expand(3, 3, 5), w, b, ln_w, ln_b, eps)
    yield r"keys.shape\[1\] must equal h.shape\[2\] \(d\)", (h, keys[:, :4], w, b, ln_w, ln_b, eps)
    yield r"weight.shape\[1\] must equal 2 \* h.shape\[2\] \(2d\)", (h, keys, w[:, :9], b, ln_w, ln_b, eps)
    yield r"bias.shape\[0\] must equal weight.shape\[0\] \(e\)", (h, keys, w, b[:3], ln_w, ln_b, eps)
    yield "ln_bias was given without ln_weight", (h, keys, w, b, None, ln_b, eps)
    yield "keys must be on the device of h", (h, keys.to("meta"), w, b, ln_w, ln_b, eps)
    yield "weight must have the dtype of h", (h, keys, w.half(), b, ln_w, ln_b, eps)


BAD_INPUTS = [
    pytest.param(op, match, args, id=f"{op._qualified_op_name.split('::')[1]}-{k}")
    for op, cases in (
        (torch.ops.mux.multiplex, _bad_multiplex),
        (torch.ops.mux.multiplex_embeddings, _bad_embeddings),
        (torch.ops.mux.demultiplex, _bad_demultiplex),
    )
    for k, (match, args) in enumerate(cases())
]


@pytest.mark.parametrize("op,match,args", BAD_INPUTS)
def test_bad_input_names_the_argument(op, match, args):
    with pytest.raises(RuntimeError, match=match):
        op(*args)


@pytest.mark.parametrize("device", DEVICES)
def test_ops_compute_in_their_input_dtype_under_autocast(device):
    """Autocast must not recast the GEMMs inside a kernel: fp32 inputs give the fp32 answer."""
    shape = (2, 3, 5, 16)
    cases = [
        (torch.ops.mux.multiplex, multiplex_inputs(shape, torch.float32, device, matrix=True)),
        (torch.ops.mux.multiplex_embeddings, embedding_inputs(shape, torch.float32, device)),
        (torch.ops.mux.demultiplex, demultiplex_inputs(shape, torch.float32, device)),
    ]
    for op, args in cases:
        expected = op(*args)
        with torch.autocast(device, dtype=torch.bfloat16):
            out = op(*args)
        assert_close(out, expected, f"{op} under autocast")
