"""Greedy weight averaging ("model soup", Wortsman et al. 2022) of fine-tuned N = 2 sentiment models
that share an initialisation (reports/training.md, session 3).

``python reports/logs/soup.py OUT RUN_DIR ...`` from the repository root: the runs are ranked by their
accuracy on the first 400 val snippets (the evaluation set of the runs themselves); starting from the
best, each next model is kept in the uniform average only if it raises that val accuracy. The soup
is saved to OUT with ``save_pretrained`` and scored once on the test split. One model, so the same
inference cost as any of them.
"""

import json
import sys

import torch

from mux_kernels.models import from_pretrained
from mux_kernels.training.data import load_split, load_token_ids
from mux_kernels.training.objectives import ClassificationCollator
from mux_kernels.training.trainer import Trainer, TrainingArguments

torch.set_num_threads(2)
out, run_dirs = sys.argv[1], sys.argv[2:]
val = load_split("data/cache", "sentiment", "val")
test = load_split("data/cache", "sentiment", "test")
collate = ClassificationCollator(load_token_ids("data/cache"))


def scorer(model):
    return Trainer(model, collate, val, TrainingArguments(output_dir="/tmp/soup_eval", batch_size=16, seed=0))


def val_accuracy(model) -> float:
    return scorer(model).evaluate(val, max_rows=400)["accuracy"]


models = {d: from_pretrained(d) for d in run_dirs}
ranked = sorted(run_dirs, key=lambda d: -val_accuracy(models[d]))
chosen = [ranked[0]]
soup = from_pretrained(ranked[0])
best = val_accuracy(soup)
report = {"ranked": ranked, "steps": [{"soup": list(chosen), "val": best}]}
for candidate in ranked[1:]:
    states = [models[d].state_dict() for d in chosen + [candidate]]
    trial = from_pretrained(ranked[0])
    trial.load_state_dict({k: sum(s[k].float() for s in states) / len(states) for k in states[0]})
    accuracy = val_accuracy(trial)
    report["steps"].append({"soup": chosen + [candidate], "val": accuracy})
    if accuracy > best:
        chosen, soup, best = chosen + [candidate], trial, accuracy
soup.save_pretrained(out)
report.update(chosen=chosen, val=best, test=scorer(soup).evaluate(test)["accuracy"])
print(json.dumps(report, indent=1))
