#!/usr/bin/env bash
# Balancer leaderboard at a REDUCED budget (no paper's protocol): every balancer YAML under
# conf/balancer × SEEDS, hard sharing on mnist3 (LeNet+BN) and on CoNLL-2003 (CNN-BiLSTM), then
# one leaderboard per set-up (mtlrun-report OUT/<set-up> --table leaderboard):
#   MTLRUN_DATA=../shared/data scripts/leaderboard_balancers.sh
#   BALANCERS="equal mgda upgrad" SEEDS="0 1" DATA=mnist3 scripts/leaderboard_balancers.sh trainer.max_epochs=1
# The budget of one run (one CPU thread of a busy two-core box: mnist3 ~45 s, nash_mtl ~100 s;
# CoNLL ~60 s for equal, ~2 min for per-block balancers, nash_mtl ~3 min):
#   mnist3: experiment=thesis_fig6 data.limit_train=6000 data.limit_eval=1000 trainer.max_epochs=3
#   conll:  experiment=conll_hard data.limit_train=3000 data.limit_eval=1000 trainer.max_epochs=3
# both with trainer.patience=null notes=reduced, and balancer.kkt_every=0 where the balancer has
# that key, so that wall times compare the balancers, not the Pareto-stationarity monitor.
# DATA=mnist3|conll|both (default both); SEEDS (default "0 1 2"); BALANCERS (default: every
# conf/balancer YAML); OUT (default outputs/leaderboard/<stamp>): runs in OUT/<set-up>/<balancer>/
# seed<N>, their console output in OUT/<set-up>/logs/. Extra arguments go to every run after the
# budget, so they win. A balancer a set-up refuses (mgda_ub and balancer.on=z on mnist3, whose
# tasks share no input) is skipped with a note; any other failure is reported and the script goes
# on. Without KMNIST's training images under MTLRUN_DATA, mnist3 builds KMNIST from its test set
# (data.missing_train=split_test, recorded as a deviation).
here=$(cd "$(dirname "$0")" && pwd)
source "$here/_reproduce_common.sh"
OUT=${OUT:-outputs/leaderboard/$stamp}
DATA=${DATA:-both}
SEEDS=${SEEDS:-0 1 2}
if [ -z "${BALANCERS:-}" ]; then
  BALANCERS=$(for f in "$here"/../conf/balancer/*.yaml; do basename "$f" .yaml; done)
fi
case "$DATA" in
  mnist3|conll) setups=("$DATA") ;;
  both) setups=(mnist3 conll) ;;
  *) echo "DATA should be mnist3, conll or both. Found DATA=$DATA" >&2; exit 2 ;;
esac
common=(trainer.patience=null notes=reduced trainer.progress=false)

# budget_for <set-up>: the set-up's experiment and its reduced budget.
budget_for() {
  case "$1" in
    mnist3) echo "experiment=thesis_fig6 data.limit_train=6000 data.limit_eval=1000 trainer.max_epochs=3 $(mnist3_fallback)" ;;
    conll) echo "experiment=conll_hard data.limit_train=3000 data.limit_eval=1000 trainer.max_epochs=3" ;;
  esac
}

# monitor_off <balancer>: balancer.kkt_every=0 when the balancer's config has that key (and
# balancer.<phase>.kkt_every=0 for each phase of a hybrid that has it).
monitor_off() {
  local cfg phase
  cfg=$($MTLRUN "balancer=$1" --cfg job --package balancer 2>/dev/null) || cfg=""
  if grep -q '^kkt_every:' <<<"$cfg"; then echo "balancer.kkt_every=0"; fi
  for phase in first then; do
    if awk -v p="$phase:" '$0 == p {f = 1; next} /^[^ ]/ {f = 0} f && /^  kkt_every:/ {n++}
                           END {exit n ? 0 : 1}' <<<"$cfg"; then
      echo "balancer.$phase.kkt_every=0"
    fi
  done
}

# run_seed <set-up> <balancer> <seed> [overrides...]: one run; returns 2 when the set-up refuses
# the balancer (mtlrun's "invalid configuration"), 0 otherwise (a failure is reported only).
run_seed() {
  local setup=$1 b=$2 seed=$3; shift 3
  local dir="$OUT/$setup/$b/seed$seed" log="$OUT/$setup/logs/$b.seed$seed.log"
  local rc=0 start=$SECONDS
  mkdir -p "$(dirname "$log")"
  echo "== $setup balancer=$b trainer.seed=$seed"
  $MTLRUN "hydra.run.dir=$dir" "$@" "balancer=$b" "trainer.seed=$seed" >"$log" 2>&1 || rc=$?
  if [ "$rc" = 0 ]; then
    echo "   done in $((SECONDS - start)) s"
  elif [ "$rc" = 2 ] && grep -q "invalid configuration" "$log"; then
    echo "-- skipped balancer=$b on $setup: the set-up refuses it"
    grep '^  - ' "$log" | sed 's/^/   /' || true
    return 2
  elif [ "$rc" = 3 ]; then
    echo "!! balancer=$b seed $seed diverged (the leaderboard lists it apart); see $dir"
  else
    echo "!! balancer=$b seed $seed failed (exit $rc); see $log"
  fi
  return 0
}

declare -A monitor
for b in $BALANCERS; do monitor[$b]=$(monitor_off "$b"); done
for setup in "${setups[@]}"; do
  # shellcheck disable=SC2207
  budget=($(budget_for "$setup"))
  skipped=()
  for b in $BALANCERS; do
    # shellcheck disable=SC2206
    extra=(${monitor[$b]})
    for seed in $SEEDS; do
      rc=0
      run_seed "$setup" "$b" "$seed" "${budget[@]}" "${common[@]}" "${extra[@]}" "$@" || rc=$?
      if [ "$rc" = 2 ]; then skipped+=("$b"); break; fi
    done
  done
  if [ "${#skipped[@]}" -gt 0 ]; then
    echo "-- $setup: skipped (refused by the set-up): ${skipped[*]}"
  fi
  $REPORT "$OUT/$setup" --table leaderboard || echo "!! no leaderboard for $setup"
done
