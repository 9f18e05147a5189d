#!/usr/bin/env bash
# Seed 001 Figure 6: training loss against wall time of the balancers equal, gradnorm, mgda and
# hybrid (trimmed LeNet+BN on MNIST/Fashion/KMNIST, hard sharing), one run folder each, then the
# report's table and report_fig6.png (total training loss vs seconds, and vs epoch).
#   MTLRUN_DATA=../shared/data scripts/reproduce_fig6.sh
#   REDUCED=1 MTLRUN_DATA=../shared/data scripts/reproduce_fig6.sh
#   BALANCERS="mgda hybrid" scripts/reproduce_fig6.sh trainer.seed=1
# Extra arguments go to every run (balancer.kkt_every=10 turns the stationarity monitor back on
# for the balancers other than mgda, so the same runs also feed --table fig4). Without KMNIST's
# training images under MTLRUN_DATA the runs build KMNIST from its test set
# (data.missing_train=split_test, recorded as a deviation).
here=$(cd "$(dirname "$0")" && pwd)
source "$here/_reproduce_common.sh"
OUT=${OUT:-outputs/fig6/$stamp}
BALANCERS=${BALANCERS:-equal gradnorm mgda hybrid}
# shellcheck disable=SC2207
fallback=($(mnist3_fallback))
for b in $BALANCERS; do
  # The Pareto-stationarity monitor costs extra backward passes except where a min-norm problem
  # is solved anyway: off, so that wall times compare the balancers themselves.
  case "$b" in
    mgda|mgda_ub) monitor=() ;;
    hybrid) monitor=(balancer.first.kkt_every=0 balancer.then.kkt_every=0) ;;
    *) monitor=(balancer.kkt_every=0) ;;
  esac
  run_row "$OUT/$b" thesis_fig6 hard "${fallback[@]}" "${monitor[@]}" "$@" "balancer=$b"
done
wait_rows
$REPORT "$OUT" --table fig6
