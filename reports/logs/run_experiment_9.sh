#!/usr/bin/env bash
# Ninth (issue 5): feature distillation helped more at weight 4 than at 1 (run_experiment_8.sh), so
# heavier weights, 16 and 64, the same recipe otherwise; started when both runs of the eighth end.
set -u
. "$(dirname "$0")/experiment_lib.sh"
until finished finetune_mean_n2_feat1 && finished finetune_mean_n2_feat4; do sleep 20; done
COMMON="--data-dir data/cache --no-progress --seed 0 --threads 1"
RECIPE="--stage finetune --init runs/mlm_n2_sentiment --classifier-pooling mean --dataset sentiment \
  --batch-size 16 --lr 1e-4 --warmup-ratio 0.06 --max-steps 1400 --max-minutes 60 --eval-every 100 \
  --max-eval-rows 400 --test-split test --retrieval-coeff 0.1 --teacher runs/finetune_mean_n1 --distill-weight 0"
run finetune_mean_n2_feat16 $RECIPE --feature-distill-weight 16 --output-dir runs/finetune_mean_n2_feat16 $COMMON &
run finetune_mean_n2_feat64 $RECIPE --feature-distill-weight 64 --output-dir runs/finetune_mean_n2_feat64 $COMMON &
wait
