#!/usr/bin/env bash
# Seed 000 Table 4.2 on CoNLL-2003: the seven sharing mechanisms, then the report with the
# paper's numbers beside ours.
#   MTLRUN_DATA=../shared/data scripts/reproduce_table4_2.sh             # full protocol (a GPU)
#   REDUCED=1 MTLRUN_DATA=../shared/data scripts/reproduce_table4_2.sh   # CPU-sized, marked reduced
#   PARALLEL=7 MTLRUN_DATA=../shared/data scripts/reproduce_table4_2.sh trainer.device=cuda  # rows at once on one GPU
#   KEEP=results/table4_2 MTLRUN_DATA=../shared/data scripts/reproduce_table4_2.sh  # keep rows in results/
# Extra arguments go to every run (e.g. trainer.seed=1). Single (subnet) may take the masks of
# Table 4.3's from-scratch Sun et al. run instead of pruning again (the same masks):
#   mtlrun experiment=dml_t42_single_subnet method.masks_from=<that run's folder>
here=$(cd "$(dirname "$0")" && pwd)
source "$here/_reproduce_common.sh"
OUT=${OUT:-outputs/table4_2/$stamp}
# Rows in the order worth having first when a time budget cuts them (PARALLEL=N: N at once).
rows=(sparse_ste hard single sparse_imp soft hierarchical single_subnet)
for row in "${rows[@]}"; do
  run_row "$OUT/$row" "dml_t42_$row" "$row" "$@"
done
wait_rows
keep_rows "${rows[@]}"
$REPORT "$OUT" --table 4.2
$REPORT "$OUT" --table masks || true
