#!/usr/bin/env bash
# Seed 000 Appendix A, Table A.1 (how accurately Adam + STE fits a Bernoulli vector): one run,
# 3 seeds inside it; then the report prints its figures beside the thesis's.
#   scripts/reproduce_ste_fit.sh [extra overrides, e.g. method.seeds=[0,1,2,3,4]]
set -euo pipefail
OUT=${OUT:-outputs/ste_fit/$(date +%Y-%m-%d_%H-%M-%S)}
${MTLRUN:-mtlrun} experiment=ste_fit "hydra.run.dir=$OUT" "$@"
${REPORT:-mtlrun-report} "$OUT" --table ste_fit
