#!/usr/bin/env bash
# Fifth experiment session (issue 5), beside run_experiment_4.sh: distillation. The N = 2 student is
# fine-tuned exactly as finetune_mean_n2_mlm (from the sentiment-MLM checkpoint, retrieval term 0.1),
# except that its targets mix in the N = 1 model's class probabilities (--teacher
# runs/finetune_mean_n1, 80.9 % test; --distill-weight 0.3). Starts when finetune_mean_n2_ret has
# finished, so that two runs share the two cores.
set -u
. "$(dirname "$0")/experiment_lib.sh"
COMMON="--data-dir data/cache --no-progress --seed 0 --threads 1"
until finished finetune_mean_n2_ret; do sleep 30; done
run finetune_mean_n2_mlm_kd --stage finetune --init runs/mlm_n2_sentiment --classifier-pooling mean \
  --dataset sentiment --output-dir runs/finetune_mean_n2_mlm_kd --batch-size 16 --lr 1e-4 --warmup-ratio 0.06 \
  --max-steps 1400 --max-minutes 50 --eval-every 100 --max-eval-rows 400 --test-split test \
  --retrieval-coeff 0.1 --teacher runs/finetune_mean_n1 --distill-weight 0.3 $COMMON
