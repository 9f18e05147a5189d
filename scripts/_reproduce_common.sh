# Shared by the reproduce_*.sh scripts: output folder, reduced mode, one run per row.
# REDUCED=1 sizes a run for two CPU cores: data and epochs are cut, every run records the cuts in
# metrics.json data.deviations and notes=reduced, and the report marks such rows.
# DEBUG=fast runs every row with debug=fast (conf/debug/: each phase a few steps, in seconds) to
# check that the script, its configs and its report work end to end; its numbers mean nothing
# (notes=debug, never kept). DEBUG=overfit likewise. It replaces REDUCED when both are set.
# PARALLEL=N runs N rows at once (e.g. on one GPU, whose small steps leave it mostly idle): each
# row's output goes to <row>.log beside its folder, each takes the box's cores / N torch threads
# (trainer.threads), and the report waits for every row.
# KEEP=results/<table> keeps every finished full-protocol row in the repository's results/
# (mtlrun-report <row> --keep KEEP/<row>; a row already kept there is left as it is).
set -euo pipefail
MTLRUN=${MTLRUN:-mtlrun}
REPORT=${REPORT:-mtlrun-report}
REDUCED=${REDUCED:-0}
DEBUG=${DEBUG:-}
PARALLEL=${PARALLEL:-1}
KEEP=${KEEP:-}
stamp=$(date +%Y-%m-%d_%H-%M-%S)

common_reduced=(data.limit_train=1500 data.limit_eval=500 trainer.patience=null notes=reduced)

# reduced_for <method>: the method's own budget keys in reduced mode (sparse_ste has no
# trainer.max_epochs: its phases have their own, and mtlrun refuses a setting it would ignore).
reduced_for() {
  case "$1" in
    sparse_ste) echo "method.warmup_epochs=1 method.search_epochs=3 method.finetune_epochs=1" ;;
    sparse_imp|single_subnet) echo "trainer.max_epochs=3 method.prune_epochs=1 method.warmup_epochs=1" ;;
    tree_search) echo "trainer.max_epochs=3 method.peel_epochs=2 method.max_stationary_epochs=2" ;;
    # adashare: curriculum_speed 1 so that 10 policy epochs open all 8 blocks (> L·speed = 8)
    adashare) echo "trainer.max_epochs=3 method.warmup_epochs=1 method.curriculum_speed=1 method.policy_epochs=10" ;;
    *) echo "trainer.max_epochs=3" ;;
  esac
}

# reduced_experiment_for <experiment>: an experiment's own reduced budget; it comes after the
# common one, so it wins (image tasks are cheap enough for more data and epochs on two cores).
reduced_experiment_for() {
  case "$1" in
    thesis_fig6) echo "data.limit_train=6000 data.limit_eval=1000 trainer.max_epochs=8" ;;
    thesis_table1|adashare_mnist3) echo "data.limit_train=6000 data.limit_eval=1000 trainer.max_epochs=3" ;;
    *) echo "" ;;
  esac
}

# mnist3_fallback: data.missing_train=split_test when KMNIST's training images are absent under
# MTLRUN_DATA (the run records the deviation); nothing otherwise. A caller's own
# data.missing_train=... given later on the command line still wins.
mnist3_fallback() {
  if [ ! -e "${MTLRUN_DATA:-data}/KMNIST/raw/train-images-idx3-ubyte" ]; then
    echo "data.missing_train=split_test"
  fi
}

# run_row <out_dir> <experiment> <method> [overrides...]: one run; a failed row is reported, not fatal.
run_row() {
  local out=$1 experiment=$2 method=$3; shift 3
  local extra=()
  if [ -n "$DEBUG" ]; then
    extra=("debug=$DEBUG" notes=debug)
  elif [ "$REDUCED" = 1 ]; then
    # shellcheck disable=SC2207
    extra=("${common_reduced[@]}" $(reduced_for "$method") $(reduced_experiment_for "$experiment"))
  fi
  echo "== $experiment ${extra[*]} $*"
  if [ "$PARALLEL" -gt 1 ]; then
    while [ "$(jobs -rp | wc -l)" -ge "$PARALLEL" ]; do wait -n || true; done
    local threads=$(( $(nproc) / PARALLEL ))
    [ "$threads" -ge 1 ] || threads=1
    mkdir -p "$(dirname "$out")"
    ( $MTLRUN "experiment=$experiment" "hydra.run.dir=$out" trainer.progress=false \
        "trainer.threads=$threads" "${extra[@]}" "$@" > "$out.log" 2>&1 \
        || echo "!! $experiment failed (see $out.log)" ) &
    return 0
  fi
  # The row's own overrides come last so that they win over the reduced budget.
  $MTLRUN "experiment=$experiment" "hydra.run.dir=$out" trainer.progress=false "${extra[@]}" "$@" \
    || echo "!! $experiment failed (see $out/mtlrun.log)"
}

# wait_rows: with PARALLEL > 1, wait for every row still running (before the report).
wait_rows() {
  wait || true
}

# keep_rows <row>...: with KEEP set, each finished row folder $OUT/<row> goes to $KEEP/<row>.
keep_rows() {
  [ -n "$KEEP" ] || return 0
  if [ -n "$DEBUG" ]; then
    echo "!! KEEP ignored: results/ holds full-protocol runs only (DEBUG=$DEBUG)"
    return 0
  fi
  if [ "$REDUCED" = 1 ]; then
    echo "!! KEEP ignored: results/ holds full-protocol runs only (REDUCED=1)"
    return 0
  fi
  local row
  for row in "$@"; do
    if [ -e "$KEEP/$row/metrics.json" ]; then
      echo "== $KEEP/$row already holds a result: left as it is"
    elif [ -e "$OUT/$row/metrics.json" ]; then
      $REPORT "$OUT/$row" --keep "$KEEP/$row" || echo "!! $row not kept"
    fi
  done
}
