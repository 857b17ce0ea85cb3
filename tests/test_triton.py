"""The Triton launchers (mux_kernels.triton) against the plain-torch reference, called directly.

Runs on a CUDA GPU, or on the CPU under the Triton interpreter: ``TRITON_INTERPRET=1 pytest
tests/test_triton.py`` (the variable must be set before triton is first imported, so it cannot be set
from here). The interpreter mishandles bf16, so bf16 cases run on a GPU only. conftest.py sets
MUX_KERNELS_POISON_OUTPUTS=1: every buffer a kernel must fill starts as NaN, so an element a kernel
forgets to write fails the comparison.
"""

from __future__ import annotations

import inspect
import os

import pytest
import torch

pytest.importorskip("triton")

import mux_kernels  # noqa: E402
from mux_kernels import outputs, reference  # noqa: E402
from mux_kernels.triton import LAUNCHERS  # noqa: E402
from mux_kernels.triton import demultiplex as demux_launchers  # noqa: E402
from mux_kernels.triton import multiplex as mux_launchers  # noqa: E402
from mux_kernels.triton import multiplex_embeddings as emb_launchers  # noqa: E402

HAS_CUDA = torch.cuda.is_available()
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
DEVICE = "cuda" if HAS_CUDA else "cpu"

pytestmark = pytest.mark.skipif(
    not (HAS_CUDA or INTERPRET),
    reason="Triton kernels need a CUDA GPU, or TRITON_INTERPRET=1 in the environment before pytest starts",
)

BF16 = pytest.param(
    torch.bfloat16,
    marks=pytest.mark.skipif(not HAS_CUDA or INTERPRET, reason="bf16 needs a GPU (the interpreter gets it wrong)"),
)
DTYPES = [torch.float64, torch.float32, torch.float16, BF16]
# (atol, rtol), applied relative to the largest reference magnitude (see assert_close). fp64 gets
# scale and eps as fp32 kernel arguments: about 1e-8 relative.
TOLERANCES = {
    torch.float64: (1e-7, 1e-7),
    torch.float32: (2e-5, 2e-5),
    torch.float16: (4e-3, 4e-3),
    torch.bfloat16: (3e-2, 3e-2),
}

# (G, N, L, d): odd sizes, N in {1, 2, 3, 5}, L in {1, 5}, d in {1, 7, 96}.
SHAPES = [(1, 1, 1, 1), (3, 2, 5, 7), (1, 3, 5, 96), (3, 5, 1, 7), (3, 5, 5, 96)]
SHAPE_IDS = ["G{}-N{}-L{}-d{}".format(*s) for s in SHAPES]
# demultiplex adds e, the output width.
DEMUX_SHAPES = [s + (e,) for s, e in zip(SHAPES, (1, 5, 7, 96, 96))]
DEMUX_IDS = ["G{}-N{}-L{}-d{}-e{}".format(*s) for s in DEMUX_SHAPES]
VOCAB, MAX_POSITIONS, TYPES = 11, 8, 2


def layer_norm_eps(width):
    """BERT's 1e-12, except for one-element rows: their LayerNorm output is exactly 0, but torch's
    backward turns the rounding of x - mean into gradients scaled by 1/sqrt(eps)."""
    return 1e-12 if width > 1 else 1e-2


def test_outputs_are_poisoned():
    """The NaN start that makes an unwritten element fail every comparison below."""
    assert outputs.POISON_OUTPUTS


def assert_close(actual, expected, dtype, name=""):
    assert actual.shape == expected.shape and actual.dtype == expected.dtype, name
    assert actual.is_contiguous(), name
    atol, rtol = TOLERANCES[dtype]
    scale = max(1.0, expected.double().abs().max().item()) if expected.numel() else 1.0
    torch.testing.assert_close(
        actual.double(), expected.double(), atol=atol * scale, rtol=rtol, msg=lambda m: f"{name}: {m}"
    )


def randn(*shape, dtype):
    return torch.randn(*shape, device=DEVICE).to(dtype)


def strided(t):
    """The same values in a non-contiguous layout (every stride doubled)."""
    return torch.stack([t, torch.zeros_like(t)], dim=-1)[..., 0]


def reference_grads(fn, args, grad_out):
    """Gradients of the reference w.r.t. every floating tensor in ``args`` (in order)."""
    leaves = [a.detach().requires_grad_() if torch.is_tensor(a) and a.is_floating_point() else a for a in args]
    fn(*leaves).backward(grad_out)
    return [a.grad for a in leaves if torch.is_tensor(a) and a.is_floating_point()]


# ---------------------------------------------------------------------------------------------
# multiplex
# ---------------------------------------------------------------------------------------------


def multiplex_inputs(shape, dtype, matrix):
    G, N, L, d = shape
    weight = randn(N, d, d, dtype=dtype) / d**0.5 if matrix else randn(N, d, dtype=dtype)
    return randn(G, N, L, d, dtype=dtype), weight, 1.0 / N


@pytest.mark.parametrize("matrix", [False, True], ids=["hadamard", "matrix"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_multiplex(shape, dtype, matrix):
    x, weight, scale = multiplex_inputs(shape, dtype, matrix)
    assert_close(mux_launchers.multiplex(x, weight, scale), reference.multiplex(x, weight, scale), dtype)


@pytest.mark.parametrize("matrix", [False, True], ids=["hadamard", "matrix"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_multiplex_backward(shape, dtype, matrix):
    x, weight, scale = multiplex_inputs(shape, dtype, matrix)
    G, N, L, d = shape
    grad_out = randn(G, L, d, dtype=dtype)
    expected = reference_grads(reference.multiplex, (x, weight, scale), grad_out)
    for name, a, e in zip(("x", "weight"), mux_launchers.multiplex_backward(grad_out, x, weight, scale), expected):
        assert_close(a, e, dtype, name)


# ---------------------------------------------------------------------------------------------
# multiplex_embeddings
# ---------------------------------------------------------------------------------------------


def embedding_inputs(shape, dtype, token_types, id_dtype=torch.int64):
    G, N, L, d = shape
    ids = torch.randint(0, VOCAB, (G, N, L), device=DEVICE, dtype=id_dtype)
    ids[..., 0] = 3  # a repeated id, as [CLS]: several rows scatter into one word row
    tts = torch.randint(0, TYPES, (G, N, L), device=DEVICE, dtype=id_dtype) if token_types else None
    tables = [randn(VOCAB, d, dtype=dtype), randn(MAX_POSITIONS, d, dtype=dtype), randn(TYPES, d, dtype=dtype)]
    ln = [1 + 0.1 * randn(d, dtype=dtype), 0.1 * randn(d, dtype=dtype)]
    return [ids, tts, *tables, *ln, randn(N, d, dtype=dtype), 1.0 / N, layer_norm_eps(d)]


@pytest.mark.parametrize("token_types", [False, True], ids=["type0", "token_types"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_multiplex_embeddings(shape, dtype, token_types):
    args = embedding_inputs(shape, dtype, token_types)
    assert_close(emb_launchers.multiplex_embeddings(*args), reference.multiplex_embeddings(*args), dtype)


@pytest.mark.parametrize("token_types", [False, True], ids=["type0", "token_types"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_multiplex_embeddings_backward(shape, dtype, token_types):
    args = embedding_inputs(shape, dtype, token_types, id_dtype=torch.int32)
    G, N, L, d = shape
    grad_out = randn(G, L, d, dtype=dtype)
    expected = reference_grads(reference.multiplex_embeddings, args, grad_out)
    actual = emb_launchers.multiplex_embeddings_backward(grad_out, *args)
    for name, a, e in zip(("word", "pos", "type", "ln_weight", "ln_bias", "weight"), actual, expected):
        assert_close(a, e, dtype, name)


def test_multiplex_embeddings_rejects_bad_ids():
    args = embedding_inputs((1, 2, 5, 7), torch.float32, token_types=True)
    args[0][0, 1, 2] = VOCAB
    with pytest.raises(RuntimeError, match=r"ids must lie in \[0, 11\) \(the rows of word\), got values in"):
        emb_launchers.multiplex_embeddings(*args)
    args[0][0, 1, 2] = 0
    args[1][0, 0, 0] = -1
    with pytest.raises(RuntimeError, match=r"token_type_ids must lie in \[0, 2\)"):
        emb_launchers.multiplex_embeddings_backward(torch.zeros(1, 5, 7, device=DEVICE), *args)


# ---------------------------------------------------------------------------------------------
# demultiplex
# ---------------------------------------------------------------------------------------------

# (bias, ln_weight, ln_bias) present?
DEMUX_VARIANTS = {"full": (True, True, True), "plain": (False, False, False), "ln-no-bias": (True, True, False)}


def demux_inputs(shape, dtype, per_group_keys, variant):
    G, N, L, d, e = shape
    keys = randn(G, N, d, dtype=dtype) if per_group_keys else randn(N, d, dtype=dtype)
    weight = randn(e, 2 * d, dtype=dtype) / (2 * d) ** 0.5
    has_bias, has_ln_w, has_ln_b = DEMUX_VARIANTS[variant]
    bias = randn(e, dtype=dtype) if has_bias else None
    ln_w = 1 + 0.1 * randn(e, dtype=dtype) if has_ln_w else None
    ln_b = 0.1 * randn(e, dtype=dtype) if has_ln_b else None
    return [randn(G, L, d, dtype=dtype), keys, weight, bias, ln_w, ln_b, layer_norm_eps(e)]


@pytest.mark.parametrize("variant", list(DEMUX_VARIANTS))
@pytest.mark.parametrize("per_group_keys", [False, True], ids=["shared-keys", "group-keys"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", DEMUX_SHAPES, ids=DEMUX_IDS)
def test_demultiplex(shape, dtype, per_group_keys, variant):
    args = demux_inputs(shape, dtype, per_group_keys, variant)
    assert_close(demux_launchers.demultiplex(*args), reference.demultiplex(*args), dtype)


@pytest.mark.parametrize("variant", list(DEMUX_VARIANTS))
@pytest.mark.parametrize("per_group_keys", [False, True], ids=["shared-keys", "group-keys"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", DEMUX_SHAPES, ids=DEMUX_IDS)
def test_demultiplex_backward(shape, dtype, per_group_keys, variant):
    args = demux_inputs(shape, dtype, per_group_keys, variant)
    G, N, L, d, e = shape
    grad_out = randn(G, N, L, e, dtype=dtype)
    expected = iter(reference_grads(reference.demultiplex, args, grad_out))
    actual = demux_launchers.demultiplex_backward(grad_out, *args)
    names = ("h", "keys", "weight", "bias", "ln_weight", "ln_bias")
    for name, a, arg in zip(names, actual, args):
        if arg is not None:  # an absent argument has no reference gradient
            assert_close(a, next(expected), dtype, name)
    if args[4] is None:
        assert not actual[4].any() and not actual[5].any()


def test_demultiplex_backward_checks_grad_out():
    args = demux_inputs((1, 2, 5, 7, 5), torch.float32, False, "full")
    with pytest.raises(RuntimeError, match=r"grad_out must have shape \(G, N, L, e\) = \(1, 2, 5, 5\), got"):
        demux_launchers.demultiplex_backward(torch.zeros(1, 2, 5, 4, device=DEVICE), *args)


# ---------------------------------------------------------------------------------------------
# Every launcher: strided inputs, empty inputs, signatures
# ---------------------------------------------------------------------------------------------


CASES = ("hadamard", "matrix", "embeddings", "demultiplex")


def op_case(name, shape, dtype):
    """(forward launcher, backward launcher, reference, args, forward output shape) of one op."""
    G, N, L, d = shape
    e = d + 2
    if name in ("hadamard", "matrix"):
        args = list(multiplex_inputs(shape, dtype, matrix=name == "matrix"))
        return mux_launchers.multiplex, mux_launchers.multiplex_backward, reference.multiplex, args, (G, L, d)
    if name == "embeddings":
        args = embedding_inputs(shape, dtype, token_types=True)
        return (emb_launchers.multiplex_embeddings, emb_launchers.multiplex_embeddings_backward,
                reference.multiplex_embeddings, args, (G, L, d))
    args = demux_inputs((G, N, L, d, e), dtype, per_group_keys=True, variant="full")
    return demux_launchers.demultiplex, demux_launchers.demultiplex_backward, reference.demultiplex, args, (G, N, L, e)


@pytest.mark.parametrize("case", CASES)
def test_strided_inputs(case):
    dtype = torch.float32
    forward, backward, ref, args, out_shape = op_case(case, (3, 3, 5, 7), dtype)
    args = [strided(a) if torch.is_tensor(a) else a for a in args]
    assert not any(torch.is_tensor(a) and a.is_contiguous() for a in args)
    grad_out = strided(randn(*out_shape, dtype=dtype))
    assert_close(forward(*args), ref(*args), dtype, "forward")
    expected = reference_grads(ref, args, grad_out)
    for i, (a, e) in enumerate(zip(backward(grad_out, *args), expected)):
        assert_close(a, e, dtype, f"grad {i}")


@pytest.mark.parametrize("case", CASES)
def test_empty_batch(case):
    dtype = torch.float32
    forward, backward, ref, args, out_shape = op_case(case, (0, 2, 5, 7), dtype)
    assert forward(*args).shape == out_shape
    grad_out = randn(*out_shape, dtype=dtype)
    for a, e in zip(backward(grad_out, *args), reference_grads(ref, args, grad_out)):
        assert_close(a, e, dtype)


def test_launcher_signatures_match_schemas():
    for name, launcher in LAUNCHERS.items():
        schema = getattr(torch.ops.mux, name.split("::")[1]).default._schema
        params = list(inspect.signature(launcher).parameters)
        assert [p.rstrip("_") for p in params] == [a.name for a in schema.arguments], name


@pytest.mark.skipif(
    mux_kernels.active_backends().get(DEVICE) != "triton",
    reason=f"torch.ops.mux on {DEVICE} is not served by Triton (MUX_KERNELS_BACKEND=triton routes the CPU to it)",
)
@pytest.mark.parametrize("case", CASES)
def test_ops_dispatch_to_the_launchers(case):
    """register() made the launchers the kernels of the public ops, forward and backward."""
    dtype = torch.float32
    forward, _, ref, args, out_shape = op_case(case, (3, 2, 5, 7), dtype)
    op = getattr(torch.ops.mux, forward.__name__)
    leaves = [a.detach().requires_grad_() if torch.is_tensor(a) and a.is_floating_point() else a for a in args]
    grad_out = randn(*out_shape, dtype=dtype)
    out = op(*leaves)
    assert_close(out, ref(*args), dtype, "forward")
    out.backward(grad_out)
    actual = [a.grad for a in leaves if torch.is_tensor(a) and a.is_floating_point()]
    for i, (a, e) in enumerate(zip(actual, reference_grads(ref, args, grad_out))):
        assert_close(a, e, dtype, f"grad {i}")
