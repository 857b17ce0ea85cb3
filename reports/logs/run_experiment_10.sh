#!/usr/bin/env bash
# Tenth (issue 5): pooled feature distillation at weights 1-64 all scored 74.0-74.6 % on test
# (run_experiment_8.sh, _9.sh), so the per-token version: the student's demultiplexed token states
# learn the teacher's final token states (--feature-distill-level token, weight 4). Beside it, the
# N = 1 baseline again with another seed, to see how much of the gap is the baseline's own spread.
set -u
. "$(dirname "$0")/experiment_lib.sh"
COMMON="--data-dir data/cache --no-progress --threads 1"
run finetune_mean_n2_tok4 --stage finetune --init runs/mlm_n2_sentiment --classifier-pooling mean \
  --dataset sentiment --batch-size 16 --lr 1e-4 --warmup-ratio 0.06 --max-steps 1400 --max-minutes 60 \
  --eval-every 100 --max-eval-rows 400 --test-split test --retrieval-coeff 0.1 --teacher runs/finetune_mean_n1 \
  --distill-weight 0 --feature-distill-weight 4 --feature-distill-level token \
  --output-dir runs/finetune_mean_n2_tok4 --seed 0 $COMMON &
run finetune_mean_n1_seed1 --stage finetune --init-bert $MINILM --num-instances 1 --classifier-pooling mean \
  --dataset sentiment --batch-size 16 --lr 1e-4 --warmup-ratio 0.06 --max-steps 600 --max-minutes 40 \
  --eval-every 100 --max-eval-rows 400 --test-split test --output-dir runs/finetune_mean_n1_seed1 --seed 1 $COMMON &
wait
