"""CPU inference throughput of MUX-BERT against the N = 1 plain BERT, as a Markdown table.

    python benchmarks/model_throughput.py            # 32 muxed sequences per forward, 5 timed forwards
    python benchmarks/model_throughput.py --quick    # 8 muxed sequences, 3 timed forwards

"small" config (d 512, 4 layers, 8 heads, FFN 2048, V 30522), L = 128, fp32, 2 threads, eval and
``inference_mode``. Every forward holds G multiplexed sequences, i.e. G·N instances (the MUX-PLMs
protocol, SPEC §6.3); the N = 1 baseline (HF-style BERT with pooler and padding mask) gets G
sequences. Instances carry a padded tail. Models are timed round-robin, so background load hits
all of them alike, and each reports its fastest forward (the one least disturbed by other load),
both in wall-clock time and in CPU time of this process (all its threads): on a machine shared
with other jobs the wall clock measures the neighbours as much as the model, CPU time far less.

Allocator. glibc's malloc hands every block over 32 MiB to mmap and unmaps it on free, so each
forward page-faults its wide activations in again: at N = 10 that is ~30% of a token-classification
forward, for the muxed models and the baseline alike. Serving setups avoid it with jemalloc or
tcmalloc (PyTorch's CPU launcher ``torch.backends.xeon.run_cpu`` preloads one); by default this
script re-runs itself with the same effect from glibc alone (``GLIBC_TUNABLES``: freed memory is kept
for reuse). ``--allocator default`` measures the untuned malloc.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import torch

from mux_kernels.models import MuxBertConfig, MuxBertForSequenceClassification, MuxBertForTokenClassification

SMALL = dict(vocab_size=30522, hidden_size=512, num_hidden_layers=4, num_attention_heads=8, intermediate_size=2048)
SEQ_LEN = 128
NUM_LABELS = 3
TASKS = {"seq-cls": MuxBertForSequenceClassification, "token-cls": MuxBertForTokenClassification}
DEMUXERS = ("index_pos", "index")
INSTANCES = (2, 5, 10)
# Speedup targets over N = 1 for N = 2 / 5 / 10 (the acceptance numbers).
TARGETS = {
    ("seq-cls", "index_pos"): (1.9, 4.75, 9.5),
    ("seq-cls", "index"): (1.85, 4.6, 8.7),
    ("token-cls", "index_pos"): (1.75, 3.9, 6.7),
    ("token-cls", "index"): (1.75, 4.4, 8.3),
}


def batch(rows: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """[CLS] + random word ids + [SEP], real lengths 64..128, padded tail."""
    ids = torch.randint(1000, 30000, (rows, SEQ_LEN), generator=generator)
    lengths = torch.randint(SEQ_LEN // 2, SEQ_LEN + 1, (rows,), generator=generator)
    mask = (torch.arange(SEQ_LEN)[None] < lengths[:, None]).long()
    ids[:, 0] = 101
    ids[torch.arange(rows), lengths - 1] = 102
    return ids.masked_fill(mask == 0, 0), mask


# Keep freed blocks in the heap for reuse instead of returning them to the OS (see the docstring).
REUSE_TUNABLES = "glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=17179869184"


def use_allocator(choice: str) -> str:
    """Re-executes this script with glibc tuned for memory reuse when asked for and not yet done;
    returns a line saying which allocator runs."""
    if choice == "default":
        return "glibc malloc, default settings"
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return "the platform's malloc (memory-reuse tuning is glibc-only)"
    if os.environ.get("GLIBC_TUNABLES") != REUSE_TUNABLES:
        os.execve(sys.executable, [sys.executable, *sys.argv], dict(os.environ, GLIBC_TUNABLES=REUSE_TUNABLES))
    return f"glibc malloc with GLIBC_TUNABLES={REUSE_TUNABLES}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="8 muxed sequences per forward, 3 timed forwards")
    parser.add_argument("--groups", type=int, help="muxed sequences per forward (default 32, quick 8)")
    parser.add_argument("--forwards", type=int, help="timed forwards per model (default 5, quick 3)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--allocator", choices=("reuse", "default"), default="reuse",
                        help="reuse: glibc keeps freed memory (as jemalloc/tcmalloc do); default: untuned malloc")
    args = parser.parse_args()
    allocator = use_allocator(args.allocator)
    groups = args.groups or (8 if args.quick else 32)
    forwards = args.forwards or (3 if args.quick else 5)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)

    cases = {}  # (task, demux, N) -> (model, ids, mask)
    for task, model_class in TASKS.items():
        for demux, N in [(None, 1)] + [(d, n) for d in DEMUXERS for n in INSTANCES]:
            config = MuxBertConfig(
                **SMALL, num_labels=NUM_LABELS, num_instances=N, demuxing_variant=demux or "index_pos"
            )
            cases[(task, demux, N)] = (model_class(config).eval(), *batch(groups * N, generator))

    wall: dict[tuple, list[float]] = {key: [] for key in cases}
    cpu: dict[tuple, list[float]] = {key: [] for key in cases}
    with torch.inference_mode():
        for repetition in range(forwards + 1):  # the first round warms up
            for key, (model, ids, mask) in cases.items():
                wall_start, cpu_start = time.perf_counter(), time.process_time()
                model(ids, attention_mask=mask)
                if repetition:
                    wall[key].append(time.perf_counter() - wall_start)
                    cpu[key].append(time.process_time() - cpu_start)

    def per_second(times: dict[tuple, list[float]]) -> dict[tuple, float]:
        return {key: ids.shape[0] / min(times[key]) for key, (_, ids, _) in cases.items()}

    wall_rate, cpu_rate = per_second(wall), per_second(cpu)
    print(f"torch {torch.__version__}, {args.threads} threads, fp32, L={SEQ_LEN}, small config, "
          f"{groups} muxed sequences per forward, fastest of {forwards} forwards; allocator: {allocator}\n")
    print("| task | demux | N | instances/s (wall) | speedup (wall) | instances per CPU-s | speedup (CPU) | target |")
    print("|---|---|---|---|---|---|---|---|")
    for task in TASKS:
        rows = [(None, 1, "")] + [(d, n, t) for d in DEMUXERS for n, t in zip(INSTANCES, TARGETS[(task, d)])]
        for demux, N, target in rows:
            key, base = (task, demux, N), (task, None, 1)
            print(f"| {task} | {demux or 'plain BERT'} | {N} | {wall_rate[key]:.1f} | "
                  f"{wall_rate[key] / wall_rate[base]:.2f} | {cpu_rate[key]:.1f} | "
                  f"{cpu_rate[key] / cpu_rate[base]:.2f} | {target} |")


if __name__ == "__main__":
    main()
