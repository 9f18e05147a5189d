#!/usr/bin/env bash
# Seed 001 Figure 3: iterations of the min-norm solvers on the gradients met in training. One
# MGDA run (thesis_fig6 set-up) solves every min-norm problem with both Frank-Wolfe and the
# projected-gradient solver on the same Gram matrix (balancer.compare_solvers=true; the update
# uses the default solver), then the report's table and report_fig3.png (mean iterations per
# solved block, by epoch, both solvers).
#   MTLRUN_DATA=../shared/data scripts/reproduce_fig3.sh
#   REDUCED=1 MTLRUN_DATA=../shared/data scripts/reproduce_fig3.sh
#   SEPARATE=1 scripts/reproduce_fig3.sh   # also one run per solver (each on its own gradients)
# Extra arguments go to every run (e.g. balancer.normalize=l2).
here=$(cd "$(dirname "$0")" && pwd)
source "$here/_reproduce_common.sh"
OUT=${OUT:-outputs/fig3/$stamp}
SEPARATE=${SEPARATE:-0}
# shellcheck disable=SC2207
fallback=($(mnist3_fallback))
run_row "$OUT/compare" thesis_fig6 hard "${fallback[@]}" "$@" balancer=mgda balancer.compare_solvers=true
if [ "$SEPARATE" = 1 ]; then
  for solver in frank_wolfe projection; do
    run_row "$OUT/$solver" thesis_fig6 hard "${fallback[@]}" "$@" balancer=mgda "balancer.solver=$solver"
  done
fi
wait_rows
$REPORT "$OUT" --table fig3
