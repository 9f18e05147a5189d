#!/usr/bin/env bash
# Seed 000 Table 4.3: mask search from scratch vs after a 10-epoch warm-up, for sparse_imp
# (Sun et al.) and sparse_ste (DML), on CoNLL-2003.
#   MTLRUN_DATA=../shared/data scripts/reproduce_table4_3.sh
#   REDUCED=1 MTLRUN_DATA=../shared/data scripts/reproduce_table4_3.sh
#   KEEP=results/table4_3 MTLRUN_DATA=../shared/data scripts/reproduce_table4_3.sh   # keep in results/
here=$(cd "$(dirname "$0")" && pwd)
source "$here/_reproduce_common.sh"
OUT=${OUT:-outputs/table4_3/$stamp}
warm=10
[ "$REDUCED" = 1 ] && warm=1
for method in sparse_imp sparse_ste; do
  for w in 0 "$warm"; do
    run_row "$OUT/${method}_warmup$w" "dml_t42_$method" "$method" "$@" "method.warmup_epochs=$w"
  done
done
wait_rows
keep_rows sparse_imp_warmup0 sparse_ste_warmup0  # the warm-up rows are Table 4.2's
$REPORT "$OUT" --table 4.3
