#!/usr/bin/env bash
# Fourth experiment session (issue 5): closing the N = 2 sentiment gap (74.0 % vs 80.9 % at N = 1;
# the N = 2 model overfits by the third leg). Two chains side by side, one thread each:
#   reports/logs/run_experiment_4.sh mlm   stage 2 (masked LM, 15 %, 80/10/10, retrieval head on every
#                                          instance) at N = 2 on the sentiment *train* texts (labels
#                                          unused), from prime_n2_more, then mean-pooled fine-tuning
#   reports/logs/run_experiment_4.sh ret   mean-pooled fine-tuning from prime_n2_more with the
#                                          retrieval term (coefficient 0.1) as a regulariser
set -u
. "$(dirname "$0")/experiment_lib.sh"
COMMON="--data-dir data/cache --no-progress --seed 0 --threads 1"
finetune_mean() {  # name, minutes, steps, init, extra arguments...
  local name=$1 minutes=$2 steps=$3 init=$4; shift 4
  run $name --stage finetune --init $init --classifier-pooling mean --dataset sentiment \
    --output-dir runs/$name --batch-size 16 --lr 1e-4 --warmup-ratio 0.06 --max-steps $steps \
    --max-minutes $minutes --eval-every 100 --max-eval-rows 400 --test-split test "$@" $COMMON
}
case $1 in
  mlm)
    run mlm_n2_sentiment --stage mlm --init runs/prime_n2_more --dataset sentiment --output-dir runs/mlm_n2_sentiment \
      --batch-size 16 --lr 1e-4 --warmup-ratio 0.05 --max-steps 800 --max-minutes 30 --eval-every 200 \
      --max-eval-rows 400 --freeze-embeddings $COMMON
    finetune_mean finetune_mean_n2_mlm 45 1400 runs/mlm_n2_sentiment --retrieval-coeff 0.1 ;;
  ret)
    finetune_mean finetune_mean_n2_ret 40 1400 runs/prime_n2_more --retrieval-coeff 0.1 ;;
esac
