"""Shared machinery of the benchmark suites: device, shapes, timing and what each case records.

Timing. A case is warmed up first (the call that triggers ``torch.compile`` is never timed). On the
CPU, pytest-benchmark's own timer times it (``benchmark.pedantic``). On a GPU the times come from
``triton.testing.do_bench`` (CUDA events, L2 flushed between calls); pytest-benchmark then times
the call with a ``torch.cuda.synchronize()`` inside only so that the case has a row in its table.
Either way the median and quartiles land in ``benchmark.extra_info``, which is what the report reads.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from dataclasses import dataclass

import pytest
import torch

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
DTYPES = (torch.float32, torch.bfloat16) if DEVICE.type == "cuda" else (torch.float32,)
MODES = ("fwd", "bwd", "fwd+bwd")
BUDGET_S = {"quick": 0.25, "full": 1.0}  # timed seconds per case, within [MIN_ROUNDS, MAX_ROUNDS] rounds
MIN_ROUNDS, MAX_ROUNDS = 5, 200
FULL_SWEEP_TOKENS = 16384  # un-muxed tokens G·N·L of every full-sweep shape


@dataclass(frozen=True)
class Shape:
    """G groups of N multiplexed instances, L tokens each, hidden size d."""

    N: int
    G: int
    L: int
    d: int
    sweep: str  # "foundation" (the foundation issue's shapes) or "16k-token" (the full sweep)

    @property
    def tokens(self) -> int:
        return self.G * self.N * self.L

    def __str__(self) -> str:
        return f"N{self.N}-G{self.G}-L{self.L}-d{self.d}"


FOUNDATION_SHAPES = tuple(Shape(N, G, 128, 768, "foundation") for N, G in ((2, 16), (5, 16), (10, 8)))


def op_shapes(mode: str) -> tuple[Shape, ...]:
    """The foundation shapes; in full mode also N × d × L, with G chosen so that G·N·L ≈ 16k tokens."""
    if mode == "quick":
        return FOUNDATION_SHAPES
    sweep = tuple(
        Shape(N, max(1, round(FULL_SWEEP_TOKENS / (N * L))), L, d, "16k-token")
        for d in (384, 768, 1024)
        for L in (128, 512)
        for N in (2, 5, 10, 20)
    )
    return FOUNDATION_SHAPES + sweep


def compiled(fn):
    """``torch.compile`` as the baseline: whole graph, static shapes (one compile per shape)."""
    return torch.compile(fn, fullgraph=True, dynamic=False)


@contextlib.contextmanager
def skip_if_not_implemented():
    """Skip the case when the op has no kernel for this device yet (e.g. no Triton kernel registered)."""
    try:
        yield
    except NotImplementedError as exc:
        pytest.skip(f"not implemented on {DEVICE.type}: {str(exc).splitlines()[0]}")


def _synchronize() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def _clear_grads(tensors) -> None:
    for t in tensors:
        t.grad = None


def time_call(benchmark, target, grads, budget_s: float) -> float | None:
    """Time ``target()``, record median and quartiles (ms) in ``extra_info``; return the median in seconds.

    ``grads``: tensors whose ``.grad`` is reset before every call, so gradients never accumulate.
    Returns None under ``--benchmark-disable`` (one untimed call).
    """

    def setup() -> None:
        _clear_grads(grads)

    def synchronized_target() -> None:
        target()
        _synchronize()

    setup()
    synchronized_target()  # warm-up: torch.compile, first-touch allocations, lazy initialisation
    setup()
    start = time.perf_counter()
    synchronized_target()  # the estimate that sizes the rounds
    rounds = max(MIN_ROUNDS, min(MAX_ROUNDS, int(budget_s / (time.perf_counter() - start))))
    benchmark.pedantic(synchronized_target, setup=setup, rounds=rounds)
    if benchmark.disabled:
        return None
    if DEVICE.type == "cuda":
        import triton.testing

        median, q1, q3 = triton.testing.do_bench(target, grad_to_none=list(grads), quantiles=[0.5, 0.25, 0.75])
        timer = "triton.testing.do_bench"
    else:
        stats = benchmark.stats.stats
        median, q1, q3 = (1e3 * s for s in (stats.median, stats.q1, stats.q3))
        timer = "pytest-benchmark (perf_counter)"
    benchmark.extra_info.update(median_ms=median, q1_ms=q1, q3_ms=q3, rounds=rounds, timer=timer)
    return median / 1e3


def peak_memory_mib(target, grads) -> float:
    """Peak memory one call allocates on top of what was allocated before it, in MiB.

    GPU: ``torch.cuda.max_memory_allocated``. CPU: the torch profiler's allocation events (every
    allocation and free through torch's CPU allocator), summed in order, so the number is the same
    quantity as on the GPU; the process's resident set would mostly measure the malloc cache.
    """
    _clear_grads(grads)
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        target()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        target()
    events = sorted(
        (e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"), key=lambda e: e.start_ns()
    )
    return max(itertools.accumulate((e.nbytes() for e in events), initial=0)) / 2**20


def copy_bandwidth_gbps() -> float:
    """GB/s of a large tensor copy (bytes read + bytes written over time): the roof for memory-bound ops."""
    src = torch.ones((2**30 if DEVICE.type == "cuda" else 2**28) // 4, device=DEVICE)
    dst = torch.empty_like(src)
    if DEVICE.type == "cuda":
        import triton.testing

        seconds = triton.testing.do_bench(lambda: dst.copy_(src), return_mode="median") / 1e3
    else:
        times = []
        for _ in range(11):
            start = time.perf_counter()
            dst.copy_(src)
            times.append(time.perf_counter() - start)
        seconds = sorted(times[1:])[len(times[1:]) // 2]  # the first copy faults the pages in
    return 2 * src.nbytes / seconds / 1e9


def _pass(fn, inputs, mode):
    """The callable timed for one mode, and the tensors whose gradients it computes.

    fwd: the forward of a training step (inputs require grad); bwd: ``backward`` through one retained
    forward graph; fwd+bwd: both.
    """
    if mode == "fwd":
        return (lambda: fn(*inputs)), []
    grads = [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]
    out = fn(*inputs)
    grad_out = torch.randn_like(out)
    if mode == "bwd":
        return (lambda: out.backward(grad_out, retain_graph=True)), grads
    return (lambda: fn(*inputs).backward(grad_out)), grads


def per_mode(pair: tuple[int, int], mode: str) -> int:
    """A (forward, backward) count for ``mode``: fwd+bwd is the sum."""
    forward, backward = pair
    return {"fwd": forward, "bwd": backward, "fwd+bwd": forward + backward}[mode]


def measure_op(benchmark, *, op, provider, fn, inputs, shape, mode, traffic, flops=(0, 0), copy_gbps, budget_s) -> None:
    """Benchmark ``fn(*inputs)`` for one op case; record in ``extra_info`` what the report needs.

    ``traffic``: unavoidable bytes (inputs read once, outputs written once) of the (forward,
    backward) pass; ``flops``: their GEMM FLOPs (0: no GEMM). fwd+bwd counts both passes.
    """
    nbytes, nflops = per_mode(traffic, mode), per_mode(flops, mode)
    dtype = next(t.dtype for t in inputs if isinstance(t, torch.Tensor) and t.is_floating_point())
    benchmark.extra_info.update(
        suite="ops", op=op, provider=provider, mode=mode, device=DEVICE.type, dtype=str(dtype).removeprefix("torch."),
        N=shape.N, G=shape.G, L=shape.L, d=shape.d, tokens=shape.tokens, sweep=shape.sweep,
        bytes=nbytes, flops=nflops, copy_gbps=copy_gbps,
    )  # fmt: skip
    with skip_if_not_implemented():
        target, grads = _pass(fn, inputs, mode)
        seconds = time_call(benchmark, target, grads, budget_s)
    if seconds is None:
        return
    gbps = nbytes / seconds / 1e9
    benchmark.extra_info.update(
        gbps=gbps,
        copy_fraction=gbps / copy_gbps,
        gflops_per_s=nflops / seconds / 1e9 if nflops else None,
        peak_mib=peak_memory_mib(target, grads),
    )
