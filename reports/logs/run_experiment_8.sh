#!/usr/bin/env bash
# Eighth experiment session (issue 5): feature distillation. The N = 2 student (from the sentiment-MLM
# checkpoint, the best start so far) learns the N = 1 teacher's pooled features (the 384-d mean of its
# token states its classifier reads) besides the gold labels: --feature-distill-weight W adds
# W * MSE(student features, teacher features); --distill-weight 0 keeps the labels hard. Two weights
# side by side, one thread each; otherwise the recipe of finetune_mean_n2_mlm.
set -u
. "$(dirname "$0")/experiment_lib.sh"
COMMON="--data-dir data/cache --no-progress --seed 0 --threads 1"
RECIPE="--stage finetune --init runs/mlm_n2_sentiment --classifier-pooling mean --dataset sentiment \
  --batch-size 16 --lr 1e-4 --warmup-ratio 0.06 --max-steps 1400 --max-minutes 60 --eval-every 100 \
  --max-eval-rows 400 --test-split test --retrieval-coeff 0.1 --teacher runs/finetune_mean_n1 --distill-weight 0"
run finetune_mean_n2_feat1 $RECIPE --feature-distill-weight 1 --output-dir runs/finetune_mean_n2_feat1 $COMMON &
run finetune_mean_n2_feat4 $RECIPE --feature-distill-weight 4 --output-dir runs/finetune_mean_n2_feat4 $COMMON &
wait
