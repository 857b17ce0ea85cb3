"""Inference throughput of the fine-tuned sentiment models per N (reports/training.md).

Run from the repository root after the fine-tuning runs:
``python reports/logs/measure_throughput.py [RUN_DIR ...]`` (default: ``runs/finetune_n{1,2,5}``).
Forward only, eval mode, no labels, fp32, batches of 16 multiplexed sequences (16·N snippets) from
the sentiment test set, each trimmed to its longest snippet. The N values are measured in
interleaved rounds, so that the other jobs sharing the CPU slow every N alike; the median is reported.
"""

import json
import statistics
import sys
import time

import torch

from mux_kernels.models import from_pretrained
from mux_kernels.training.data import load_split
from mux_kernels.training.objectives import trim_padding

GROUPS, ROWS, ROUNDS = 16, 480, 5
test = load_split("data/cache", "sentiment", "test")["input_ids"][:ROWS]
run_dirs = sys.argv[1:] or [f"runs/finetune_n{n}" for n in (1, 2, 5)]
models = {model.config.num_instances: model.eval() for model in map(from_pretrained, run_dirs)}
rounds: dict[int, list[float]] = {n: [] for n in models}
with torch.inference_mode():
    for _ in range(ROUNDS):
        for n, model in models.items():
            start = time.perf_counter()
            for i in range(0, ROWS, GROUPS * n):
                ids = test[i : i + GROUPS * n]
                ids = ids[:, : trim_padding(ids, 0)]
                model(ids, attention_mask=(ids != 0).long())
            rounds[n].append(round(ROWS / (time.perf_counter() - start), 1))
print(json.dumps({n: {"median_rows_per_s": statistics.median(r), "rounds": r} for n, r in rounds.items()}))
