#!/usr/bin/env bash
# Fourteenth (issue 5): the N = 2 models score no better beside an empty partner than beside another
# snippet (interference.py), so the loss is not the superposition itself. One difference from N = 1:
# the multiplexed encoder, like the reference, attends to padding (padding_aware false), while N = 1
# masks it. The fine-tuning of run_experiment_13.sh from the step-10,000 MLM checkpoint with the
# encoder given the multiplexed padding mask (config padding_aware: true), two threads.
set -u
. "$(dirname "$0")/experiment_lib.sh"
INIT=runs/mlm_n2_mix_at10000_padaware
[ -d $INIT ] || { mkdir -p $INIT && cp runs/mlm_n2_mix_at10000/model.safetensors $INIT/ && python -c "
import json; c = json.load(open('runs/mlm_n2_mix_at10000/config.json')); c['padding_aware'] = True
json.dump(c, open('$INIT/config.json', 'w'), indent=2)"; }
run finetune_mean_n2_padaware --stage finetune --init $INIT --classifier-pooling mean \
  --dataset sentiment --batch-size 16 --lr 1e-4 --warmup-ratio 0.06 --max-steps 1400 --max-minutes 40 \
  --eval-every 100 --max-eval-rows 400 --test-split test --retrieval-coeff 0.1 \
  --output-dir runs/finetune_mean_n2_padaware --data-dir data/cache --no-progress --seed 0 --threads 2
python reports/logs/full_val.py runs/finetune_mean_n2_padaware >> reports/logs/full_val.out
python reports/logs/interference.py runs/finetune_mean_n2_padaware >> reports/logs/interference.out
