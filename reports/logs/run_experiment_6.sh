#!/usr/bin/env bash
# Sixth experiment session (issue 5): a second, lower-lr leg for the best N = 2 model so far,
# finetune_mean_n2_mlm (75.4 % test; its first leg was cut by --max-minutes at step 1,266 of 1,400,
# before its linear decay ended). Same recipe, lr 5e-5, 600 steps.
set -u
. "$(dirname "$0")/experiment_lib.sh"
COMMON="--data-dir data/cache --no-progress --seed 0 --threads 1"
run finetune_mean_n2_mlm_more --stage finetune --init runs/finetune_mean_n2_mlm --classifier-pooling mean \
  --dataset sentiment --output-dir runs/finetune_mean_n2_mlm_more --batch-size 16 --lr 5e-5 --warmup-ratio 0.06 \
  --max-steps 600 --max-minutes 25 --eval-every 100 --max-eval-rows 400 --test-split test \
  --retrieval-coeff 0.1 $COMMON
