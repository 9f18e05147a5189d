#!/usr/bin/env bash
# AdaShare against hard sharing and single-task networks on MNIST/Fashion/KMNIST (ResNet-18),
# one run folder each, then the report's runs table (accuracies, params.used) and the policy.
#   MTLRUN_DATA=../shared/data scripts/reproduce_adashare_mnist3.sh
#   REDUCED=1 MTLRUN_DATA=../shared/data scripts/reproduce_adashare_mnist3.sh backbone.width=16
# Extra arguments go to every run. Without KMNIST's training images under MTLRUN_DATA the runs
# build KMNIST from its test set (data.missing_train=split_test, recorded as a deviation).
here=$(cd "$(dirname "$0")" && pwd)
source "$here/_reproduce_common.sh"
OUT=${OUT:-outputs/adashare_mnist3/$stamp}
# shellcheck disable=SC2207
fallback=($(mnist3_fallback))
for method in adashare hard single; do
  run_row "$OUT/$method" adashare_mnist3 "$method" "${fallback[@]}" "$@" "method=$method"
done
wait_rows
$REPORT "$OUT" --table runs
echo "policy: $OUT/adashare/policy.json, $OUT/adashare/policy.png"
