"""The balancers that predate the weighting seam keep their numbers.

``balancer_pins.json`` holds, per balancer, the test metrics and final losses of a short seeded
run made with the code before the redesign (commit 210179c). The redesign moved MGDA onto the
per-block driver, whose Gram matrix is summed parameter by parameter instead of over the
concatenated rows: the min-norm weights agree to float64 rounding, so the pins hold to
``LOSS_TOL`` on losses and exactly on the metrics of these tiny test sets.
Regenerate (only when a change of numbers is intended and stated):
``MTLRUN_WRITE_PINS=1 pytest tests/e2e/test_balancer_pins.py``.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

from mtlrun.run import run
from tests.conftest import TINY_TEXT, TOY_SMALL

PINS = Path(__file__).with_name("balancer_pins.json")
LOSS_TOL = 1e-5
HISTORY_TOL = 1e-4  # history.csv keeps 6 significant digits
TEXT = [*TINY_TEXT, *TOY_SMALL, "trainer.progress=false", "trainer.plots=false",
        "optim.lr=0.5", "trainer.max_epochs=2"]  # fmt: skip
IMAGE = ["data=mnist3", "data.tasks=[mnist,fashion]", "data.valid_size=16", "data.limit_train=48",
         "trainer.progress=false", "trainer.plots=false", "trainer.max_epochs=2",
         "trainer.batch_size=16"]  # fmt: skip
CASES = {
    "equal": [*TEXT, "balancer=equal"],
    "uncertainty": [*TEXT, "balancer=uncertainty"],
    "gradnorm": [*TEXT, "balancer=gradnorm"],
    "gradnorm_z": [*TEXT, "balancer=gradnorm", "balancer.on=z"],
    "mgda": [*TEXT, "balancer=mgda"],
    "mgda_fw_l2": [
        *TEXT,
        "balancer=mgda",
        "balancer.solver=frank_wolfe",
        "balancer.normalize=l2",
    ],  # fmt: skip
    "mgda_loss+": [*TEXT, "balancer=mgda", "balancer.normalize=loss+"],
    "mgda_ub": [*TEXT, "balancer=mgda_ub"],
    "hybrid": [*TEXT, "balancer=hybrid", "balancer.eps=10", "trainer.max_epochs=3"],
    "mgda_hierarchical": [*TEXT, "balancer=mgda", "method=hierarchical"],
    "mgda_mnist3": [*IMAGE, "balancer=mgda"],
    "hybrid_mnist3": [*IMAGE, "balancer=hybrid", "balancer.eps=10", "trainer.max_epochs=3"],
}


def outcome(metrics: dict, run_dir: Path) -> dict:
    """Test metrics and losses of the best epoch, and every epoch's training losses (the best
    epoch may come before a hybrid's switch)."""
    with (run_dir / "history.csv").open() as f:
        rows = list(csv.DictReader(f))
    train = [{k: float(v) for k, v in r.items() if k.startswith("train/loss/")} for r in rows]
    return {"test": metrics["test"], "loss": metrics["loss"], "train": train}


@pytest.mark.parametrize("case", sorted(CASES))
def test_balancer_keeps_its_numbers(compose_cfg, tmp_path: Path, case: str) -> None:
    got = outcome(run(compose_cfg(CASES[case]), tmp_path / case), tmp_path / case)
    if os.environ.get("MTLRUN_WRITE_PINS"):
        pins = json.loads(PINS.read_text()) if PINS.exists() else {}
        pins[case] = got
        PINS.write_text(json.dumps(pins, indent=1, sort_keys=True) + "\n")
        return
    want = json.loads(PINS.read_text())[case]
    assert got["test"] == want["test"]
    assert _close(got["loss"], want["loss"]), (got["loss"], want["loss"])
    assert _close(got["train"], want["train"], HISTORY_TOL), (got["train"], want["train"])


def _close(a, b, tol: float = LOSS_TOL) -> bool:
    if isinstance(a, list):
        return len(a) == len(b) and all(_close(x, y, tol) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], tol) for k in a)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(a - b) <= tol * max(1.0, abs(b))
    return a == b
