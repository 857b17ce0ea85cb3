#!/usr/bin/env bash
# Third experiment session (issue 5): sentiment fine-tuning with classifier_pooling="mean" (the
# mean of each instance's demultiplexed token states) at N = 1, 2, 5, after the [CLS] recipe of
# run_experiment_2.sh stayed at the majority class at N = 2 (the encoder's [CLS] output did not depend on
# the input after priming). One thread per run, two chains side by side:
#   reports/logs/run_experiment_3.sh low-n    N = 2, then N = 1 (after run_experiment_2's N = 1 run),
#                                             then a second and a third N = 2 leg
#   reports/logs/run_experiment_3.sh n5       N = 5, once prime_n5_long has finished
set -u
. "$(dirname "$0")/experiment_lib.sh"
COMMON="--data-dir data/cache --no-progress --seed 0 --threads 1"
finetune_mean() {  # name, minutes, steps, init arguments...
  local name=$1 minutes=$2 steps=$3; shift 3
  run $name --stage finetune "$@" --classifier-pooling mean --dataset sentiment --output-dir runs/$name \
    --batch-size 16 --lr 1e-4 --warmup-ratio 0.06 --max-steps $steps --max-minutes $minutes \
    --eval-every 100 --max-eval-rows 400 --test-split test $COMMON
}
wait_for() { until finished "$1"; do sleep 30; done; }
case $1 in
  low-n)
    wait_for finetune_n1_long
    finetune_mean finetune_mean_n2 25 600 --init runs/prime_n2_more
    finetune_mean finetune_mean_n1 20 600 --init-bert $MINILM --num-instances 1
    # N = 2 was still climbing when its linear decay ended (63 % val at step 300): a second leg.
    run finetune_mean_n2_more --stage finetune --init runs/finetune_mean_n2 --classifier-pooling mean \
      --dataset sentiment --output-dir runs/finetune_mean_n2_more --batch-size 16 --lr 2e-4 --warmup-ratio 0.06 \
      --max-steps 800 --max-minutes 25 --eval-every 100 --max-eval-rows 400 --test-split test $COMMON
    # Still climbing (val 72 -> 75 % over the last 400 steps): a third leg at the first leg's lr.
    run finetune_mean_n2_third --stage finetune --init runs/finetune_mean_n2_more --classifier-pooling mean \
      --dataset sentiment --output-dir runs/finetune_mean_n2_third --batch-size 16 --lr 1e-4 --warmup-ratio 0.06 \
      --max-steps 800 --max-minutes 40 --eval-every 100 --max-eval-rows 400 --test-split test $COMMON ;;
  n5)
    wait_for prime_n5_long
    finetune_mean finetune_mean_n5 25 600 --init runs/prime_n5_long ;;
esac
