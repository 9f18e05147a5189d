#!/usr/bin/env bash
# Seed 000 Figure 4.1: test metrics of DML (sparse_ste) against the remaining ratio of the masks,
# keep_ratio 0.1 ... 0.9, then the report's table and curve (report_keep_ratio.png).
#   MTLRUN_DATA=../shared/data scripts/reproduce_fig4_1.sh
#   REDUCED=1 MTLRUN_DATA=../shared/data scripts/reproduce_fig4_1.sh
# The nine runs share one search (trainer.search_cache, README "Sweeps"): the first searches,
# the others load its warm-up and search phases and only discretise and fine-tune; a Table 4.2
# DML row run earlier from the same folder with the same settings shares it too.
here=$(cd "$(dirname "$0")" && pwd)
source "$here/_reproduce_common.sh"
OUT=${OUT:-outputs/fig4_1/$stamp}
for r in 0.1 0.2 0.3 0.4 0.5 0.6 0.7 0.8 0.9; do
  run_row "$OUT/keep$r" dml_t42_sparse_ste sparse_ste "$@" "method.keep_ratio=$r"
done
wait_rows
$REPORT "$OUT" --table sweep
