#!/usr/bin/env bash
# Seed 001 Figure 4: share of Pareto-stationary mini-batches (KKT condition 4.3) per epoch, for
# MGDA and, as they are cheap on this set-up, equal and gradnorm (thesis_fig6 set-up); then the
# report's table and report_fig4.png (kkt/stationary by epoch).
#   MTLRUN_DATA=../shared/data scripts/reproduce_fig4.sh
#   REDUCED=1 MTLRUN_DATA=../shared/data scripts/reproduce_fig4.sh
#   BALANCERS=mgda scripts/reproduce_fig4.sh
# Extra arguments go to every run. Where a balancer's config has balancer.kkt_every, every
# mini-batch is checked (balancer.kkt_every=1).
here=$(cd "$(dirname "$0")" && pwd)
source "$here/_reproduce_common.sh"
OUT=${OUT:-outputs/fig4/$stamp}
BALANCERS=${BALANCERS:-mgda equal gradnorm}
# shellcheck disable=SC2207
fallback=($(mnist3_fallback))
for b in $BALANCERS; do
  monitor=()
  composed=$($MTLRUN experiment=thesis_fig6 "balancer=$b" --cfg job 2>/dev/null || true)
  if grep -q "^  kkt_every:" <<<"$composed"; then
    monitor=(balancer.kkt_every=1)
  fi
  run_row "$OUT/$b" thesis_fig6 hard "${fallback[@]}" "$@" "balancer=$b" "${monitor[@]}"
done
wait_rows
$REPORT "$OUT" --table fig4
