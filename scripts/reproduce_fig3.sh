#!/usr/bin/env bash
# Seed 001 Figure 3: iterations of the min-norm solvers on the gradients met in training, MGDA
# with Frank-Wolfe against the projected-gradient solver (thesis_fig6 set-up), then the report's
# table and report_fig3.png (mean iterations per solved block, by epoch).
#   MTLRUN_DATA=../shared/data scripts/reproduce_fig3.sh
#   REDUCED=1 MTLRUN_DATA=../shared/data scripts/reproduce_fig3.sh
# Extra arguments go to every run (e.g. balancer.normalize=l2).
here=$(cd "$(dirname "$0")" && pwd)
source "$here/_reproduce_common.sh"
OUT=${OUT:-outputs/fig3/$stamp}
# shellcheck disable=SC2207
fallback=($(mnist3_fallback))
for solver in frank_wolfe projection; do
  run_row "$OUT/$solver" thesis_fig6 hard "${fallback[@]}" "$@" balancer=mgda "balancer.solver=$solver"
done
$REPORT "$OUT" --table fig3
