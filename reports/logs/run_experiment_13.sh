#!/usr/bin/env bash
# Thirteenth (issue 5): does more masked-LM at N = 2 move the sentiment score? Copies the long MLM
# run's current checkpoint (run_experiment_12.sh, runs/mlm_n2_mix/checkpoint) to runs/mlm_n2_mix_at<step>
# and fine-tunes it with the recipe of finetune_mean_n2_mlm (seed ${SEED:-0}), as
# runs/finetune_mean_n2_mix<step>[_seed<SEED>]. Run it at several points of the MLM run.
set -u
. "$(dirname "$0")/experiment_lib.sh"
SEED=${SEED:-0}
STEP=$(python -c "import torch; print(torch.load('runs/mlm_n2_mix/checkpoint/trainer_state.pt', weights_only=False)['step'])")
SNAPSHOT=runs/mlm_n2_mix_at$STEP
[ -d $SNAPSHOT ] || { mkdir -p $SNAPSHOT && cp runs/mlm_n2_mix/checkpoint/{config.json,model.safetensors} $SNAPSHOT/; }
NAME=finetune_mean_n2_mix$STEP$([ "$SEED" = 0 ] || echo _seed$SEED)
run $NAME --stage finetune --init $SNAPSHOT --classifier-pooling mean \
  --dataset sentiment --batch-size 16 --lr 1e-4 --warmup-ratio 0.06 --max-steps 1400 --max-minutes 60 \
  --eval-every 100 --max-eval-rows 400 --test-split test --retrieval-coeff 0.1 \
  --output-dir runs/$NAME --data-dir data/cache --no-progress --seed $SEED --threads ${THREADS:-1}
python reports/logs/full_val.py runs/$NAME >> reports/logs/full_val.out
