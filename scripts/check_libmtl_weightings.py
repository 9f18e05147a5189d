"""mtlrun's balancers against LibMTL's weightings on fixed task gradients: the shared-parameter
update each gives for the same rows and losses, in a markdown table.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/check_libmtl_weightings.py \
        --peer-python /work/peer-libmtl/bin/python --out /tmp/libmtl_check.md

Inputs (built here, seeded): T = 3 tasks, d = 6 shared parameters, cases of 7 steps each (epochs
0, 1, 2, 3, 4, 5, 5: enough for DWA's two-epoch history and STCH's 4-epoch warm-up; the losses
fall at a different rate per task). The task gradients (rows) of each step are drawn afresh in
the case's shape:

- ``plain``: Gaussian rows, the third partly opposed to the first (conflicting pairs);
- ``tiny`` / ``huge``: the same shape, every row of norm 1e-5 / 1e5;
- ``spread``: row norms 1e-6, 1, 1e6;
- ``duplicate``: rows 1 and 2 equal;
- ``zero``: row 3 is 0;
- ``loss_spread``: ``plain`` rows, losses of about 2e-3, 1 and 5e2.

mtlrun's side. Every YAML under conf/balancer is composed (``balancer=NAME``) and built with the
tasks a, b, c, as a run builds it, and driven through its ``backward`` on a tiny
:class:`~mtlrun.model.paths.MultiTaskModel`: one shared block (a parameter vector θ = x0 that it
outputs, so the shared block is ONE block holding all d parameters) and a scalar head per task;
task t's loss is ℓ_t + g_t · (out_t − x0), so its value is ℓ_t and its gradient on θ is g_t
(also at the block output, for ``on=z`` balancers). θ's gradient after ``backward`` is the
update. Between epochs ``epoch_end(epoch, mean step losses)`` is called as the trainer does,
and after each step ``after_step(recompute)`` (the step's batch forwarded again after the
optimiser step; FAMO reads it), whose losses are here the next step's, as on LibMTL's side.
For a per-block balancer this is its weighting on the block's ``BlockStat`` and Σ_t w_t g_t (or
its direction); for a loss-based one the objective's weights times the rows.

LibMTL's side: ``scripts/peer_libmtl_weightings.py`` run by ``--peer-python`` (LibMTL's own
model and ``backward`` on the same rows and losses; its docstring says how). YAMLs are mapped to
LibMTL's weightings by name (``nash_mtl`` -> ``Nash_MTL``, ...) and a few aliases (equal -> EW,
uncertainty -> UW, imtl_g -> IMTL, rgw -> RLW, mgda_ub -> MGDA); a YAML with no counterpart is
listed as skipped.

Comparison. Deterministic pairs: per step, ‖u_mtlrun − u_LibMTL‖∞ / max(‖u_mtlrun‖∞,
‖u_LibMTL‖∞), the largest over the steps compared: all 7, or the first only where LibMTL learns
the weights with the model's optimiser, which the check does not step (GradNorm, UW and IMTL's
loss scales) while mtlrun steps its own; "match" at ≤ 1e-6. The norm ratio ‖u_mtlrun‖/‖u_LibMTL‖
and the cosine are those of the worst step. Random pairs (either side changes with the seed):
``--draws`` seeded runs of the first ``--random-steps`` steps on each side, and the mean updates
are compared: "match in distribution" when every coordinate's difference is within 4 standard
errors; the relative difference is that of the means. Notes: what the set-up does on purpose,
and the known reason for a difference (the balancer's stated deviations are listed below the
table).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mtlrun.config.source import compose_config
from mtlrun.model.paths import MultiTaskModel
from mtlrun.run import build

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf" / "balancer"
PEER = Path(__file__).with_name("peer_libmtl_weightings.py")
TASKS = ["a", "b", "c"]
DIM = 6
EPOCHS = (0, 1, 2, 3, 4, 5, 5)
MATCH = 1e-6
Z_MAX = 4.0
# mtlrun YAML -> LibMTL weighting, where the names differ beyond case and underscores.
ALIASES = {
    "equal": "EW",
    "uncertainty": "UW",
    "imtl_g": "IMTL",
    "rgw": "RLW",
    "mgda_ub": "MGDA",
}
# YAMLs with no LibMTL counterpart, and why.
UNMAPPED = {
    "config": "ConFIG is not in LibMTL",
    "dualproj": "DualProj is not in LibMTL (only its sibling UPGrad is)",
    "hybrid": "GradNorm then MGDA (seed 001 Algorithm 1): no single LibMTL weighting",
}
# Balancers that share another's notes (the same weighting on other gradients).
SAME_NOTES = {"mgda_ub": "mgda"}
# Known reasons for differences, diagnosed by reading both codes (LibMTL 4336804, torchjd 0.18)
# and by the checks named; shown only on rows that do not match. Key: YAML or (YAML, case).
EXPECTED: dict[str | tuple[str, str], str] = {
    "aligned_mtl": "scale 1/T: torchjd's AlignedMTLWeighting applies B to the mean (1/T) "
    "preference vector, LibMTL sums B's rows; same direction (not in the YAML's deviations)",
    "cagrad": "LibMTL: scipy SLSQP at its default tolerance on the unnormalised Gram matrix; "
    "mtlrun: CLARABEL on G/trace (both within 7e-4 of a tight reference here)",
    ("cagrad", "huge"): "LibMTL's SLSQP fails on Gram entries of 1e10 (mtlrun within 1e-4 of a "
    "tight reference, LibMTL 0.56 off)",
    ("cagrad", "tiny"): "mtlrun BUG: no update at all when Σ‖g_t‖² < norm_eps = 1e-4 (torchjd's "
    "absolute threshold on the Gram trace); LibMTL's 1e-8 inside √mean(G) inflates ‖g0‖ here",
    ("cagrad", "spread"): "mtlrun: no update when ‖g_w‖ < 1e-4 on G/trace (g_w ≈ the 1e-6 row, "
    "taken as Pareto-stationary); LibMTL steps g0 + c‖g0‖ g_w/‖g_w‖",
    ("cagrad", "zero"): "degenerate (0 in the hull, g_w = 0): mtlrun no update, LibMTL g0/(1+c²)",
    "excess_mtl": "1/T at every step (stated; both renormalise, to 1 and to T); and torchjd's first "
    "call already takes an exponentiated step with the unscaled w (LibMTL only records it): "
    "weights move ~1% at step 1, collapse on one task when ‖g‖ ≳ 1e3 (huge, spread) — mtlrun "
    "bug via torchjd 0.18; torchjd also divides by initial w + 1e-7",
    ("excess_mtl", "zero"): "LibMTL: 0/0 (the zero row's initial w) from step 2",
    ("graddrop", "tiny"): "LibMTL adds 1e-7 to Σ_t|g_t| in the sign purity P (absolute): P is "
    "pulled towards 1/2 where entries are ≲ 1e-6 — LibMTL quirk",
    "mgda": "mtlrun = exact min-norm point (≤ 1e-14 from an exhaustive active-set solve in "
    "60-digit arithmetic); LibMTL: Frank-Wolfe stops at an L1 change < 1e-5",
    ("mgda", "huge"): "LibMTL: its pair search starts at dmin = 1e8 and never sets `sol` when "
    "every pair's min norm² exceeds 1e8 (norms ≳ 1e4)",
    ("mgda", "spread"): "the exact point lies near the 1e-6 row's vertex (‖u‖ 2.2e-7 at step 1); "
    "LibMTL's Frank-Wolfe (line search clamped to [0.001, 0.999], L1-change stop) ends at "
    "‖u‖ 6.0e-7, cosine 0.37 to it",
    ("mgda", "zero"): "the exact point is 0 (the zero row): mtlrun gives 0; LibMTL stops with "
    "≈ 3e-6 weight left on another row",
    "nash_mtl": "LibMTL casts α to float32 (≈ 6e-7)",
    ("nash_mtl", "huge"): "ECOS stops elsewhere at one step: inputs that differ by 1e-15 "
    "relative (mtlrun passes the Gram's eigen-factor) move it as much; solver sensitivity",
    "pcgrad": "LibMTL adds 1e-8 to ‖g_j‖² (absolute): its projections fade for ‖g‖ ≲ 1e-4 "
    "(tiny; the 1e-6 row of spread) — LibMTL quirk",
    "sdmgrad": "inner SGD step: torchjd's default lr 10, LibMTL hard-codes 5 (the YAML sets "
    "neither): with +balancer.weighting.lr=5 every case matches to 1e-13",
    "uncertainty": "form: mtlrun's default is e^{-s}L + s/2 with s₀ = 0 (weight 1), LibMTL's "
    "e^{-s}L/2 + s/2 with s₀ = -0.5 (weight 0.824); balancer.loss_type=regression "
    "balancer.init_log_var=-0.5 matches to 3e-8 (float32 s)",
    ("imtl", "duplicate"): "LibMTL inverts a singular matrix (raises); mtlrun documents its "
    "pseudo-inverse",
    ("imtl", "zero"): "LibMTL divides by the zero row's norm (NaN); mtlrun gives it α = 0",
    ("imtl_g", "duplicate"): "LibMTL inverts a singular matrix (raises)",
    ("imtl_g", "zero"): "LibMTL divides by the zero row's norm (NaN)",
}


# ---------------------------------------------------------------------- inputs


def unit_rows(rows: Tensor, norms: Sequence[float]) -> Tensor:
    return rows / rows.norm(dim=1, keepdim=True) * torch.tensor(norms, dtype=rows.dtype)[:, None]


def plain_rows(g: torch.Generator) -> Tensor:
    rows = torch.randn(3, DIM, generator=g, dtype=torch.float64)
    rows[2] = -0.6 * rows[0] + 0.8 * rows[2]  # conflicts with the first
    return rows


def case_rows(name: str, g: torch.Generator) -> Tensor:
    rows = plain_rows(g)
    if name == "tiny":
        return unit_rows(rows, [1e-5] * 3)
    if name == "huge":
        return unit_rows(rows, [1e5] * 3)
    if name == "spread":
        return unit_rows(rows, [1e-6, 1.0, 1e6])
    if name == "duplicate":
        rows[1] = rows[0]
        return rows
    if name == "zero":
        rows[2] = 0.0
        return rows
    return rows


CASES = ("plain", "tiny", "huge", "spread", "duplicate", "zero", "loss_spread")


def make_cases(seed: int = 0) -> list[dict[str, Any]]:
    """The cases of the module docstring: per step rows (T x d), losses (T) and the epoch."""
    cases = []
    for c, name in enumerate(CASES):
        g = torch.Generator().manual_seed(1000 * seed + c)
        base = [2e-3, 1.0, 5e2] if name == "loss_spread" else [2.3, 0.9, 0.35]
        steps = []
        for k, epoch in enumerate(EPOCHS):
            rows = case_rows(name, g)
            jitter = 1 + 0.05 * torch.rand(3, generator=g, dtype=torch.float64)
            decay = torch.tensor([0.9, 0.75, 0.97], dtype=torch.float64) ** k
            losses = torch.tensor(base, dtype=torch.float64) * decay * jitter
            steps.append({"rows": rows.tolist(), "losses": losses.tolist(), "epoch": epoch})
        cases.append({"name": name, "steps": steps})
    return cases


def epoch_means(case: dict[str, Any]) -> dict[int, dict[str, float]]:
    """Per epoch, the mean step loss per task (the trainer's ``train/loss/<task>``)."""
    out = {}
    for e in sorted({s["epoch"] for s in case["steps"]}):
        losses = np.array([s["losses"] for s in case["steps"] if s["epoch"] == e])
        out[e] = {t: float(v) for t, v in zip(TASKS, losses.mean(0), strict=True)}
    return out


# ---------------------------------------------------------------------- mtlrun side


class Theta(nn.Module):
    """The shared block: outputs its one parameter vector θ (1, d), whatever the input."""

    def __init__(self, x0: Tensor) -> None:
        super().__init__()
        self.theta = nn.Parameter(x0.clone().unsqueeze(0))

    def forward(self, x: Tensor) -> Tensor:
        return self.theta * 1.0


class Scale(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))

    def forward(self, z: Tensor) -> Tensor:
        return z * self.w


def tiny_model(x0: Tensor) -> MultiTaskModel:
    blocks: dict[str, nn.Module] = {"shared": Theta(x0)}
    blocks.update({f"head:{t}": Scale() for t in TASKS})
    model = MultiTaskModel(blocks, {t: ["shared", f"head:{t}"] for t in TASKS})
    return model.to(x0.dtype)


def seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def mtlrun_run(proto: Any, case: dict, steps: int, dtype: torch.dtype, seed: int) -> list:
    """θ's gradient after the balancer's ``backward`` at each of the case's first steps."""
    seed_all(seed)
    balancer = copy.deepcopy(proto)
    x0 = torch.ones(DIM, dtype=dtype)
    model = tiny_model(x0)
    theta = model.blocks["shared"].theta
    means = epoch_means(case)
    epoch = 0
    updates = []
    chosen = case["steps"][:steps]
    for k, step in enumerate(chosen):
        while epoch < step["epoch"]:
            balancer.epoch_end(epoch, means[epoch])
            epoch += 1
        rows = torch.tensor(step["rows"], dtype=dtype)
        values = torch.tensor(step["losses"], dtype=dtype)
        model.zero_grad(set_to_none=True)
        model.taps = {} if balancer.uses_taps else None
        out = model(torch.zeros(1, 1, dtype=dtype))
        losses = {t: values[k] + (rows[k] * (out[t][0] - x0)).sum() for k, t in enumerate(TASKS)}
        balancer.backward(losses, model)
        update = torch.zeros(DIM, dtype=dtype) if theta.grad is None else theta.grad[0]
        updates.append([float(v) for v in update.detach().double()])
        if hasattr(balancer, "after_step"):  # the trainer's hook after the optimiser step
            after = case["steps"][min(k + 1, len(case["steps"]) - 1)]["losses"]
            again = {t: torch.tensor(after[j], dtype=dtype) for j, t in enumerate(TASKS)}
            balancer.after_step(lambda again=again: again)
    return updates


def build_balancer(name: str) -> Any:
    cfg = compose_config([f"balancer={name}"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build(cfg.balancer, tasks=TASKS)


# ---------------------------------------------------------------------- mapping and metrics


def libmtl_name(yaml: str, known: Sequence[str]) -> str | None:
    if yaml in ALIASES:
        return ALIASES[yaml] if ALIASES[yaml] in known else None
    squash = {k.replace("_", "").lower(): k for k in known}
    return squash.get(yaml.replace("_", "").lower())


def inf_norm(x: np.ndarray) -> float:
    return float(np.max(np.abs(x))) if x.size else 0.0


def compare_fixed(ours: np.ndarray, theirs: np.ndarray) -> dict[str, Any]:
    """Worst step of (steps, d) arrays: relative difference, norm ratio and cosine there."""
    worst: dict[str, Any] = {"rel": -1.0}
    for k, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        if not (np.isfinite(a).all() and np.isfinite(b).all()):
            side = "LibMTL" if not np.isfinite(b).all() else "mtlrun"
            return {"rel": math.inf, "step": k + 1, "nonfinite": side, "ratio": math.nan,
                    "cos": math.nan}  # fmt: skip
        scale = max(inf_norm(a), inf_norm(b))
        rel = inf_norm(a - b) / scale if scale > 0 else 0.0
        if rel > worst["rel"]:
            na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
            cos = float(a @ b) / (na * nb) if na > 0 and nb > 0 else math.nan
            ratio = na / nb if nb > 0 else (1.0 if na == 0 else math.inf)
            worst = {"rel": rel, "step": k + 1, "ratio": ratio, "cos": cos}
    return worst


def compare_random(
    ours: tuple[np.ndarray, np.ndarray, int], theirs: tuple[np.ndarray, np.ndarray, int]
) -> dict[str, Any]:
    """Means over the draws, per step: the largest z-score and the relative difference."""
    (ma, va, na), (mb, vb, nb) = ours, theirs
    if not (np.isfinite(ma).all() and np.isfinite(mb).all()):
        side = "LibMTL" if not np.isfinite(mb).all() else "mtlrun"
        return {"rel": math.inf, "z": math.inf, "nonfinite": side, "ratio": math.nan,
                "cos": math.nan, "step": 1}  # fmt: skip
    worst: dict[str, Any] = {"rel": -1.0, "z": 0.0}
    for k in range(len(ma)):
        a, b = ma[k], mb[k]
        scale = max(inf_norm(a), inf_norm(b))
        # standard errors, floored at the fixed pairs' tolerance (a coordinate both sides
        # never vary is compared as a fixed one)
        se = np.sqrt(va[k] / na + vb[k] / nb + (MATCH * scale) ** 2)
        z = np.abs(a - b) / se if scale > 0 else np.zeros_like(a)
        rel = inf_norm(a - b) / scale if scale > 0 else 0.0
        if float(z.max()) >= worst["z"] or rel > worst["rel"]:
            na_, nb_ = float(np.linalg.norm(a)), float(np.linalg.norm(b))
            cos = float(a @ b) / (na_ * nb_) if na_ > 0 and nb_ > 0 else math.nan
            worst = {
                "rel": max(rel, worst["rel"]),
                "z": max(float(z.max()), worst["z"]),
                "step": k + 1,
                "ratio": na_ / nb_ if nb_ > 0 else math.nan,
                "cos": cos,
            }
    return worst


# ---------------------------------------------------------------------- table


def fmt(x: float) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if math.isinf(x):
        return "inf"
    return f"{x:.1e}" if (x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e4)) else f"{x:.3g}"


def verdict(m: dict[str, Any], random_pair: bool) -> str:
    if "error" in m:
        return m["error"]
    if "nonfinite" in m:
        return f"differs: {m['nonfinite']} non-finite at step {m['step']}"
    if random_pair:
        if m["z"] <= Z_MAX:
            return f"match in distribution (max |z| {m['z']:.1f})"
        return f"differs in distribution: z = {fmt(m['z'])}, means {fmt(m['rel'])} apart (step {m['step']})"
    if m["rel"] <= MATCH:
        return "match"
    return f"differs: {fmt(m['rel'])} (step {m['step']})"


def matched(m: dict[str, Any], random_pair: bool) -> bool:
    if "error" in m or "nonfinite" in m:
        return False
    return m["z"] <= Z_MAX if random_pair else m["rel"] <= MATCH


def auto_notes(entry: dict[str, Any], libmtl: dict[str, Any]) -> list[str]:
    notes = []
    if libmtl.get("learned"):
        notes.append(
            f"first step only: LibMTL learns {', '.join(libmtl['learned'])} with the model's "
            "optimiser (not stepped here)"
        )
    if libmtl.get("rep_grad"):
        notes.append("LibMTL rep_grad=True (its only mode)")
    if entry["libmtl"] in ("MoDo", "SDMGrad"):
        notes.append("LibMTL fed 3 identical batches (J1 J2ᵀ = J Jᵀ)")
    if entry["libmtl"] == "FAMO":
        notes.append(
            "the step's losses after the update = the next step's, on both sides "
            "(LibMTL's update_w, mtlrun's after_step)"
        )
    return notes


def render(entries: list[dict[str, Any]], skipped: dict[str, str], meta: dict[str, Any]) -> str:
    lines = [
        "# mtlrun balancers against LibMTL weightings on fixed gradients",
        "",
        f"LibMTL {meta['version']} ({meta.get('commit') or 'commit unknown'}), peer torch "
        f"{meta['torch']}, numpy {meta['numpy']}; mtlrun torch {torch.__version__}; "
        f"{meta['dtype']}; T = {len(TASKS)}, d = {DIM}, {len(EPOCHS)} steps per case; random "
        f"pairs: {meta['draws']} draws of the first {meta['random_steps']} steps; match ≤ "
        f"{MATCH:g} (relative, ∞-norm) or |z| ≤ {Z_MAX:g}.",
        "",
        "| balancer | LibMTL | case | steps | max rel diff | ‖mtlrun‖/‖LibMTL‖ | cos | verdict | notes |",
        "|---|---|---|---:|---:|---:|---:|---|---|",
    ]
    for e in entries:
        m = e["metric"]
        notes = "; ".join(e["notes"])
        lines.append(
            f"| {e['balancer']} | {e['libmtl']} | {e['case']} | {e['steps']} | "
            f"{fmt(m.get('rel', math.nan)) if 'error' not in m else '–'} | "
            f"{fmt(m.get('ratio', math.nan))} | {fmt(m.get('cos', math.nan))} | "
            f"{verdict(m, e['random'])} | {notes} |"
        )
    if skipped:
        lines += ["", "Not compared:", ""]
        lines += [f"- {name}: {why}" for name, why in skipped.items()]
    devs = {e["balancer"]: e["deviations"] for e in entries if e["deviations"]}
    if devs:
        lines += ["", "Stated deviations (each balancer's `deviations`):", ""]
        for name, items in devs.items():
            lines += [f"- {name}: " + " | ".join(items)]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------- main


def run_peer(python: str, spec: dict[str, Any], names: list[str], tmp: Path) -> dict[str, Any]:
    cases, out = tmp / "cases.json", tmp / "libmtl.json"
    cases.write_text(json.dumps(spec))
    command = [python, str(PEER), "--cases", str(cases), "--out", str(out)]
    for n in names:
        command += ["--weighting", n]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        sys.exit(f"peer failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(out.read_text())


def libmtl_known(python: str) -> list[str]:
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import contextlib, peer_libmtl as p\n"
        "with contextlib.redirect_stdout(sys.stderr): m = p.import_libmtl()\n"
        "print(','.join(p.weighting_names(m)))"
    )
    done = subprocess.run(
        [python, "-c", code, str(PEER.parent)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        sys.exit(f"{python} cannot import LibMTL:\n{done.stderr[-2000:]}")
    return done.stdout.strip().split(",")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--peer-python", help="python of the LibMTL environment")
    p.add_argument("--out", type=Path, help="also write the markdown table here")
    p.add_argument("--draws", type=int, default=2000, help="seeded draws for random ones")
    p.add_argument("--random-steps", type=int, default=2, help="steps per draw (random ones)")
    p.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    p.add_argument("--balancer", action="append", help="YAML name(s) (default: every YAML)")
    p.add_argument("--libmtl-commit", default=None, help="shown in the table's header")
    p.add_argument("--peer-json", type=Path, help="also keep LibMTL's raw results here")
    p.add_argument(
        "--reuse-peer-json", type=Path, help="LibMTL's results from an earlier --peer-json"
    )
    args = p.parse_args(argv)
    if os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    dtype = getattr(torch, args.dtype)
    reused = json.loads(args.reuse_peer_json.read_text()) if args.reuse_peer_json else None
    if reused is None and not args.peer_python:
        p.error("give --peer-python (or --reuse-peer-json)")
    known = reused["libmtl"]["weightings"] if reused else libmtl_known(args.peer_python)
    yamls = args.balancer or sorted(p.stem for p in CONF.glob("*.yaml"))
    plan: dict[str, str] = {}
    skipped: dict[str, str] = {}
    for y in yamls:
        target = libmtl_name(y, known)
        if target is None:
            skipped[y] = UNMAPPED.get(y, "no LibMTL weighting of that name")
            print(f"note: balancer={y} not compared: {skipped[y]}", file=sys.stderr)
        else:
            plan[y] = target
    cases = make_cases()
    spec = {
        "tasks": TASKS,
        "dim": DIM,
        "x0": [1.0] * DIM,
        "dtype": args.dtype,
        "draws": args.draws,
        "random_steps": args.random_steps,
        "cases": cases,
    }
    started = time.perf_counter()
    if reused is not None:
        peer = reused
        if peer.get("spec") != spec:
            sys.exit(f"{args.reuse_peer_json} was computed on other inputs or settings")
    else:
        with tempfile.TemporaryDirectory() as tmp:
            peer = run_peer(args.peer_python, spec, sorted(set(plan.values())), Path(tmp))
        peer["spec"] = spec
        print(f"LibMTL side: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    if args.peer_json:
        args.peer_json.write_text(json.dumps(peer))
    results = peer["weightings"]
    entries = []
    for y, target in plan.items():
        t0 = time.perf_counter()
        try:
            proto = build_balancer(y)
        except Exception as e:  # a YAML that does not build here is listed, not compared
            skipped[y] = f"does not build: {type(e).__name__}: {e}"
            print(f"note: balancer={y} not compared: {skipped[y]}", file=sys.stderr)
            continue
        if target not in results:
            skipped[y] = f"LibMTL's {target} is not in the reused results"
            continue
        theirs = results[target]
        first = cases[0]
        steps = args.random_steps
        try:
            ours_random = mtlrun_run(proto, first, steps, dtype, 0) != mtlrun_run(
                proto, first, steps, dtype, 1
            )
        except Exception:
            ours_random = False
        random_pair = ours_random or theirs["random"]
        deviations = [str(d) for d in getattr(proto, "deviations", ())]
        for case in cases:
            got = theirs["cases"][case["name"]]
            n_steps = 1 if theirs["learned"] else len(case["steps"])
            metric: dict[str, Any]
            try:
                if random_pair:
                    if "error" in got:
                        raise RuntimeError(f"LibMTL raised {got['error']}")
                    if "mean" in got:
                        b = (np.array(got["mean"]), np.array(got["var"]), got["draws"])
                    else:
                        fixed = np.array(got["updates"][:steps])
                        b = (fixed, np.zeros_like(fixed), 1)
                    with contextlib.redirect_stdout(sys.stderr):
                        draws = np.stack([
                            np.array(mtlrun_run(proto, case, steps, dtype, i))
                            for i in range(args.draws if ours_random else 1)
                        ])  # fmt: skip
                    var = draws.var(0, ddof=1) if len(draws) > 1 else np.zeros_like(draws[0])
                    metric = compare_random((draws.mean(0), var, len(draws)), b)
                    n_steps = steps
                else:
                    if "error" in got:
                        raise RuntimeError(f"LibMTL raised {got['error']}")
                    with contextlib.redirect_stdout(sys.stderr):
                        ours = np.array(mtlrun_run(proto, case, n_steps, dtype, 0))
                    metric = compare_fixed(ours, np.array(got["updates"][:n_steps]))
            except Exception as e:
                side = "" if str(e).startswith("LibMTL raised") else "mtlrun raised "
                metric = {"error": f"{side}{type(e).__name__}: {e}"[:300]}
                if str(e).startswith("LibMTL raised"):
                    metric = {"error": str(e)[:300]}
            notes = auto_notes({"libmtl": target}, theirs)
            if not matched(metric, random_pair):
                base = SAME_NOTES.get(y, y)
                for key in ((base, case["name"]), base):
                    if key in EXPECTED:
                        notes.append(EXPECTED[key])
            if deviations:
                notes.append("stated deviation(s) below")
            entries.append({
                "balancer": y, "libmtl": target, "case": case["name"], "steps": n_steps,
                "metric": metric, "random": random_pair, "notes": notes,
                "deviations": deviations,
            })  # fmt: skip
        print(f"{y} vs {target}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    meta = dict(peer["libmtl"], commit=args.libmtl_commit, dtype=args.dtype, draws=args.draws,
                random_steps=args.random_steps)  # fmt: skip
    table = render(entries, skipped, meta)
    print(table, end="")
    if args.out:
        args.out.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
