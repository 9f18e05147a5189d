#!/usr/bin/env bash
# Seed 000 Table 4.2 on CoNLL-2003: the seven sharing mechanisms, then the report with the
# paper's numbers beside ours.
#   MTLRUN_DATA=../shared/data scripts/reproduce_table4_2.sh             # full protocol (a GPU)
#   REDUCED=1 MTLRUN_DATA=../shared/data scripts/reproduce_table4_2.sh   # CPU-sized, marked reduced
# Extra arguments go to every run (e.g. trainer.seed=1).
here=$(cd "$(dirname "$0")" && pwd)
source "$here/_reproduce_common.sh"
OUT=${OUT:-outputs/table4_2/$stamp}
for row in single single_subnet hard soft hierarchical sparse_imp sparse_ste; do
  run_row "$OUT/$row" "dml_t42_$row" "$row" "$@"
done
$REPORT "$OUT" --table 4.2
$REPORT "$OUT" --table masks || true
