"""Where the N = 2 sentiment models lose accuracy: each test snippet scored (a) beside another test
snippet, as in the test split; (b) beside a copy of itself; (c) beside an empty snippet ([CLS] [SEP]).

python reports/logs/interference.py runs/A runs/B ...   (N = 2 checkpoints; output interference.out)"""
import sys

import torch

from mux_kernels.training.data import load_split
from mux_kernels.training.objectives import trim_padding
from mux_kernels.training.stages import load_model

torch.set_num_threads(2)


@torch.no_grad()
def accuracy(model, ids: torch.Tensor, labels: torch.Tensor, partner: str, batch_groups: int = 32) -> float:
    """Accuracy on slot 0's snippets (both slots for "pairs"), grouped with the given partner."""
    if partner == "pairs":
        rows = len(ids) // 2 * 2
        ids, labels, grouped = ids[:rows], labels[:rows], ids[:rows]
    else:
        other = ids.clone() if partner == "self" else torch.zeros_like(ids)
        if partner == "empty":
            other[:, 0], other[:, 1] = ids[:, 0], 102  # [CLS] [SEP]
        grouped = torch.stack([ids, other], 1).flatten(0, 1)
    correct = scored = 0
    for start in range(0, len(grouped), batch_groups * 2):
        batch = grouped[start : start + batch_groups * 2]
        batch = batch[:, : trim_padding(batch, 0)]
        predicted = model(input_ids=batch, attention_mask=(batch != 0).long()).logits.argmax(-1)
        gold = labels[start : start + len(batch)] if partner == "pairs" else labels[start // 2 : start // 2 + len(batch) // 2]
        if partner != "pairs":
            predicted = predicted[0::2]
        correct += int((predicted == gold).sum())
        scored += len(gold)
    return 100 * correct / scored


test = load_split("data/cache", "sentiment", "test")
for path in sys.argv[1:]:
    model = load_model("finetune", init=path).eval()
    scores = {p: accuracy(model, test["input_ids"], test["labels"], p) for p in ("pairs", "self", "empty")}
    print(path + ": " + ", ".join(f"{p} {s:.1f} %" for p, s in scores.items()), flush=True)
