"""The masked-LM corpus of run_experiment_12.sh: BBC News chunks and sentiment snippets (labels
dropped), train with train and val with val (no test snippet), as data/cache/mlmmix_{train,val}.pt.

python reports/logs/make_mlm_mix.py [data/cache]
"""
import sys

import torch

from mux_kernels.training.data import load_split, save_split

cache = sys.argv[1] if len(sys.argv) > 1 else "data/cache"
for split in ("train", "val"):
    ids = torch.cat([load_split(cache, name, split)["input_ids"] for name in ("bbc", "sentiment")])
    print(split, tuple(ids.shape), save_split(cache, "mlmmix", split, ids))
