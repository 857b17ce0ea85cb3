"""Hardening of the ``torch.ops.mux`` ops against bad, odd and huge inputs (issue 7, op level).

* every bad input raises a RuntimeError/ValueError whose message names the argument, including the
  private ``*_backward`` ops' ``grad_out`` checks; bad token ids never read out of bounds;
* empty dims and N = 1 give the reference's (possibly empty) answer, forward and backward;
* odd layouts (permuted, transposed, stepped slices, storage offsets with padded strides, stride-0
  expansions) give the reference's answer, forward and backward;
* NaN/Inf propagate as the math does; fp16/bf16 stay within tolerance at d = 4096; the CPU results
  are bitwise reproducible and equal under concurrent calls from several Python threads;
* (slow) the CPU multiplex kernel on a tensor of more than 2^31 elements (64-bit offsets).

With ``MUX_KERNELS_BACKEND=triton`` the same tests run through the Triton launchers under
``TRITON_INTERPRET=1`` (fp32/fp16 only, C++-specific tests skipped).
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

import mux_kernels  # registers torch.ops.mux (tests/conftest.py switches on TRITON_INTERPRET first)
from mux_kernels import reference

M = torch.ops.mux
TRITON = mux_kernels.active_backends()["cpu"] == "triton"
DTYPES = (torch.float32, torch.float16) if TRITON else (torch.float32, torch.float16, torch.bfloat16)
LOW_PRECISION = tuple(d for d in DTYPES if d != torch.float32)
ERRORS = (RuntimeError, ValueError)
NEEDS_CPP = pytest.mark.skipif(TRITON, reason="checks the C++ CPU kernels")

# (rtol, atol) per dtype; atol is scaled by the largest magnitude of the expected tensor, so sums over
# many rows (GEMM-like gradients) get an error budget proportional to their size.
TOL = {
    torch.float32: (1e-5, 1e-5),
    torch.float16: (1e-2, 1e-2),
    torch.bfloat16: (5e-2, 5e-2),
    torch.float64: (1e-10, 1e-10),
}


def assert_close(actual, expected, what=""):
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    rtol, atol = TOL[expected.dtype]
    a, e = actual.detach().double(), expected.detach().double()
    finite = e[e.isfinite()]
    scale = max(1.0, finite.abs().max().item()) if finite.numel() else 1.0
    torch.testing.assert_close(a, e, rtol=rtol, atol=atol * scale, equal_nan=True, msg=lambda m: f"{what}: {m}")


def rand(*shape, dtype=torch.float32, gen=None, scale=1.0):
    return (torch.randn(*shape, generator=gen) * scale).to(dtype)


# ----------------------------------------------------------------------------------------------
# Argument builders. Each returns the op's arguments as a dict keyed by the schema's names.
# ----------------------------------------------------------------------------------------------

G, N, L, D, E, V, P, T = 2, 3, 4, 5, 6, 11, 6, 2


def multiplex_args(dtype=torch.float32, matrix=False, G=G, N=N, L=L, d=D, seed=0):
    g = torch.Generator().manual_seed(seed)
    w_shape = (N, d, d) if matrix else (N, d)
    return {"x": rand(G, N, L, d, dtype=dtype, gen=g),
            "weight": rand(*w_shape, dtype=dtype, gen=g, scale=1 / math.sqrt(max(d, 1)) if matrix else 1.0),
            "scale": 1.0 / max(N, 1)}


def embedding_args(dtype=torch.float32, token_types=True, G=G, N=N, L=L, d=8, V=V, P=P, T=T, seed=0,
                   ids_dtype=torch.int64):
    g = torch.Generator().manual_seed(seed)
    return {
        "ids": torch.randint(0, V, (G, N, L), generator=g).to(ids_dtype),
        "token_type_ids": torch.randint(0, T, (G, N, L), generator=g).to(ids_dtype) if token_types else None,
        "word": rand(V, d, dtype=dtype, gen=g),
        "pos": rand(P, d, dtype=dtype, gen=g),
        "type": rand(T, d, dtype=dtype, gen=g),
        "ln_weight": (1 + 0.1 * torch.randn(d, generator=g)).to(dtype),
        "ln_bias": rand(d, dtype=dtype, gen=g, scale=0.1),
        "weight": rand(N, d, dtype=dtype, gen=g),
        "scale": 1.0 / max(N, 1),
        "eps": 1e-12,
    }


def demux_args(dtype=torch.float32, per_group=False, G=G, N=N, L=L, d=D, e=E, bias=True, ln=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "h": rand(G, L, d, dtype=dtype, gen=g),
        "keys": rand(*((G, N, d) if per_group else (N, d)), dtype=dtype, gen=g),
        "weight": rand(e, 2 * d, dtype=dtype, gen=g, scale=1 / math.sqrt(2 * max(d, 1))),
        "bias": rand(e, dtype=dtype, gen=g, scale=0.1) if bias else None,
        "ln_weight": (1 + 0.1 * torch.randn(e, generator=g)).to(dtype) if ln else None,
        "ln_bias": rand(e, dtype=dtype, gen=g, scale=0.1) if ln else None,
        "eps": 1e-12,
    }


def out_shape(op, a):
    if op == "multiplex":
        Gx, _, Lx, d = a["x"].shape
        return (Gx, Lx, d)
    if op == "multiplex_embeddings":
        Gx, _, Lx = a["ids"].shape
        return (Gx, Lx, a["word"].shape[1])
    Gx, Lx, _ = a["h"].shape
    return (Gx, a["keys"].shape[-2], Lx, a["weight"].shape[0])


def backward_args(op, a, seed=1):
    """The private backward op's arguments: a grad_out of the forward's shape in front."""
    ref = a["x"] if op == "multiplex" else a["word"] if op == "multiplex_embeddings" else a["h"]
    grad_out = rand(*out_shape(op, a), dtype=ref.dtype, gen=torch.Generator().manual_seed(seed))
    return {"grad_out": grad_out, **a}


BUILDERS = {"multiplex": multiplex_args, "multiplex_embeddings": embedding_args, "demultiplex": demux_args}
REFERENCES = {"multiplex": reference.multiplex, "multiplex_embeddings": reference.multiplex_embeddings,
              "demultiplex": reference.demultiplex}
INT_ARGS = ("ids", "token_type_ids")


def call(op, a):
    return getattr(M, op)(**a)


def meta(t):
    return t.to("meta")


# ----------------------------------------------------------------------------------------------
# 1. Input validation
# ----------------------------------------------------------------------------------------------

# (case id, op, builder kwargs, mutation: args -> updates, message regex). Each mutation introduces one
# defect into otherwise valid arguments; the message must name the offending argument.
def _shape(t, *sizes):
    return torch.zeros(*sizes, dtype=t.dtype)


MULTIPLEX_CASES = [
    ("x_rank3", {}, lambda a: {"x": a["x"][0]}, r"x must have shape \(G, N, L, d\) \(4 dims\), got 3 dims"),
    ("x_rank5", {}, lambda a: {"x": a["x"][None]}, r"x must have shape \(G, N, L, d\) \(4 dims\), got 5 dims"),
    ("x_rank0", {}, lambda a: {"x": a["x"].sum()}, r"x must have shape \(G, N, L, d\)"),
    ("weight_rank1", {}, lambda a: {"weight": a["weight"][0]}, r"weight must have shape \(N, d\) \(Hadamard mix\) or \(N, d, d\)"),
    ("weight_rank4", {}, lambda a: {"weight": a["weight"][None, None]}, r"weight must have shape \(N, d\) \(Hadamard"),
    ("weight_N", {}, lambda a: {"weight": _shape(a["x"], N + 1, D)}, r"weight\.shape\[0\] must equal x\.shape\[1\] \(N\) = 3, got 4"),
    ("weight_d", {}, lambda a: {"weight": _shape(a["x"], N, D + 1)}, r"weight\.shape\[1\] must equal x\.shape\[3\] \(d\) = 5, got 6"),
    ("matrix_N", {"matrix": True}, lambda a: {"weight": _shape(a["x"], N - 1, D, D)}, r"weight\.shape\[0\] must equal x\.shape\[1\] \(N\)"),
    ("matrix_d_in", {"matrix": True}, lambda a: {"weight": _shape(a["x"], N, D + 2, D)}, r"weight\.shape\[1\] must equal x\.shape\[3\] \(d\)"),
    ("matrix_d_out", {"matrix": True}, lambda a: {"weight": _shape(a["x"], N, D, D - 1)}, r"weight\.shape\[2\] must equal x\.shape\[3\] \(d\)"),
    ("x_int64", {}, lambda a: {"x": a["x"].long(), "weight": a["weight"].long()}, r"x must be float32, float16, bfloat16"),
    ("x_int32", {}, lambda a: {"x": a["x"].int(), "weight": a["weight"].int()}, r"x must be float32, float16, bfloat16"),
    ("x_bool", {}, lambda a: {"x": a["x"] > 0, "weight": a["weight"] > 0}, r"x must be float32, float16, bfloat16"),
    ("x_uint8", {}, lambda a: {"x": a["x"].to(torch.uint8)}, r"x must be float32, float16, bfloat16"),
    ("x_complex", {}, lambda a: {"x": a["x"].to(torch.complex64), "weight": a["weight"].to(torch.complex64)}, r"x must be float32, float16, bfloat16"),
    ("weight_int", {}, lambda a: {"weight": a["weight"].long()}, r"weight must have the dtype of x \(.*\), got"),
    ("weight_bool", {}, lambda a: {"weight": a["weight"] > 0}, r"weight must have the dtype of x"),
    ("weight_fp16", {}, lambda a: {"weight": a["weight"].half()}, r"weight must have the dtype of x"),
    ("weight_bf16_vs_fp16", {"dtype": torch.float16}, lambda a: {"weight": a["weight"].bfloat16()}, r"weight must have the dtype of x"),
    ("weight_fp64", {}, lambda a: {"weight": a["weight"].double()}, r"weight must have the dtype of x"),
    ("weight_meta", {}, lambda a: {"weight": meta(a["weight"])}, r"weight must be on the device of x \(cpu\), got meta"),
    ("x_meta", {}, lambda a: {"x": meta(a["x"])}, r"weight must be on the device of x \(meta\), got cpu"),
]

EMBEDDING_CASES = [
    ("ids_rank2", {}, lambda a: {"ids": a["ids"][0], "token_type_ids": None}, r"ids must have shape \(G, N, L\) \(3 dims\), got 2 dims"),
    ("ids_rank4", {}, lambda a: {"ids": a["ids"][None], "token_type_ids": None}, r"ids must have shape \(G, N, L\) \(3 dims\), got 4 dims"),
    ("ids_float", {}, lambda a: {"ids": a["ids"].float()}, r"ids must be int64 \(or int32\) token ids"),
    ("ids_bool", {}, lambda a: {"ids": a["ids"] > 0}, r"ids must be int64 \(or int32\) token ids"),
    ("ids_int16", {}, lambda a: {"ids": a["ids"].short()}, r"ids must be int64 \(or int32\) token ids"),
    ("ids_negative", {}, lambda a: {"ids": a["ids"].index_put((torch.tensor(1), torch.tensor(2), torch.tensor(3)), torch.tensor(-1))},
     r"ids must lie in \[0, 11\) \(the rows of word\), got values in \[-1, "),
    ("ids_eq_vocab", {}, lambda a: {"ids": a["ids"].index_put((torch.tensor(0), torch.tensor(0), torch.tensor(0)), torch.tensor(V))},
     r"ids must lie in \[0, 11\) \(the rows of word\), got values in \[\d+, 11\]"),
    ("ids_huge", {}, lambda a: {"ids": torch.full_like(a["ids"], 2**40)}, r"ids must lie in \[0, 11\)"),
    ("ids_int_min", {}, lambda a: {"ids": torch.full_like(a["ids"], -2**63)}, r"ids must lie in \[0, 11\)"),
    ("ids_int32_out_of_range", {"ids_dtype": torch.int32}, lambda a: {"ids": torch.full_like(a["ids"], 2**31 - 1)}, r"ids must lie in \[0, 11\)"),
    ("ids_int32_negative", {"ids_dtype": torch.int32}, lambda a: {"ids": -1 - a["ids"]}, r"ids must lie in \[0, 11\)"),
    ("ids_out_of_range_no_types", {"token_types": False}, lambda a: {"ids": a["ids"] + V}, r"ids must lie in \[0, 11\)"),
    ("ids_meta", {}, lambda a: {"ids": meta(a["ids"])}, r"ids must be on the device of word \(cpu\), got meta"),
    ("tt_negative", {}, lambda a: {"token_type_ids": a["token_type_ids"] - 1}, r"token_type_ids must lie in \[0, 2\) \(the rows of type\), got values in \[-1, "),
    ("tt_eq_type_vocab", {}, lambda a: {"token_type_ids": torch.full_like(a["token_type_ids"], T)}, r"token_type_ids must lie in \[0, 2\) \(the rows of type\), got values in \[2, 2\]"),
    ("tt_shape", {}, lambda a: {"token_type_ids": a["token_type_ids"][:, :, :-1]}, r"token_type_ids must have the shape of ids"),
    ("tt_rank", {}, lambda a: {"token_type_ids": a["token_type_ids"][0]}, r"token_type_ids must have the shape of ids"),
    ("tt_float", {}, lambda a: {"token_type_ids": a["token_type_ids"].float()}, r"token_type_ids must be int64 \(or int32\) token ids"),
    ("tt_bool", {}, lambda a: {"token_type_ids": a["token_type_ids"] > 0}, r"token_type_ids must be int64 \(or int32\) token ids"),
    ("tt_meta", {}, lambda a: {"token_type_ids": meta(a["token_type_ids"])}, r"token_type_ids must be on the device of word"),
    ("L_exceeds_pos", {}, lambda a: {"pos": a["pos"][: L - 1]}, r"ids\.shape\[2\] \(L = 4\) must not exceed the rows of pos \(max_positions = 3\)"),
    ("L_exceeds_empty_pos", {}, lambda a: {"pos": a["pos"][:0]}, r"ids\.shape\[2\] \(L = 4\) must not exceed the rows of pos \(max_positions = 0\)"),
    ("word_rank1", {}, lambda a: {"word": a["word"][0]}, r"word must have shape \(V, d\) \(2 dims\)"),
    ("word_rank3", {}, lambda a: {"word": a["word"][None]}, r"word must have shape \(V, d\) \(2 dims\)"),
    ("word_int", {}, lambda a: {"word": a["word"].long()}, r"word must be float32, float16, bfloat16"),
    ("word_bool", {}, lambda a: {"word": a["word"] > 0}, r"word must be float32, float16, bfloat16"),
    ("word_meta", {}, lambda a: {"word": meta(a["word"])}, r"ids must be on the device of word \(meta\), got cpu"),
    ("pos_rank", {}, lambda a: {"pos": a["pos"][0]}, r"pos must have shape \(max_positions, d\) \(2 dims\)"),
    ("pos_d", {}, lambda a: {"pos": a["pos"][:, :-1]}, r"pos\.shape\[1\] must equal word\.shape\[1\] \(d\) = 8, got 7"),
    ("type_rank", {}, lambda a: {"type": a["type"][None]}, r"type must have shape \(type_vocab_size, d\) \(2 dims\)"),
    ("type_d", {}, lambda a: {"type": a["type"][:, 1:]}, r"type\.shape\[1\] must equal word\.shape\[1\] \(d\)"),
    ("type_no_rows", {"token_types": False}, lambda a: {"type": a["type"][:0]}, r"type must have at least one row \(token type 0\)"),
    ("ln_weight_rank", {}, lambda a: {"ln_weight": a["ln_weight"][None]}, r"ln_weight must have shape \(d,\) \(1 dims\)"),
    ("ln_weight_d", {}, lambda a: {"ln_weight": a["ln_weight"][1:]}, r"ln_weight\.shape\[0\] must equal word\.shape\[1\] \(d\)"),
    ("ln_bias_rank", {}, lambda a: {"ln_bias": a["ln_bias"].sum()}, r"ln_bias must have shape \(d,\) \(1 dims\)"),
    ("ln_bias_d", {}, lambda a: {"ln_bias": torch.zeros(9)}, r"ln_bias\.shape\[0\] must equal word\.shape\[1\] \(d\) = 8, got 9"),
    ("weight_rank3", {}, lambda a: {"weight": a["weight"][..., None].expand(N, 8, 8)}, r"weight must have shape \(N, d\) \(2 dims\)"),
    ("weight_N", {}, lambda a: {"weight": a["weight"][:-1]}, r"weight\.shape\[0\] must equal ids\.shape\[1\] \(N\) = 3, got 2"),
    ("weight_d", {}, lambda a: {"weight": a["weight"][:, :-1]}, r"weight\.shape\[1\] must equal word\.shape\[1\] \(d\)"),
] + [
    (f"{name}_dtype_{label}", {}, (lambda a, name=name, dt=dt: {name: a[name].to(dt)}), rf"{name} must have the dtype of word")
    for name in ("pos", "type", "ln_weight", "ln_bias", "weight")
    for label, dt in (("fp16", torch.float16), ("bf16", torch.bfloat16), ("int64", torch.int64))
] + [
    (f"{name}_meta", {}, (lambda a, name=name: {name: meta(a[name])}), rf"{name} must be on the device of word \(cpu\), got meta")
    for name in ("pos", "type", "ln_weight", "ln_bias", "weight")
]

DEMUX_CASES = [
    ("h_rank2", {}, lambda a: {"h": a["h"][0]}, r"h must have shape \(G, L, d\) \(3 dims\), got 2 dims"),
    ("h_rank4", {}, lambda a: {"h": a["h"][None]}, r"h must have shape \(G, L, d\) \(3 dims\), got 4 dims"),
    ("h_int", {}, lambda a: {k: (v.long() if isinstance(v, torch.Tensor) else v) for k, v in a.items()}, r"h must be float32, float16, bfloat16"),
    ("h_bool", {}, lambda a: {"h": a["h"] > 0}, r"h must be float32, float16, bfloat16"),
    ("keys_rank1", {}, lambda a: {"keys": a["keys"][0]}, r"keys must have shape \(N, d\) \(shared keys\) or \(G, N, d\) \(per-group keys\)"),
    ("keys_rank4", {}, lambda a: {"keys": a["keys"][None, None]}, r"keys must have shape \(N, d\) \(shared keys\) or \(G, N, d\)"),
    ("keys_G", {"per_group": True}, lambda a: {"keys": torch.cat([a["keys"], a["keys"]])}, r"keys\.shape\[0\] must equal h\.shape\[0\] \(G\) = 2, got 4"),
    ("keys_G1_not_broadcast", {"per_group": True}, lambda a: {"keys": a["keys"][:1]}, r"keys\.shape\[0\] must equal h\.shape\[0\] \(G\) = 2, got 1"),
    ("keys_d_shared", {}, lambda a: {"keys": a["keys"][:, :-1]}, r"keys\.shape\[1\] must equal h\.shape\[2\] \(d\) = 5, got 4"),
    ("keys_d_per_group", {"per_group": True}, lambda a: {"keys": a["keys"][..., 1:]}, r"keys\.shape\[2\] must equal h\.shape\[2\] \(d\) = 5, got 4"),
    ("keys_dtype", {}, lambda a: {"keys": a["keys"].half()}, r"keys must have the dtype of h"),
    ("keys_int", {}, lambda a: {"keys": a["keys"].long()}, r"keys must have the dtype of h"),
    ("keys_meta", {}, lambda a: {"keys": meta(a["keys"])}, r"keys must be on the device of h \(cpu\), got meta"),
    ("h_meta", {}, lambda a: {"h": meta(a["h"])}, r"keys must be on the device of h \(meta\), got cpu"),
    ("weight_rank1", {}, lambda a: {"weight": a["weight"][0]}, r"weight must have shape \(e, 2d\) \(2 dims\)"),
    ("weight_rank3", {}, lambda a: {"weight": a["weight"][None]}, r"weight must have shape \(e, 2d\) \(2 dims\)"),
    ("weight_d_not_2d", {}, lambda a: {"weight": a["weight"][:, :D]}, r"weight\.shape\[1\] must equal 2 \* h\.shape\[2\] \(2d\) = 10, got 5"),
    ("weight_transposed", {}, lambda a: {"weight": a["weight"].t()}, r"weight\.shape\[1\] must equal 2 \* h\.shape\[2\] \(2d\)"),
    ("weight_dtype", {}, lambda a: {"weight": a["weight"].bfloat16()}, r"weight must have the dtype of h"),
    ("weight_meta", {}, lambda a: {"weight": meta(a["weight"])}, r"weight must be on the device of h"),
] + [
    case
    for name in ("bias", "ln_weight", "ln_bias")
    for case in (
        (f"{name}_e", {}, (lambda a, name=name: {name: a[name][:-1]}), rf"{name}\.shape\[0\] must equal weight\.shape\[0\] \(e\) = 6, got 5"),
        (f"{name}_rank2", {}, (lambda a, name=name: {name: a[name][None]}), rf"{name} must have shape \(e,\) \(1 dims\)"),
        (f"{name}_rank0", {}, (lambda a, name=name: {name: a[name].sum()}), rf"{name} must have shape \(e,\) \(1 dims\)"),
        (f"{name}_dtype", {}, (lambda a, name=name: {name: a[name].half()}), rf"{name} must have the dtype of h"),
        (f"{name}_int", {}, (lambda a, name=name: {name: a[name].long()}), rf"{name} must have the dtype of h"),
        (f"{name}_meta", {}, (lambda a, name=name: {name: meta(a[name])}), rf"{name} must be on the device of h"),
    )
] + [
    ("ln_bias_without_ln_weight", {}, lambda a: {"ln_weight": None}, r"ln_bias was given without ln_weight"),
]

VALIDATION_CASES = [("multiplex", *c) for c in MULTIPLEX_CASES] + [
    ("multiplex_embeddings", *c) for c in EMBEDDING_CASES] + [("demultiplex", *c) for c in DEMUX_CASES]


def _mutated(op, kwargs, mutation):
    a = BUILDERS[op](**kwargs)
    a.update(mutation(a))
    return a


@pytest.mark.parametrize("op,case,kwargs,mutation,message", VALIDATION_CASES,
                         ids=[f"{c[0]}-{c[1]}" for c in VALIDATION_CASES])
def test_bad_input_raises_naming_the_argument(op, case, kwargs, mutation, message):
    a = _mutated(op, kwargs, mutation)
    with pytest.raises(ERRORS, match=message):
        call(op, a)


@pytest.mark.parametrize("op,case,kwargs,mutation,message", VALIDATION_CASES,
                         ids=[f"{c[0]}-{c[1]}" for c in VALIDATION_CASES])
def test_backward_op_checks_its_inputs_too(op, case, kwargs, mutation, message):
    """The private backward ops run the forward's checks (and the id range checks) themselves."""
    a = _mutated(op, kwargs, mutation)
    good = BUILDERS[op](**kwargs)
    grad_out = backward_args(op, good)["grad_out"]
    if any(t.device.type == "meta" for t in a.values() if isinstance(t, torch.Tensor)):
        grad_out = meta(grad_out)  # keep the defect the only device mismatch
    with pytest.raises(ERRORS, match=message):
        getattr(M, f"{op}_backward")(grad_out, **a)


FAKE_CASES = [c for c in VALIDATION_CASES if "must lie in" not in c[4] and "_meta" not in c[1]]


@pytest.mark.parametrize("op,case,kwargs,mutation,message", FAKE_CASES, ids=[f"{c[0]}-{c[1]}" for c in FAKE_CASES])
def test_fake_kernels_raise_the_same_errors(op, case, kwargs, mutation, message):
    """All-meta inputs go through the Python fake kernels (torch.compile's path): same checks, same words.
    (Id ranges need data and are checked by the real kernels only.)"""
    a = {k: meta(v) if isinstance(v, torch.Tensor) else v for k, v in _mutated(op, kwargs, mutation).items()}
    with pytest.raises(ERRORS, match=message):
        call(op, a)
    grad_out = meta(backward_args(op, BUILDERS[op](**kwargs))["grad_out"])
    with pytest.raises(ERRORS, match=message):
        getattr(M, f"{op}_backward")(grad_out, **a)


GRAD_OUT_CASES = [
    (op, kind)
    for op in BUILDERS
    for kind in ("shape_last", "shape_first", "rank_minus", "rank_plus", "dtype_fp16", "dtype_int", "meta")
]


@pytest.mark.parametrize("device", ["cpu", "meta"])
@pytest.mark.parametrize("op,kind", GRAD_OUT_CASES, ids=[f"{o}-{k}" for o, k in GRAD_OUT_CASES])
def test_backward_op_checks_grad_out(op, kind, device):
    """grad_out of the private backward ops: C++ kernels (cpu) and fake kernels (all-meta inputs)."""
    if device == "meta" and kind == "meta":
        pytest.skip("no other device to mismatch")
    a = backward_args(op, BUILDERS[op]())
    go = a["grad_out"]
    ref_name = {"multiplex": "x", "multiplex_embeddings": "word", "demultiplex": "h"}[op]
    layout = r"\(G, N, L, e\)" if op == "demultiplex" else r"\(G, L, d\)"
    if kind == "shape_last":
        a["grad_out"] = torch.zeros(*go.shape[:-1], go.shape[-1] + 1)
        message = rf"grad_out must have shape {layout} = \("
    elif kind == "shape_first":
        a["grad_out"] = torch.zeros(go.shape[0] + 1, *go.shape[1:])
        message = rf"grad_out must have shape {layout}"
    elif kind == "rank_minus":
        a["grad_out"] = go[0]
        message = rf"grad_out must have shape {layout}"
    elif kind == "rank_plus":
        a["grad_out"] = go[None]
        message = rf"grad_out must have shape {layout}"
    elif kind == "dtype_fp16":
        a["grad_out"] = go.half()
        message = rf"grad_out must have the dtype of {ref_name}"
    elif kind == "dtype_int":
        a["grad_out"] = go.long()
        message = rf"grad_out must have the dtype of {ref_name}"
    else:
        a["grad_out"] = meta(go)
        message = rf"grad_out must be on the device of {ref_name} \(cpu\), got meta"
    if device == "meta":
        a = {k: meta(v) if isinstance(v, torch.Tensor) else v for k, v in a.items()}
    with pytest.raises(ERRORS, match=message):
        getattr(M, f"{op}_backward")(**a)


@pytest.mark.parametrize("bad", ["negative", "too_large"])
@pytest.mark.parametrize("which", ["ids", "token_type_ids"])
def test_bad_ids_never_read_out_of_bounds(which, bad):
    """Ids just past a table that sits at the end of a larger buffer must raise, not read the neighbour."""
    a = embedding_args()
    buf = torch.randn(3 * V, 8)
    a["word"] = buf[V: 2 * V]  # rows -1 and V exist in memory: a missing check would read them silently
    tbuf = torch.randn(3 * T, 8)
    a["type"] = tbuf[T: 2 * T]
    t = a[which].clone()
    t[0, 0, 0] = -1 if bad == "negative" else (V if which == "ids" else T)
    a[which] = t
    for fn in (M.multiplex_embeddings, lambda **k: M.multiplex_embeddings_backward(
            backward_args("multiplex_embeddings", embedding_args())["grad_out"], **k)):
        with pytest.raises(ERRORS, match=rf"{which} must lie in \[0, "):
            fn(**a)


def test_autograd_path_checks_ids_too():
    a = embedding_args()
    a["word"].requires_grad_()
    a["ids"] = a["ids"] + V
    with pytest.raises(ERRORS, match=r"ids must lie in \[0, 11\)"):
        call("multiplex_embeddings", a)


def test_meta_tensors_give_shapes_without_data():
    """All-meta inputs run the fake kernels: right shapes, and the same checks."""
    for op, builder in BUILDERS.items():
        a = {k: meta(v) if isinstance(v, torch.Tensor) else v for k, v in builder().items()}
        assert tuple(call(op, a).shape) == out_shape(op, a)
    a = {k: meta(v) if isinstance(v, torch.Tensor) else v for k, v in multiplex_args().items()}
    a["weight"] = torch.zeros(N + 1, D, device="meta")
    with pytest.raises(ERRORS, match=r"weight\.shape\[0\] must equal x\.shape\[1\] \(N\)"):
        call("multiplex", a)


# ----------------------------------------------------------------------------------------------
# Comparison with the reference, forward and backward, on arbitrary layouts
# ----------------------------------------------------------------------------------------------


def compare_with_reference(op, a, layouts=None, backward=True, seed=1, fp64_reference=False):
    """Runs the op and the reference on the same inputs (each float tensor a fresh leaf, optionally
    viewed through a layout transform), then compares the output and every input gradient.

    ``fp64_reference``: evaluate the reference in float64 (then cast to the kernel's dtype), for cases
    where torch's own float32 LayerNorm backward is noisy (a single feature: 0 * rstd(eps=1e-12))."""
    layouts = layouts or {}

    def build(reference_side=False):
        leaves, args = {}, {}
        for k, v in a.items():
            if isinstance(v, torch.Tensor):
                leaf, view = layouts.get(k, (v, None))
                leaf = leaf.detach().clone()
                if reference_side and fp64_reference and leaf.is_floating_point():
                    leaf = leaf.double()
                if backward and leaf.is_floating_point():
                    leaf.requires_grad_()
                    leaves[k] = leaf
                args[k] = view(leaf) if view else leaf
            else:
                args[k] = v
        return leaves, args

    leaves_k, args_k = build()
    leaves_r, args_r = build(reference_side=True)
    out = call(op, args_k)
    expected = REFERENCES[op](*args_r.values())  # positional: the reference calls `type` `type_`
    assert_close(out, expected.to(out.dtype), f"{op} forward")
    for k, v in args_k.items():  # no op returns an alias of an input
        if isinstance(v, torch.Tensor) and v.numel() and out.numel():
            assert out.untyped_storage().data_ptr() != v.untyped_storage().data_ptr(), f"output aliases {k}"
    if not backward:
        return out
    grad_out = rand(*out.shape, dtype=out.dtype, gen=torch.Generator().manual_seed(seed))
    out.backward(grad_out)
    expected.backward(grad_out.to(expected.dtype))
    for k in leaves_k:
        gk, gr = leaves_k[k].grad, leaves_r[k].grad
        gk = torch.zeros_like(leaves_k[k]) if gk is None else gk
        gr = torch.zeros_like(leaves_r[k]) if gr is None else gr
        assert_close(gk, gr.to(gk.dtype), f"{op} grad {k}")
    return out


# ---- empty dims and N = 1 --------------------------------------------------------------------

EMPTY_MULTIPLEX = [dict(G=0), dict(L=0), dict(N=0), dict(d=0), dict(G=0, L=0), dict(N=1), dict(G=1, N=1, L=1, d=1)]


@pytest.mark.parametrize("matrix", [False, True], ids=["hadamard", "matrix"])
@pytest.mark.parametrize("dims", EMPTY_MULTIPLEX, ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()))
def test_multiplex_empty_dims_and_single_instance(dims, matrix):
    a = multiplex_args(matrix=matrix, **dims)
    a["scale"] = 0.7  # explicit: the default 1/N has no meaning for N = 0
    out = compare_with_reference("multiplex", a)
    if dims.get("N") == 0:
        assert torch.equal(out, torch.zeros_like(out))  # the empty sum


EMPTY_EMBEDDINGS = [dict(G=0), dict(L=0), dict(N=0), dict(G=0, L=0), dict(N=1), dict(G=1, N=1, L=1, d=1),
                    dict(L=P), dict(V=1, T=1), dict(d=0)]


@pytest.mark.parametrize("token_types", [True, False], ids=["types", "no_types"])
@pytest.mark.parametrize("dims", EMPTY_EMBEDDINGS, ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()))
def test_multiplex_embeddings_empty_dims_and_single_instance(dims, token_types):
    a = embedding_args(token_types=token_types, **dims)
    a["scale"] = 0.7
    if dims.get("d") == 0:  # the reference's LayerNorm over 0 features has nothing to say: shapes only
        out = call("multiplex_embeddings", a)
        assert out.shape == (G, L, 0)
        grads = M.multiplex_embeddings_backward(torch.zeros(G, L, 0), **a)
        assert [tuple(g.shape) for g in grads] == [tuple(a[k].shape) for k in ("word", "pos", "type", "ln_weight", "ln_bias", "weight")]
        return
    # One feature: the float32 reference's LayerNorm backward is noise (0 * rstd(eps=1e-12)); use float64.
    compare_with_reference("multiplex_embeddings", a, fp64_reference=dims.get("d") == 1)


EMPTY_DEMUX = [dict(G=0), dict(L=0), dict(N=0), dict(e=0), dict(d=0), dict(G=0, L=0, N=0), dict(N=1),
               dict(G=1, N=1, L=1, d=1, e=1)]


@pytest.mark.parametrize("per_group", [False, True], ids=["shared_keys", "per_group_keys"])
@pytest.mark.parametrize("dims", EMPTY_DEMUX, ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()))
def test_demultiplex_empty_dims_and_single_instance(dims, per_group):
    for bias, ln in ((True, True), (False, False)):
        a = demux_args(per_group=per_group, bias=bias, ln=ln, **dims)
        compare_with_reference("demultiplex", a, fp64_reference=dims.get("e") == 1)


def test_demultiplex_index_prefix_keys_are_a_view_of_h():
    """The DataMUX index-prefix demux: keys = h[:, :N], a view into h (aliasing inputs)."""
    h = rand(3, 7, 6, gen=torch.Generator().manual_seed(3))
    a = demux_args(G=3, L=7, d=6, N=2)
    leaf = h.clone().requires_grad_()
    leaf_r = h.clone().requires_grad_()
    out = M.demultiplex(leaf, leaf[:, :2], a["weight"], a["bias"], a["ln_weight"], a["ln_bias"], 1e-12)
    ref = reference.demultiplex(leaf_r, leaf_r[:, :2], a["weight"], a["bias"], a["ln_weight"], a["ln_bias"])
    assert_close(out, ref)
    go = torch.randn(out.shape)
    out.backward(go)
    ref.backward(go)
    assert_close(leaf.grad, leaf_r.grad)


def test_default_scale_needs_at_least_one_instance():
    x = torch.zeros(2, 0, 3, 4)
    with pytest.raises(ValueError, match=r"N = 0"):
        mux_kernels.multiplex(x, torch.zeros(0, 4))


# ---- odd layouts -----------------------------------------------------------------------------

LAYOUTS = ("permuted", "transposed", "step", "offset", "expanded")


def odd_layout(t, kind, dim=0):
    """(leaf, view_fn): view_fn(leaf) has t's shape with an odd layout; its values are t's, except for
    'expanded' where they repeat along ``dim`` (a stride-0 view). Unused storage holds NaN, so a kernel
    that reads outside the view fails the comparison."""
    shape, nd = tuple(t.shape), t.dim()
    fill = float("nan") if t.is_floating_point() else torch.iinfo(t.dtype).max  # out-of-range id if read
    if nd == 0 or t.numel() == 0 or kind == "contiguous":
        return t, None
    if kind == "permuted":  # reversed dims, e.g. a transposed matrix
        perm = list(reversed(range(nd)))
        return t.permute(perm).contiguous(), lambda b: b.permute(perm)
    if kind == "transposed":  # last two dims swapped (first two for vectors: no-op)
        if nd < 2:
            return t, None
        return t.transpose(-1, -2).contiguous(), lambda b: b.transpose(-1, -2)
    if kind == "step":  # every other element of dim, starting at 1: stride 2, storage offset
        k = dim % nd
        big = list(shape)
        big[k] = 2 * shape[k] + 1
        leaf = torch.full(big, fill, dtype=t.dtype)
        index = (slice(None),) * k + (slice(1, None, 2),)
        leaf[index] = t
        return leaf, lambda b: b[index]
    if kind == "offset":  # as_strided view with padded rows and a storage offset
        strides, acc = [], 1
        for s in reversed(shape):
            strides.append(acc)
            acc *= s + 2
        strides = tuple(reversed(strides))
        offset = 7
        size = offset + sum((s - 1) * st for s, st in zip(shape, strides)) + 1
        leaf = torch.full((size,), fill, dtype=t.dtype)
        leaf.as_strided(shape, strides, offset).copy_(t)
        return leaf, lambda b: b.as_strided(shape, strides, offset)
    if kind == "expanded":  # stride 0 along dim
        k = dim % nd
        return t.narrow(k, 0, 1).contiguous(), lambda b: b.expand(shape)
    raise ValueError(kind)


def layout_cases(a, kind, skip=()):
    """Layout maps to try: every tensor argument in the odd layout at once (one case per dim); for
    'expanded', one tensor at a time (expanding several at once along the same dim would make the
    LayerNorm inputs constant rows, an ill-conditioned case that says nothing about layouts)."""
    tensors = [k for k, v in a.items() if isinstance(v, torch.Tensor)]
    max_dim = max(a[k].dim() for k in tensors)
    if kind != "expanded":
        return [{k: odd_layout(a[k], kind, dim) for k in tensors} for dim in range(max_dim)]
    return [{k: odd_layout(a[k], kind, dim)} for k in tensors for dim in range(a[k].dim()) if (k, dim) not in skip]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind", LAYOUTS)
@pytest.mark.parametrize("matrix", [False, True], ids=["hadamard", "matrix"])
def test_multiplex_odd_layouts(kind, matrix, dtype):
    a = multiplex_args(dtype=dtype, matrix=matrix, G=2, N=3, L=5, d=7)
    for layouts in layout_cases(a, kind):
        compare_with_reference("multiplex", a, layouts)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind", LAYOUTS)
def test_multiplex_embeddings_odd_layouts(kind, dtype):
    a = embedding_args(dtype=dtype, G=2, N=3, L=5, d=7, V=9, P=8, T=3)
    for layouts in layout_cases(a, kind):
        compare_with_reference("multiplex_embeddings", a, layouts)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind", LAYOUTS)
@pytest.mark.parametrize("per_group", [False, True], ids=["shared_keys", "per_group_keys"])
def test_demultiplex_odd_layouts(kind, per_group, dtype):
    a = demux_args(dtype=dtype, per_group=per_group, G=2, N=3, L=5, d=6, e=7)
    # weight expanded along e makes every pre-LayerNorm row constant: covered without the LayerNorm.
    for layouts in layout_cases(a, kind, skip={("weight", 0)}):
        compare_with_reference("demultiplex", a, layouts)
    if kind == "expanded":
        a = demux_args(dtype=dtype, per_group=per_group, G=2, N=3, L=5, d=6, e=7, ln=False)
        compare_with_reference("demultiplex", a, {"weight": odd_layout(a["weight"], kind, 0)})


GRAD_OUT_LAYOUT_CASES = [
    ("multiplex", dict(matrix=False)), ("multiplex", dict(matrix=True)), ("multiplex_embeddings", {}),
    ("demultiplex", dict(per_group=False)), ("demultiplex", dict(per_group=True)),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("op,kwargs", GRAD_OUT_LAYOUT_CASES, ids=[f"{o}-{'-'.join(map(str, k.values()))}" for o, k in GRAD_OUT_LAYOUT_CASES])
def test_backward_with_odd_grad_out_layouts(op, kwargs, dtype):
    """The gradient arriving at the backward op may itself be a view: stride 0 (from .sum()), transposed,
    or a slice of a wider gradient."""
    builder = {"multiplex": lambda: multiplex_args(dtype=dtype, G=2, N=3, L=5, d=7, **kwargs),
               "multiplex_embeddings": lambda: embedding_args(dtype=dtype, G=2, N=3, L=5, d=7, V=9, P=8, T=3),
               "demultiplex": lambda: demux_args(dtype=dtype, G=2, N=3, L=5, d=6, e=7, **kwargs)}[op]
    a = builder()
    gen = torch.Generator().manual_seed(5)
    losses = {
        "sum (stride-0 grad)": lambda out: out.sum(),
        "transposed grad": lambda out: (out.transpose(0, -1) * rand(*out.transpose(0, -1).shape, gen=gen).to(dtype)).sum(),
        "sliced grad": lambda out: (torch.cat([out, out], dim=-1)[..., ::2] * 1.5).sum(),
    }
    for name, loss_fn in losses.items():
        results = []
        for fn in (lambda args: call(op, args), lambda args: REFERENCES[op](*args.values())):
            leaves = {k: v.clone().requires_grad_() for k, v in a.items() if isinstance(v, torch.Tensor) and v.is_floating_point()}
            gen.manual_seed(5)
            loss_fn(fn({**a, **leaves})).backward()
            results.append({k: leaf.grad for k, leaf in leaves.items()})
        for k in results[0]:
            assert_close(results[0][k], results[1][k], f"{op} {name}: grad {k}")


def test_odd_layout_helper_really_is_odd():
    t = torch.randn(3, 4, 5)
    for kind in LAYOUTS:
        leaf, f = odd_layout(t, kind, 1)
        v = f(leaf)
        assert not v.is_contiguous() or v.storage_offset() != 0, kind
        if kind != "expanded":
            assert torch.equal(v, t), kind
    assert 0 in odd_layout(t, "expanded", 1)[1](odd_layout(t, "expanded", 1)[0]).stride()
    assert odd_layout(t, "offset")[1](odd_layout(t, "offset")[0]).storage_offset() == 7


# ----------------------------------------------------------------------------------------------
# 4. Numerics: NaN/Inf, low precision at large d, determinism
# ----------------------------------------------------------------------------------------------


def assert_same_nonfinite(actual, expected, what=""):
    """NaN at the same places, +-Inf at the same places with the same sign, finite values close."""
    a, e = actual.detach().float(), expected.detach().float()
    assert torch.equal(a.isnan(), e.isnan()), f"{what}: NaN masks differ ({int(a.isnan().sum())} vs {int(e.isnan().sum())})"
    assert torch.equal(a.isposinf(), e.isposinf()), f"{what}: +Inf positions differ"
    assert torch.equal(a.isneginf(), e.isneginf()), f"{what}: -Inf positions differ"
    finite = e.isfinite()
    assert finite.any(), f"{what}: test poisons everything"
    assert_close(actual.detach()[finite], expected.detach()[finite], what)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("matrix", [False, True], ids=["hadamard", "matrix"])
def test_multiplex_nan_inf_propagate(matrix, dtype):
    a = multiplex_args(dtype=dtype, matrix=matrix, G=3, N=3, L=4, d=6)
    x = a["x"].clone()
    x[0, 1, 2, 3] = math.nan
    x[1, 0, 1, 0] = math.inf
    x[1, 2, 3, 5] = -math.inf
    x[2, 0, 0, 0] = math.inf
    x[2, 1, 0, 0] = -math.inf  # inf - inf = NaN (Hadamard: if the weights keep the signs)
    a["x"] = x
    w = a["weight"].clone()
    w.view(-1)[4] = math.nan
    a["weight"] = w
    xk, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
    wk, wr = w.clone().requires_grad_(), w.clone().requires_grad_()
    out = M.multiplex(xk, wk, a["scale"])
    ref = reference.multiplex(xr, wr, a["scale"])
    assert_same_nonfinite(out, ref, "forward")
    go = torch.randn(out.shape).to(dtype)
    out.backward(go)
    ref.backward(go)
    assert_same_nonfinite(xk.grad, xr.grad, "grad x")
    assert_same_nonfinite(wk.grad, wr.grad, "grad weight")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_multiplex_embeddings_nan_inf_propagate(dtype):
    a = embedding_args(dtype=dtype, G=3, N=2, L=5, d=8, V=7, P=6)
    a["ids"][0, 0, 1] = 3  # word row 3 has a NaN: (g=0, l=1) turns NaN
    a["ids"][1:] = a["ids"][1:].clamp(max=2)
    word = a["word"].clone()
    word[3, 2] = math.nan
    word[4, 0] = math.inf
    a["ids"][1, 1, 4] = 4  # word row 4 has an Inf: LayerNorm of (inf - inf) -> NaN row
    a["word"] = word
    pos = a["pos"].clone()
    pos[2, 5] = -math.inf  # every (g, l=2) row turns NaN
    a["pos"] = pos
    leaves = {k: v.clone().requires_grad_() for k, v in a.items() if isinstance(v, torch.Tensor) and v.is_floating_point()}
    leaves_r = {k: v.clone().requires_grad_() for k, v in leaves.items()}
    out = M.multiplex_embeddings(**{**a, **leaves})
    ref = reference.multiplex_embeddings(*{**a, **leaves_r}.values())
    assert_same_nonfinite(out, ref, "forward")
    assert out[0, 1].isnan().all() and out[:, 2].isnan().all() and out[1, 4].isnan().all()
    assert out[2, 0].isfinite().all()


def _demux_exact_nonfinite(h, keys, weight, bias, ln_weight, ln_bias):
    """The reference in float64: torch's float32 GELU maps +Inf to NaN, while the math, float64 torch and
    the kernels give +Inf."""
    def f64(t):
        return None if t is None else t.double()

    return reference.demultiplex(f64(h), f64(keys), f64(weight), f64(bias), f64(ln_weight), f64(ln_bias))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("ln", [True, False], ids=["ln", "no_ln"])
@pytest.mark.parametrize("per_group", [False, True], ids=["shared_keys", "per_group_keys"])
def test_demultiplex_nan_inf_propagate(per_group, ln, dtype):
    a = demux_args(dtype=dtype, per_group=per_group, ln=ln, G=3, N=2, L=4, d=5, e=6)
    h = a["h"].clone()
    h[0, 1, 2] = math.nan
    h[1, 3, 0] = math.inf
    h[2, 0, 4] = -math.inf
    a["h"] = h
    keys = a["keys"].clone()
    keys.view(-1, 5)[-1, 1] = math.inf
    a["keys"] = keys
    out = call("demultiplex", a)
    exact = _demux_exact_nonfinite(a["h"], a["keys"], a["weight"], a["bias"], a["ln_weight"], a["ln_bias"])
    assert_same_nonfinite(out, exact.to(dtype), "forward vs float64 math")
    ref = REFERENCES["demultiplex"](**a)
    assert torch.equal(out.isfinite(), ref.isfinite()), "non-finite positions differ from the reference"
    if ln:  # after the LayerNorm every non-finite row is all-NaN in both
        assert_same_nonfinite(out, ref, "forward vs reference")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_demultiplex_nan_propagates_backward(dtype):
    a = demux_args(dtype=dtype, G=2, N=2, L=3, d=4, e=5)
    h = a["h"].clone()
    h[1, 2, 3] = math.nan
    a["h"] = h
    compare_with_reference("demultiplex", a)  # equal_nan: NaN masks must match exactly


@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=str)
def test_large_d_low_precision(dtype):
    d = 4096
    compare_with_reference("multiplex", multiplex_args(dtype=dtype, G=1, N=3, L=4, d=d))
    compare_with_reference("multiplex", multiplex_args(dtype=dtype, matrix=True, G=1, N=2, L=4, d=d), backward=False)
    compare_with_reference("multiplex_embeddings", embedding_args(dtype=dtype, G=1, N=3, L=4, d=d, V=20))
    compare_with_reference("demultiplex", demux_args(dtype=dtype, G=1, N=3, L=4, d=d, e=64))


def _run_all(seed=0, threads_hint=None):
    """Forward + backward of every op (both weight/key variants) on one deterministic set of inputs."""
    results = []
    cases = [
        ("multiplex", multiplex_args(G=4, N=3, L=64, d=96, seed=seed)),
        ("multiplex", multiplex_args(matrix=True, G=4, N=3, L=64, d=48, seed=seed)),
        ("multiplex_embeddings", embedding_args(G=4, N=3, L=64, d=96, V=50, P=64, seed=seed)),
        ("demultiplex", demux_args(G=4, N=3, L=64, d=48, e=40, seed=seed)),
        ("demultiplex", demux_args(per_group=True, G=4, N=3, L=64, d=48, e=40, seed=seed)),
    ]
    for op, a in cases:
        leaves = {k: v.clone().requires_grad_() for k, v in a.items()
                  if isinstance(v, torch.Tensor) and v.is_floating_point()}
        out = call(op, {**a, **leaves})
        out.backward(torch.ones_like(out) + torch.arange(out.numel()).view(out.shape).remainder(7) / 7)
        results.append((out.detach(), *(leaves[k].grad for k in sorted(leaves))))
    return results


def test_results_are_bitwise_reproducible():
    first, second = _run_all(), _run_all()
    for r1, r2 in zip(first, second):
        for t1, t2 in zip(r1, r2):
            assert torch.equal(t1, t2)


def _concurrent_case(i):
    """Call i of the thread-safety test: a different op and shape for every i."""
    op = ("multiplex", "multiplex_embeddings", "demultiplex")[i % 3]
    size = 1 + i % 7
    if op == "multiplex":
        a = multiplex_args(matrix=i % 2 == 0, G=1 + i % 3, N=1 + i % 4, L=3 + size, d=8 + 3 * size, seed=i)
    elif op == "multiplex_embeddings":
        a = embedding_args(token_types=i % 2 == 0, G=1 + i % 3, N=1 + i % 4, L=2 + size, d=8 + 5 * size, V=13, P=12, seed=i)
    else:
        a = demux_args(per_group=i % 2 == 0, ln=i % 4 != 1, G=1 + i % 3, N=1 + i % 4, L=3 + size, d=4 + size, e=5 + 2 * size, seed=i)
    leaves = {k: v.clone().requires_grad_() for k, v in a.items() if isinstance(v, torch.Tensor) and v.is_floating_point()}
    out = call(op, {**a, **leaves})
    out.backward(torch.full_like(out, 0.5))
    return [out.detach()] + [leaves[k].grad for k in sorted(leaves)]


@pytest.mark.skipif(TRITON and os.environ.get("TRITON_INTERPRET") == "1",
                    reason="the Triton interpreter patches triton.language while it runs a kernel: not thread-safe")
def test_concurrent_calls_from_threads_match_serial_calls():
    calls = range(80)  # 4 threads x 20 calls
    serial = [_concurrent_case(i) for i in calls]
    with ThreadPoolExecutor(max_workers=4) as pool:
        concurrent = list(pool.map(_concurrent_case, calls))
    for i, (s, c) in enumerate(zip(serial, concurrent)):
        for ts, tc in zip(s, c):
            assert torch.equal(ts, tc), f"call {i} differs under concurrency"


# ----------------------------------------------------------------------------------------------
# 3. Huge tensors: 64-bit offsets
# ----------------------------------------------------------------------------------------------


def _available_gib():
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) / 2**20
    except (OSError, KeyError, ValueError):
        return 0.0


@NEEDS_CPP
@pytest.mark.slow
def test_multiplex_more_than_2_31_elements():
    """fp16 x of shape (1, 2, 2^20 + 1, 1024): 2^31 + 2048 elements (4 GiB, out 2 GiB). Element offsets
    past 2^31 - 1 only occur in the last rows of instance 1: an int32 offset would read the wrong rows."""
    if _available_gib() < 9:
        pytest.skip("needs ~7 GiB of free memory")
    Lh, d = 2**20 + 1, 1024
    x = torch.zeros(1, 2, Lh, d, dtype=torch.float16)
    assert x.numel() > 2**31
    rows = [0, 1, Lh // 2, Lh - 3, Lh - 2, Lh - 1]
    g = torch.Generator().manual_seed(0)
    for l in rows:
        x[:, :, l] = torch.randn(1, 2, d, generator=g).half()
    w = torch.randn(2, d, generator=g).half()
    out = M.multiplex(x, w, 0.5)
    assert out.shape == (1, Lh, d)
    for l in rows:
        assert_close(out[:, l: l + 1], reference.multiplex(x[:, :, l: l + 1], w, 0.5), f"row {l}")
    # Rows with no data stay zero (a wrapped offset could also have written there).
    for l in (2, Lh // 3, Lh - 4):
        assert not out[:, l].any(), f"row {l}"
    del out
    # The backward's grad_x (4 GiB) on top of x and grad_out would pass ~12 GiB: forward only.
