"""The debug group: debug=fast runs every method's phases for a few steps; debug=overfit fits
one repeated batch; both win over an experiment; DEBUG=fast runs a reproduce script's rows."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from mtlrun.config.source import compose_config
from mtlrun.config.validate import validate
from mtlrun.run import refuse_ignored_settings, run

CONF = Path(__file__).resolve().parents[2] / "conf"
SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
TEXT = ["backbone.word_dim=8", "backbone.char_dim=4", "backbone.char_filters=4"]
TEXT += ["backbone.hidden=6", "trainer.search_cache=null"]
IMAGES = ["data=mnist3", "data.tasks=[mnist,fashion]", "data.valid_size=16"]
IMAGES += ["data.missing_train=split_test", "trainer.search_cache=null"]
# per method: what it needs besides debug=fast, and the epochs each phase kind may run
METHODS = {
    "single": (TEXT, {"train": 1}),
    "hard": (TEXT, {"train": 1}),
    "soft": (TEXT, {"train": 1}),
    "hierarchical": (TEXT, {"train": 1}),
    "single_subnet": (TEXT, {"imp": 6, "train": 1}),  # 2 rounds x 3 tasks at most
    "sparse_imp": (TEXT, {"warmup": 1, "imp": 6, "train": 1}),
    "sparse_ste": (TEXT, {"warmup": 1, "search": 1, "train": 1}),
    "ste_fit": (TEXT, {}),
    "tree_search": ([*IMAGES, "backbone=lenet_bn"], {"train": 2, "peel": 2}),
    "adashare": (
        [*IMAGES, "backbone=resnet", "backbone.layers=[1,1,1,1]", "backbone.width=4"],
        {"warmup": 1, "policy": 9, "train": 1},
    ),
}


def test_every_method_has_a_debug_budget_or_needs_none() -> None:
    """A method with phases of its own has its budget file, for both presets."""
    methods = sorted(p.stem for p in (CONF / "method").glob("*.yaml"))
    assert sorted(METHODS) == methods
    for preset in ("fast", "overfit"):
        budgets = {p.stem.removeprefix(f"{preset}_") for p in (CONF / "debug" / "method").glob(f"{preset}_*.yaml")}  # fmt: skip
        assert budgets == {"single_subnet", "sparse_imp", "sparse_ste", "ste_fit", "tree_search", "adashare"}  # fmt: skip


@pytest.mark.parametrize("method", sorted(METHODS))
def test_debug_fast_runs_every_phase_of_every_method(
    compose_cfg, tmp_path: Path, method: str
) -> None:
    extra, phases = METHODS[method]
    cfg = compose_cfg([f"method={method}", *extra, "debug=fast"])
    assert cfg.trainer.steps_per_epoch == 2 and cfg.trainer.progress is False
    metrics = run(cfg, tmp_path / "run")
    if method == "ste_fit":  # a standalone experiment: its own small budget
        assert OmegaConf.to_container(cfg.method)["epochs"] == 3
        assert (tmp_path / "run" / "metrics.json").is_file()
        return
    assert set(metrics["test"]) == set(cfg.data.tasks)
    ran = metrics["epochs"]["phases"]
    assert set(ran) == set(phases), ran
    assert all(ran[kind] <= most for kind, most in phases.items()), ran
    train = metrics["data"]["sizes"]["train"]  # sentences and tokens, or images per task
    assert all(n <= 64 for n in ([train["sentences"]] if "sentences" in train else train.values()))
    assert not (tmp_path / "run" / "curves.png").exists()  # no plots


def test_debug_fast_runs_a_paper_experiment_end_to_end(compose_cfg, tmp_path: Path) -> None:
    """Table 4.2's DML row (50 epochs, patience 8 in its preset) in seconds: debug comes after
    experiment in the defaults list, so it wins."""
    cfg = compose_cfg(["experiment=dml_t42_sparse_ste", "debug=fast", "trainer.search_cache=null"])
    assert cfg.trainer.max_epochs == 1 and cfg.trainer.patience is None
    assert cfg.method.search_epochs == 1 and cfg.data.limit_train == 64
    metrics = run(cfg, tmp_path / "run")
    assert metrics["epochs"]["phases"] == {"search": 1, "train": 1, "warmup": 1}


def test_debug_presets_win_over_experiments_and_lose_to_the_command_line(compose_cfg) -> None:
    for experiment in sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")):
        cfg = compose_cfg([f"experiment={experiment}", "debug=fast"])
        validate(cfg)
        assert cfg.trainer.steps_per_epoch == 2, experiment
    cfg = compose_cfg(["experiment=conll_hard", "debug=fast", "trainer.max_epochs=3"])
    assert cfg.trainer.max_epochs == 3 and cfg.trainer.patience is None
    overfit = compose_cfg(["experiment=conll_hard", "debug=overfit"])
    assert overfit.data.limit_train == overfit.trainer.batch_size == 10  # one batch
    overfit = compose_cfg(["data=mnist3", "debug=overfit", "method=sparse_ste"])
    assert overfit.data.limit_train == 64
    assert overfit.method.finetune_epochs == overfit.trainer.max_epochs == 40


def test_debug_overfit_fits_one_repeated_batch(compose_cfg, tmp_path: Path) -> None:
    """One batch of 16 toy sentences, 50 steps an epoch: the training loss of every task goes
    near 0 (Adam and no dropout, so that a small model does it in a few epochs)."""
    small = ["backbone.word_dim=8", "backbone.char_dim=4", "backbone.char_filters=4"]
    small += ["backbone.hidden=16", "backbone.dropout=0.0", "optim=adam", "optim.lr=0.01"]
    cfg = compose_cfg(["debug=overfit", *small, "trainer.max_epochs=6", "trainer.plots=false"])
    metrics = run(cfg, tmp_path / "run")
    assert metrics["data"]["sizes"]["train"]["sentences"] == cfg.trainer.batch_size == 16
    with (tmp_path / "run" / "history.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6
    for task in ("pos", "chunk", "ner"):
        first, last = float(rows[0][f"train/loss/{task}"]), float(rows[-1][f"train/loss/{task}"])
        assert last < 0.05 < first, (task, first, last)


FAKE = """#!/usr/bin/env bash
for a in "$@"; do
  if [ "$a" = "--cfg" ]; then exec "$PYTHON" -m mtlrun "$@"; fi
done
printf '%s\\0' "$@" > "$(mktemp "$CALLS/call.XXXXXX")"
"""


def test_debug_fast_runs_every_row_of_a_reproduce_script(tmp_path: Path) -> None:
    """DEBUG=fast scripts/reproduce_table4_2.sh: each row with debug=fast, none of REDUCED=1's
    budget (which stays the reduced protocol), every row a config mtlrun accepts."""
    calls = tmp_path / "calls"
    calls.mkdir()
    fake = tmp_path / "fake_mtlrun"
    fake.write_text(FAKE)
    fake.chmod(0o755)
    env = {**os.environ, "MTLRUN": str(fake), "REPORT": "true", "PYTHON": sys.executable}
    env.update(CALLS=str(calls), OUT=str(tmp_path / "out"), DEBUG="fast", REDUCED="1")
    script = SCRIPTS / "reproduce_table4_2.sh"
    done = subprocess.run(
        ["bash", str(script)], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    rows = [f.read_text().split("\0")[:-1] for f in sorted(calls.iterdir())]
    assert len(rows) == 7
    for args in rows:
        assert "debug=fast" in args and "notes=debug" in args
        assert not any(a.startswith("data.limit_train=") for a in args)
        overrides = [a for a in args if not a.startswith("hydra.")]
        cfg = compose_config(overrides)
        validate(cfg)
        refuse_ignored_settings(cfg, overrides)
        assert cfg.trainer.steps_per_epoch == 2
