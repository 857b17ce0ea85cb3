"""One GPU session in one script: build, CUDA tests, and a benchmark of every Triton kernel.

    python benchmarks/gpu_check.py [--skip-tests]

1. Builds mux_kernels._C (``pip install --no-build-isolation --no-deps -e .``) if it is missing.
2. Stops here, exit 0, when there is no CUDA GPU.
3. Runs ``pytest tests/test_ops.py tests/test_triton.py -x -q`` on the GPU (no interpreter, and
   MUX_KERNELS_AUTOTUNE=0: one fixed config per kernel), stopped if it eats into the benchmark time.
4. Times every op forward and backward (bf16, d = 768, L = 128, (N, G) in (2, 16), (5, 16),
   (10, 8) and one multi-GB shape) with ``triton.testing.do_bench``: the Triton kernel, the eager
   reference (mux_kernels.reference), ``torch.compile`` of it, and for demultiplex the factorised
   reference. Prints GB/s (unavoidable bytes: inputs read once, outputs written once) and TFLOP/s of
   the GEMM parts, next to a device-to-device copy bandwidth and a bf16 matmul rate measured in the
   same run, then a summary table.

Forward and backward are timed in training mode (inputs require grad); the backward is
``torch.autograd.grad`` of one forward's output, so it includes each provider's own recomputation.
Meant to finish in under 8 minutes on an H200: a time budget drops the compiled baselines, then the
remaining shapes, when it runs short, and says so.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START = time.monotonic()
BUDGET_S = 450  # the whole script, build and tests included
D, L = 768, 128
SHAPES = [(2, 16), (5, 16), (10, 8), (10, 1024)]  # (N, G); the last one moves several GB
VOCAB = 30522


def log(message: str) -> None:
    print(f"[{time.monotonic() - START:6.1f}s] {message}", flush=True)


def time_left() -> float:
    return BUDGET_S - (time.monotonic() - START)


def ensure_extension() -> None:
    if any((ROOT / "mux_kernels").glob("_C*")):
        return
    log("mux_kernels._C is missing: building it (pip install --no-build-isolation --no-deps -e .)")
    # --no-deps: the runtime dependencies are already installed, and the GPU box may be offline.
    cmd = [sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "-e", "."]
    subprocess.run(cmd, cwd=ROOT, check=True)


def run_tests() -> int:
    files = [f for f in ("tests/test_ops.py", "tests/test_triton.py") if (ROOT / f).exists()]
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "MUX_KERNELS_BACKEND")}
    # One fixed config per kernel: tuning every small test shape would cost minutes of compiles.
    env["MUX_KERNELS_AUTOTUNE"] = "0"
    limit = max(60, int(time_left()) - 240)  # keeps about 4 minutes for the benchmarks
    log(f"pytest {' '.join(files)} -x -q (CUDA, no interpreter, fixed kernel configs, at most {limit} s)")
    try:
        return subprocess.run([sys.executable, "-m", "pytest", *files, "-x", "-q"], cwd=ROOT, env=env,
                              timeout=limit).returncode
    except subprocess.TimeoutExpired:
        log(f"pytest did not finish in {limit} s")
        return 124


# ----------------------------------------------------------------------------------------------
# Benchmarks
# ----------------------------------------------------------------------------------------------


def nbytes(*tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


class Case:
    """One op at one shape: the call arguments, the inputs that take gradients, the callables to
    time, and the unavoidable bytes and GEMM FLOPs of its forward and backward."""

    def __init__(self, name, shape, args, grad_inputs, providers, bytes_fwd, bytes_bwd, flops_fwd=0, flops_bwd=0):
        self.name, self.shape, self.args, self.grad_inputs, self.providers = name, shape, args, grad_inputs, providers
        self.bytes, self.flops = {"fwd": bytes_fwd, "bwd": bytes_bwd}, {"fwd": flops_fwd, "bwd": flops_bwd}


def providers():
    """op -> {provider: function}. Module-level functions without closures and a fixed scale, so
    that each torch.compile'd baseline compiles once for every shape (dynamic=True)."""
    import torch

    import mux_kernels
    from mux_kernels import reference

    def multiplex(x, w):
        return reference.multiplex(x, w, 1.0)

    def multiplex_embeddings(ids, *tables):
        return reference.multiplex_embeddings(ids, None, *tables, 1.0, 1e-12)

    def demultiplex(*args):
        return reference.demultiplex(*args, eps=1e-12)

    def demultiplex_factorised(*args):
        return reference.demultiplex_factorised(*args, eps=1e-12)

    def baselines(fn):
        return {"eager": fn, "compiled": torch.compile(fn, dynamic=True)}

    # The backward is timed by re-running it on one graph (retain_graph=True), which a compiled
    # backward that donates its saved buffers refuses.
    import torch._functorch.config

    torch._functorch.config.donated_buffer = False

    return {
        "multiplex": {"triton": lambda x, w: mux_kernels.multiplex(x, w, 1.0), **baselines(multiplex)},
        "multiplex_embeddings": {
            "triton": lambda ids, *t: mux_kernels.multiplex_embeddings(ids, *t, scale=1.0),
            **baselines(multiplex_embeddings),
        },
        "demultiplex": {
            "triton": mux_kernels.demultiplex, **baselines(demultiplex), "factorised": demultiplex_factorised,
        },
    }


def make_cases(N, G, fns):
    """The benchmark cases at one (N, G), in bf16."""
    import torch

    def randn(*shape, scale=1.0):
        return (torch.randn(*shape, device="cuda") * scale).to(torch.bfloat16).requires_grad_()

    shape = f"N={N} G={G}"
    x, w, wm = randn(G, N, L, D), randn(N, D), randn(N, D, D, scale=D**-0.5)
    out_mux = G * L * D * 2
    gemm = 2 * G * L * N * D * D
    cases = [
        Case("multiplex (hadamard)", shape, (x, w), (x, w), fns["multiplex"],
             bytes_fwd=nbytes(x, w) + out_mux, bytes_bwd=out_mux + 2 * nbytes(x, w)),
        Case("multiplex (matrix)", shape, (x, wm), (x, wm), fns["multiplex"],
             bytes_fwd=nbytes(x, wm) + out_mux, bytes_bwd=out_mux + 2 * nbytes(x, wm),
             flops_fwd=gemm, flops_bwd=2 * gemm),
    ]
    ids = torch.randint(0, VOCAB, (G, N, L), device="cuda")
    tables = (randn(VOCAB, D, scale=0.05), randn(512, D, scale=0.05), randn(2, D, scale=0.05),
              randn(D), randn(D, scale=0.1), randn(N, D, scale=D**-0.5))
    gathered = G * N * L * D * 2 + nbytes(ids)
    small = nbytes(tables[1][:L], *tables[2:])
    cases.append(Case("multiplex_embeddings", shape, (ids, *tables), tables, fns["multiplex_embeddings"],
                      bytes_fwd=gathered + small + out_mux,
                      bytes_bwd=out_mux + gathered + 2 * small + nbytes(tables[0])))
    e = D
    demux = (randn(G, L, D), randn(N, D), randn(e, 2 * D, scale=(2 * D) ** -0.5),
             randn(e, scale=0.1), randn(e), randn(e, scale=0.1))  # h, keys, weight, bias, ln_weight, ln_bias
    out_demux = G * N * L * e * 2
    cases.append(Case("demultiplex", shape, demux, demux, fns["demultiplex"],
                      bytes_fwd=nbytes(*demux) + out_demux, bytes_bwd=out_demux + 2 * nbytes(*demux),
                      flops_fwd=2 * (G * L + N) * D * e, flops_bwd=2 * (3 * G * L + 3 * N) * D * e))
    return cases


def bench_ms(fn):
    from triton.testing import do_bench

    return do_bench(fn, warmup=25, rep=100, quantiles=[0.5, 0.2, 0.8])


def time_provider(fn, args, grad_inputs):
    """(fwd, bwd) timings of one provider: each (median, p20, p80) in ms, or an error string."""
    import torch

    try:
        fwd = bench_ms(lambda: fn(*args))
        out = fn(*args)
        grad = torch.randn_like(out)
        bwd = bench_ms(lambda: torch.autograd.grad(out, grad_inputs, grad, retain_graph=True))
        return fwd, bwd
    except Exception as exc:  # a baseline that fails (e.g. out of memory) must not stop the run
        message = f"{type(exc).__name__}: {str(exc).splitlines()[0][:80]}"
        return message, message
    finally:
        torch.cuda.empty_cache()


def roofline():
    """Device-to-device copy bandwidth (GB/s) and bf16 matmul rate (TFLOP/s), measured now."""
    import torch

    src = torch.empty(2**30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    copy_ms = bench_ms(lambda: dst.copy_(src))[0]
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    mm_ms = bench_ms(lambda: a @ a)[0]
    return 2 * 2**30 / copy_ms / 1e6, 2 * 8192**3 / mm_ms / 1e9


def run_benchmarks() -> None:
    import torch
    import triton

    copy_gbs, mm_tflops = roofline()
    log(f"reference rates: copy {copy_gbs:.0f} GB/s, bf16 matmul {mm_tflops:.0f} TFLOP/s")
    fns = providers()
    use_compiled = True
    rows = []  # (op, direction, shape, {provider: timing}, bytes, flops)
    print(f"{'op':22s} {'dir':3s} {'shape':12s} {'provider':10s} {'median ms':>10s} {'p20-p80 ms':>15s} "
          f"{'GB/s':>7s} {'%copy':>6s} {'TFLOP/s':>8s}")
    for N, G in SHAPES:
        if time_left() < 60:
            log(f"time budget spent: skipping N={N} G={G} and the shapes after it")
            break
        if use_compiled and time_left() < 150:
            use_compiled = False
            log("time budget short: dropping the torch.compile baselines from here on")
        for case in make_cases(N, G, fns):
            chosen = {n: f for n, f in case.providers.items() if use_compiled or n != "compiled"}
            results = {n: time_provider(f, case.args, case.grad_inputs) for n, f in chosen.items()}
            for i, direction in enumerate(("fwd", "bwd")):
                timings = {n: r[i] for n, r in results.items()}
                rows.append((case.name, direction, case.shape, timings, case.bytes[direction], case.flops[direction]))
                for name, t in timings.items():
                    if isinstance(t, str):
                        print(f"{case.name:22s} {direction:3s} {case.shape:12s} {name:10s} {t}")
                        continue
                    gbs = case.bytes[direction] / t[0] / 1e6
                    tflops = f"{case.flops[direction] / t[0] / 1e9:8.1f}" if case.flops[direction] else f"{'-':>8s}"
                    print(f"{case.name:22s} {direction:3s} {case.shape:12s} {name:10s} {t[0]:10.3f} "
                          f"{t[1]:7.3f}-{t[2]:7.3f} {gbs:7.0f} {100 * gbs / copy_gbs:5.0f}% {tflops}")
        torch.cuda.empty_cache()
    summary(rows, copy_gbs, mm_tflops)
    log(f"done (torch {torch.__version__}, triton {triton.__version__})")


def summary(rows, copy_gbs, mm_tflops) -> None:
    print("\nSummary (bf16, median ms; x eager / x comp = baseline time over Triton time; %copy and %mm = "
          "Triton GB/s and TFLOP/s over the copy and matmul rates measured above)")
    print(f"{'op':22s} {'dir':3s} {'shape':12s} {'triton':>8s} {'%copy':>6s} {'%mm':>5s} {'eager':>8s} "
          f"{'x eager':>8s} {'compiled':>9s} {'x comp':>7s} {'factor.':>8s}")

    def ms(t):
        return t[0] if isinstance(t, (list, tuple)) else math.nan

    for op, direction, shape, timings, nbytes_, flops in rows:
        k = ms(timings["triton"])
        eager, comp, fact = (ms(timings.get(n)) for n in ("eager", "compiled", "factorised"))
        pct_mm = f"{100 * flops / k / 1e9 / mm_tflops:4.0f}%" if flops else f"{'-':>5s}"
        print(f"{op:22s} {direction:3s} {shape:12s} {k:8.3f} {100 * nbytes_ / k / 1e6 / copy_gbs:5.0f}% {pct_mm} "
              f"{eager:8.3f} {eager / k:8.2f} {comp:9.3f} {comp / k:7.2f} {fact:8.3f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-tests", action="store_true", help="benchmarks only")
    args = parser.parse_args()
    ensure_extension()
    sys.path.insert(0, str(ROOT))
    import torch

    log(f"torch {torch.__version__}, CUDA {torch.version.cuda}, python {sys.version.split()[0]}")
    if not torch.cuda.is_available():
        log("no CUDA GPU: the CUDA tests and the benchmarks need one; stopping here (nothing failed)")
        return 0
    log(f"GPU: {torch.cuda.get_device_name()}")
    tests_rc = 0 if args.skip_tests else run_tests()
    if tests_rc:
        log(f"pytest failed (exit code {tests_rc}); benchmarking anyway")
    run_benchmarks()
    return tests_rc


if __name__ == "__main__":
    sys.exit(main())
