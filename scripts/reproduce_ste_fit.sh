#!/usr/bin/env bash
# Seed 000 Appendix A, Table A.1 (how accurately Adam + STE fits a Bernoulli vector): one run,
# 3 seeds inside it; prints its figures beside the thesis's.
#   scripts/reproduce_ste_fit.sh [extra overrides, e.g. method.seeds=[0,1,2,3,4]]
set -euo pipefail

mtlrun experiment=ste_fit "$@"

# The newest run dir of this experiment (Hydra names it <date>/<time>_<overrides>).
metrics=$(ls -t outputs/*/*experiment=ste_fit*/metrics.json | head -n 1)
echo "metrics: ${metrics}"
python - "${metrics}" <<'PY'
import json
import sys

block = json.load(open(sys.argv[1]))["ste_fit"]
paper = block["paper"]
print(f"{'Table A.1':<18}{'measured (mean ± std)':>26}{'thesis':>20}")
for key, label in (("frac_over_0.05", "|π−p*| > 0.05"), ("frac_over_0.01", "|π−p*| > 0.01"),
                   ("mean_abs_error", "mean |π−p*|")):
    m, s = block[key]["mean"], block[key]["std"] or 0.0
    p, ps = paper[key], paper.get(f"{key}_std", 0.0)
    if key.startswith("frac"):
        print(f"{label:<18}{f'{100 * m:.2f} ± {100 * s:.2f}%':>26}{f'{100 * p:.2f} ± {100 * ps:.2f}%':>20}")
    else:
        print(f"{label:<18}{f'{m:.4f} ± {s:.4f}':>26}{f'{p:.4f} ± {ps:.4f}':>20}")
PY
