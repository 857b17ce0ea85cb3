#!/usr/bin/env bash
# Twelfth (issue 5), for the next sessions: the MLM stage is the one change that ever moved the N = 2
# sentiment score, and it is far from converged. A long MLM run at N = 2 on BBC News + the sentiment
# train texts (make_mlm_mix.py), from mlm_n2_sentiment_more, linear decay over 20k steps, a checkpoint
# every 200 steps: each session runs it as long as it can and the next resumes (--resume).
set -u
. "$(dirname "$0")/experiment_lib.sh"
[ -f data/cache/mlmmix_train.pt ] || python reports/logs/make_mlm_mix.py data/cache
echo "=== mlm_n2_mix (re)start $(date -u +%FT%TZ)" >> reports/logs/timeline.txt
python -m mux_kernels.train --stage mlm --init runs/mlm_n2_sentiment_more --dataset mlmmix \
  --output-dir runs/mlm_n2_mix --batch-size 16 --lr 1e-4 --warmup-ratio 0.01 --max-steps 20000 \
  --eval-every 1000 --save-every 200 --max-eval-rows 400 --freeze-embeddings --resume \
  --data-dir data/cache --no-progress --seed 0 --threads ${THREADS:-1} >> reports/logs/mlm_n2_mix.log 2>&1
rc=$?
echo "=== mlm_n2_mix stop $(date -u +%FT%TZ) rc=$rc" >> reports/logs/timeline.txt
