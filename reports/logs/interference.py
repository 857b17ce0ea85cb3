"""Where the N = 2 sentiment models lose accuracy: each test snippet scored (a) beside another test
snippet, as in the test split; (b) beside a copy of itself; (c) beside an empty snippet ([CLS] [SEP]).

python reports/logs/interference.py runs/A runs/B ...   (N = 2 checkpoints; output interference.out)"""
import sys

import torch

from mux_kernels.training.data import load_split
from mux_kernels.training.objectives import trim_padding
from mux_kernels.training.stages import load_model

torch.set_num_threads(2)


def grouped_with(ids: torch.Tensor, labels: torch.Tensor, partner: str):
    """The rows as the model sees them (consecutive pairs are a group), their labels, and which are scored."""
    if partner == "pairs":
        rows = len(ids) // 2 * 2
        return ids[:rows], labels[:rows], torch.ones(rows, dtype=torch.bool)
    other = ids.clone() if partner == "self" else torch.zeros_like(ids)
    if partner == "empty":
        other[:, 0], other[:, 1] = ids[:, 0], 102  # [CLS] [SEP]
    scored = torch.tensor([True, False]).repeat(len(ids))  # slot 0: the snippet; slot 1: its partner
    return torch.stack([ids, other], 1).flatten(0, 1), labels.repeat_interleave(2), scored


@torch.no_grad()
def accuracy(model, ids: torch.Tensor, labels: torch.Tensor, partner: str, batch_groups: int = 32) -> float:
    grouped, gold, scored = grouped_with(ids, labels, partner)
    correct = 0
    for start in range(0, len(grouped), batch_groups * 2):
        batch = grouped[start : start + batch_groups * 2]
        batch = batch[:, : trim_padding(batch, 0)]
        predicted = model(input_ids=batch, attention_mask=(batch != 0).long()).logits.argmax(-1)
        rows = slice(start, start + len(batch))
        correct += int(((predicted == gold[rows]) & scored[rows]).sum())
    return 100 * correct / int(scored.sum())


test = load_split("data/cache", "sentiment", "test")
for path in sys.argv[1:]:
    model = load_model("finetune", init=path).eval()
    scores = {p: accuracy(model, test["input_ids"], test["labels"], p) for p in ("pairs", "self", "empty")}
    print(path + ": " + ", ".join(f"{p} {s:.1f} %" for p, s in scores.items()), flush=True)
