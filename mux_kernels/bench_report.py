"""``mux-kernels bench``: run the benchmark suites with pytest and write the speedup report.

The suites are the source checkout's ``benchmarks/`` (they are not part of the installed package).
The output directory (default ``<checkout>/reports``) receives:

  benchmark.json          pytest-benchmark's JSON; each case's numbers are in its ``extra_info``
  benchmark.md            machine and versions, one table per op and pass, the model throughput table
  speedup_<op>.png        mux_kernels' speedup over each baseline against N
  model_throughput.png    model instances/s against N, with the ideal N× line
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import shlex
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

PASSES = {"fwd": "forward", "bwd": "backward", "fwd+bwd": "forward + backward"}
PROVIDERS = ("mux_kernels", "eager", "compiled", "compiled_factorised")
SUBJECT = "mux_kernels"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="run the benchmarks, write reports/benchmark.md and plots",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick", action="store_true", help="foundation shapes and a small model only (minutes, not an hour)"
    )
    parser.add_argument("--threads", type=int, help="torch threads (default: $MUX_BENCH_THREADS, else 2)")
    parser.add_argument("--output", type=Path, help="report directory (default: <checkout>/reports)")
    parser.add_argument(
        "--report-only", action="store_true", help="rewrite the report from the existing benchmark.json, run nothing"
    )
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments after --, e.g. -- -k multiplex")
    parser.set_defaults(func=run)


def find_benchmarks() -> Path:
    """``benchmarks/`` of the source checkout this package runs from, or of the current directory."""
    for root in (Path(__file__).resolve().parent.parent, Path.cwd()):
        if (root / "benchmarks" / "conftest.py").is_file():
            return root / "benchmarks"
    raise SystemExit(
        "mux-kernels bench: no benchmarks/ directory found. The suites live in the source checkout, not in "
        "the installed package: run this from a checkout (git clone, then pip install --no-build-isolation -e .)."
    )


def run(args: argparse.Namespace) -> int:
    missing = [m for m in ("pytest", "pytest_benchmark", "matplotlib") if importlib.util.find_spec(m) is None]
    if missing:
        raise SystemExit(f"mux-kernels bench needs {', '.join(missing)}: pip install 'mux_kernels[bench]'")
    bench_dir = find_benchmarks()
    out_dir = (args.output or bench_dir.parent / "reports").resolve()
    json_path = out_dir / "benchmark.json"
    code = 0
    if not args.report_only:
        out_dir.mkdir(parents=True, exist_ok=True)
        json_path.unlink(missing_ok=True)
        code = run_suites(bench_dir, json_path, "quick" if args.quick else "full", args.threads, args.pytest_args)
    if not json_path.is_file():
        print(f"mux-kernels bench: no {json_path}, so no report", file=sys.stderr)
        return code or 1
    print(f"report: {write_report(json_path, out_dir)}")
    return code


def run_suites(bench_dir: Path, json_path: Path, mode: str, threads: int | None, pytest_args: list[str]) -> int:
    """Run pytest on the suites, its progress streamed to the terminal; return pytest's exit code."""
    env = dict(os.environ, **({"MUX_BENCH_THREADS": str(threads)} if threads else {}))
    command = [
        sys.executable, "-m", "pytest", str(bench_dir), f"--bench-mode={mode}", f"--benchmark-json={json_path}",
        "--benchmark-columns=median,iqr,rounds", "--benchmark-sort=name", "-v", "-rs", *pytest_args,
    ]  # fmt: skip
    print("$", shlex.join(command), flush=True)
    return subprocess.call(command, cwd=bench_dir.parent, env=env)


# ----------------------------------------------------------------------------------------------
# The report
# ----------------------------------------------------------------------------------------------


def write_report(json_path: Path, out_dir: Path) -> Path:
    """benchmark.md and the PNG plots from pytest-benchmark's JSON; returns the markdown's path."""
    data = json.loads(json_path.read_text())
    cases = [b["extra_info"] for b in data["benchmarks"] if "median_ms" in b["extra_info"]]
    ops = [c for c in cases if c["suite"] == "ops"]
    models = [c for c in cases if c["suite"] == "models"]
    lines = _header(data, ops) + _op_sections(ops, out_dir) + _model_section(models, out_dir)
    report = out_dir / "benchmark.md"
    report.write_text("\n".join(lines) + "\n")
    return report


def _header(data: dict, ops: list[dict]) -> list[str]:
    info = data["machine_info"].get("mux_kernels", {})
    commit = data.get("commit_info", {})
    backends = ", ".join(f"{device} → {impl}" for device, impl in info.get("backends", {}).items())
    copy = f"{ops[0]['copy_gbps']:.1f} GB/s" if ops else "not measured"
    load = " / ".join(f"{x:.1f}" for x in info.get("load_average", [])) or "?"
    return [
        "# mux_kernels benchmark report",
        "",
        f"- **Run**: {data.get('datetime', '?')}, mode `{info.get('mode', '?')}`, commit "
        f"`{str(commit.get('id', '?'))[:10]}`{' (uncommitted changes)' if commit.get('dirty') else ''}",
        f"- **Machine**: {info.get('cpu', '?')}, {info.get('logical_cpus', '?')} logical CPUs; "
        f"GPU: {info.get('gpu') or 'none'}; benchmarks ran on `{info.get('device', '?')}`",
        f"- **Versions**: torch {info.get('torch', '?')}, Triton {info.get('triton', '?')}, "
        f"mux_kernels {info.get('mux_kernels', '?')}, Python {data['machine_info'].get('python_version', '?')}",
        f"- **torch threads**: {info.get('threads', '?')}; op backends: {backends}",
        f"- **Load average** (1 min) at start and end: {load}; above the CPU count, other processes shared "
        "the cores and the times are noisier",
        f"- **Copy bandwidth** (2 × 256 MiB on the CPU, 2 × 1 GiB on a GPU; same session): {copy}",
        "",
        "How to read the tables:",
        "",
        "- Times are the median ± interquartile range in ms, after an untimed warm-up that includes any "
        "`torch.compile`. CPU: pytest-benchmark's timer; GPU: `triton.testing.do_bench`.",
        "- `fwd` is the forward of a training step (inputs require grad), `bwd` the backward through a retained "
        "graph, `fwd+bwd` both. The model table is inference (`torch.inference_mode`).",
        "- Providers: `mux_kernels` is the `torch.ops.mux` op (C++ on the CPU, Triton on a GPU); `eager` is "
        "`mux_kernels.reference` (for demultiplex, the reference's concat-then-Linear); `compiled` is "
        "`torch.compile` of it (static shapes); `compiled_factorised` is `torch.compile` of "
        "`reference.demultiplex_factorised`, the stronger baseline.",
        "- GB/s: unavoidable bytes (inputs read once, outputs written once; definitions in each "
        "`benchmarks/bench_*.py`) over the median time of `mux_kernels`; % copy: that over the copy bandwidth. "
        "Cases whose working set fits the last-level cache can exceed 100%. "
        "GFLOP/s counts the least GEMM work the math needs (the factorised demultiplex).",
        "- Peak MiB: memory one call allocates beyond what was allocated before it, per provider in column order.",
        "- Speedup: baseline median / `mux_kernels` median, **bold** where `mux_kernels` is faster.",
        "- The foundation shapes are d=768, L=128, (N, G) ∈ {(2, 16), (5, 16), (10, 8)}; the full sweep has "
        "N ∈ {2, 5, 10, 20}, d ∈ {384, 768, 1024}, L ∈ {128, 512}, with G chosen so that G·N·L ≈ 16k tokens.",
        "- On a shared machine other processes add noise: compare the IQR with the differences you read.",
        "",
    ]


def _ms(case: dict | None) -> str:
    """``median ± IQR`` in ms, both with the decimals that give the median 3 significant digits."""
    if case is None:
        return "—"
    median = case["median_ms"]
    decimals = max(0, 2 - math.floor(math.log10(median))) if median > 0 else 0
    return f"{median:.{decimals}f} ± {case['q3_ms'] - case['q1_ms']:.{decimals}f}"


def _speedup(subject: dict | None, baseline: dict | None) -> str:
    if subject is None or baseline is None:
        return "—"
    ratio = baseline["median_ms"] / subject["median_ms"]
    return f"**{ratio:.2f}×**" if ratio > 1 else f"{ratio:.2f}×"


def _table(header: list[str], rows: list[list[str]], text_columns: int = 0) -> list[str]:
    """A markdown table; the first ``text_columns`` are left-aligned, the rest (numbers) right-aligned."""
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(":---" if i < text_columns else "---:" for i in range(len(header))) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
    ]


def _shape_key(case: dict) -> tuple:
    return case["sweep"] != "foundation", case["d"], case["L"], case["N"], case["G"]


def _table_order(key: tuple) -> tuple:
    _, dtype, sweep, mode = key
    return dtype, sweep != "foundation", list(PASSES).index(mode)


def _op_sections(ops: list[dict], out_dir: Path) -> list[str]:
    tables = defaultdict(lambda: defaultdict(dict))  # (op, dtype, sweep, pass) -> shape -> provider -> case
    for case in ops:
        key = (case["op"], case["dtype"], case["sweep"], case["mode"])
        tables[key][_shape_key(case)][case["provider"]] = case
    dtypes = {case["dtype"] for case in ops}
    lines = []
    for op in dict.fromkeys(case["op"] for case in ops):
        lines += [f"## {op}", ""]
        for key in sorted((k for k in tables if k[0] == op), key=_table_order):
            _, dtype, sweep, mode = key
            shapes = tables[key]
            providers = [p for p in PROVIDERS if any(p in cases for cases in shapes.values())]
            baselines = [p for p in providers if p != SUBJECT]
            with_flops = any(c.get("gflops_per_s") for cases in shapes.values() for c in cases.values())
            header = ["N", "G", "L", "d", *(f"{p} ms" for p in providers), "GB/s", "% copy"]
            header += ["GFLOP/s"] * with_flops + ["peak MiB"] + [f"vs {p}" for p in baselines]
            rows = []
            for shape in sorted(shapes):
                cases = shapes[shape]
                first, subject = next(iter(cases.values())), cases.get(SUBJECT)
                row = [str(first[k]) for k in ("N", "G", "L", "d")] + [_ms(cases.get(p)) for p in providers]
                row += [f"{subject['gbps']:.1f}", f"{100 * subject['copy_fraction']:.0f}%"] if subject else ["—"] * 2
                if with_flops:
                    row.append(f"{subject['gflops_per_s']:.0f}" if subject else "—")
                row.append(" / ".join(f"{cases[p]['peak_mib']:.0f}" if p in cases else "—" for p in providers))
                rows.append(row + [_speedup(subject, cases.get(p)) for p in baselines])
            title = f"### {op} · {PASSES[mode]} · {sweep} shapes" + (f" · {dtype}" if len(dtypes) > 1 else "")
            lines += [title, "", *_table(header, rows)]
        for path in _plot_op(op, [c for c in ops if c["op"] == op], out_dir):
            lines += [f"![{op} speedup]({path.name})", ""]
    return lines


def _model_section(models: list[dict], out_dir: Path) -> list[str]:
    if not models:
        return ["## Models", "", "No model benchmarks in this run (is `mux_kernels.models` importable?).", ""]
    first = models[0]
    lines = [
        "## Models: inference throughput",
        "",
        f"MUX-BERT with hidden size {first['hidden_size']} and {first['num_hidden_layers']} layers; every forward "
        f"sees {first['groups']} multiplexed sequences of {first['seq_len']} tokens (G·N instances). `reference` "
        "is the same model with every `torch.ops.mux` call answered by `mux_kernels.reference`. N× is "
        "`mux_kernels`' throughput over BERT's (N=1): ideally N.",
        "",
    ]
    header = ["task", "demux", "N", "mux_kernels inst/s", "reference inst/s", "vs reference", "N× (vs BERT)"]
    for dtype in sorted({c["dtype"] for c in models}):
        rows = []
        for task, series in _model_series(models, dtype).items():
            bert = series.pop(("BERT", "bert"), {}).get(1)
            if bert:
                rows.append([task, "BERT", "1", f"{bert['instances_per_s']:.1f}", "—", "—", "1.00×"])
            for demux in dict.fromkeys(demux for demux, _ in series):
                mux, ref = series.get((demux, SUBJECT), {}), series.get((demux, "reference"), {})
                for n in sorted(mux.keys() | ref.keys()):
                    rows.append([
                        task, demux, str(n),
                        f"{mux[n]['instances_per_s']:.1f}" if n in mux else "—",
                        f"{ref[n]['instances_per_s']:.1f}" if n in ref else "—",
                        _speedup(mux.get(n), ref.get(n)),
                        f"{mux[n]['instances_per_s'] / bert['instances_per_s']:.2f}×" if n in mux and bert else "—",
                    ])  # fmt: skip
        lines += [f"### {dtype}", "", *_table(header, rows, text_columns=2)]
    for path in _plot_models(models, out_dir):
        lines += [f"![model throughput]({path.name})", ""]
    return lines


def _model_series(models: list[dict], dtype: str) -> dict:
    """task -> (demux, provider) -> N -> case, in run order; plain BERT (N=1) is ("BERT", "bert")."""
    series = defaultdict(lambda: defaultdict(dict))
    for case in models:
        if case["dtype"] == dtype:
            series[case["task"]][(case["demux"] or "BERT", case["provider"])][case["N"]] = case
    return series


# ----------------------------------------------------------------------------------------------
# Plots
# ----------------------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _n_axis(ax, ns) -> None:
    ax.set_xticks(sorted(ns))
    ax.set_xlabel("N (instances multiplexed)")
    ax.grid(alpha=0.3)


def _plot_op(op: str, cases: list[dict], out_dir: Path) -> list[Path]:
    """One PNG per dtype: a row per pass, a column per baseline, a line per shape family (sweep, d, L)."""
    plt = _pyplot()
    paths = []
    dtypes = sorted({c["dtype"] for c in cases})
    for dtype in dtypes:
        keys = ("mode", "provider", "sweep", "d", "L", "N")
        timed = {tuple(c[k] for k in keys): c for c in cases if c["dtype"] == dtype}
        baselines = [p for p in PROVIDERS if p != SUBJECT and any(k[1] == p for k in timed)]
        modes = [m for m in PASSES if any(k[0] == m for k in timed)]
        families = sorted({k[2:5] for k in timed}, key=lambda f: (f[0] != "foundation", f[1], f[2]))
        fig, axes = plt.subplots(len(modes), len(baselines), figsize=(4.2 * len(baselines), 3.2 * len(modes)),
                                 squeeze=False)  # fmt: skip
        for row, mode in enumerate(modes):
            for col, baseline in enumerate(baselines):
                ax = axes[row][col]
                for family in families:
                    points = [
                        (k[5], timed[(mode, baseline, *k[2:])]["median_ms"] / case["median_ms"])
                        for k, case in sorted(timed.items())
                        if k[:2] == (mode, SUBJECT) and k[2:5] == family and (mode, baseline, *k[2:]) in timed
                    ]
                    if points:
                        sweep, d, L = family
                        ax.plot(*zip(*points), marker="o", label=f"d={d} L={L} ({sweep})")
                ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
                ax.set_title(f"{PASSES[mode]}: vs {baseline}", fontsize=10)
                ax.set_ylabel("speedup (×)")
                ax.set_ylim(bottom=0)
                _n_axis(ax, {k[5] for k in timed})
        axes[0][0].legend(fontsize=7)
        fig.suptitle(f"{op} ({dtype}): mux_kernels speedup, faster above the dashed line")
        fig.tight_layout()
        path = out_dir / (f"speedup_{op}.png" if len(dtypes) == 1 else f"speedup_{op}_{dtype}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def _plot_models(models: list[dict], out_dir: Path) -> list[Path]:
    """One PNG per dtype: a panel per task, instances/s against N, and the ideal N × BERT line."""
    plt = _pyplot()
    paths = []
    dtypes = sorted({c["dtype"] for c in models})
    for dtype in dtypes:
        by_task = _model_series(models, dtype)
        fig, axes = plt.subplots(1, len(by_task), figsize=(5.5 * len(by_task), 4), squeeze=False)
        for ax, (task, series) in zip(axes[0], by_task.items()):
            bert = series.pop(("BERT", "bert"), {}).get(1)
            ns = sorted({1} | {n for points in series.values() for n in points})
            if bert:
                ax.plot(ns, [n * bert["instances_per_s"] for n in ns], color="grey", linestyle="--",
                        label="ideal: N × BERT")  # fmt: skip
            colors = dict(zip(dict.fromkeys(demux for demux, _ in series), ("tab:blue", "tab:orange", "tab:green")))
            for (demux, provider), points in series.items():
                xy = ([(1, bert["instances_per_s"])] if bert else []) + [
                    (n, c["instances_per_s"]) for n, c in sorted(points.items())
                ]
                ax.plot(*zip(*xy), marker="o", color=colors[demux], linestyle="-" if provider == SUBJECT else ":",
                        label=f"{demux}, {provider}")  # fmt: skip
            ax.set_title(f"{task} classification ({dtype})", fontsize=10)
            ax.set_ylabel("instances / s")
            ax.set_ylim(bottom=0)
            _n_axis(ax, ns)
            ax.legend(fontsize=7)
        fig.tight_layout()
        path = out_dir / ("model_throughput.png" if len(dtypes) == 1 else f"model_throughput_{dtype}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths
