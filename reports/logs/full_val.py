"""Accuracy of fine-tuned sentiment models on the whole val split and the whole test split.

python reports/logs/full_val.py runs/A runs/B ...  (N from each checkpoint; rows grouped in order,
the largest multiple of N scored, as the trainer's test evaluation does)."""
import sys

import torch

from mux_kernels.training.data import load_split
from mux_kernels.training.objectives import trim_padding
from mux_kernels.training.stages import load_model

torch.set_num_threads(1)


@torch.no_grad()
def accuracy(model, split: str, batch_groups: int = 16) -> float:
    data = load_split("data/cache", "sentiment", split)
    N = model.config.num_instances
    rows = len(data["input_ids"]) // N * N
    correct = 0
    for start in range(0, rows, batch_groups * N):
        ids = data["input_ids"][start : min(start + batch_groups * N, rows)]
        ids = ids[:, : trim_padding(ids, 0)]
        logits = model(input_ids=ids, attention_mask=(ids != 0).long()).logits
        correct += int((logits.argmax(-1) == data["labels"][start : start + len(ids)]).sum())
    return 100 * correct / rows


for path in sys.argv[1:]:
    model = load_model("finetune", init=path).eval()
    print(f"{path}: val {accuracy(model, 'val'):.1f} % test {accuracy(model, 'test'):.1f} %", flush=True)
