"""logger=tensorboard (trainer.tensorboard=true is its alias): a run's history as TensorBoard
scalars, search phases included, then its test metrics and config in the HParams tab."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from mtlrun.run import run
from tests.conftest import TINY_TEXT, TOY_SMALL
from tests.unit.training.test_trackers import tb_hparams

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import (  # noqa: E402
    EventAccumulator,
)

QUICK = [*TINY_TEXT, *TOY_SMALL, "trainer.progress=false", "trainer.plots=false"]


def scalars(run_dir: Path) -> EventAccumulator:
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return events


def test_a_run_writes_its_epochs_as_scalars(compose_cfg, tmp_path: Path) -> None:
    metrics = run(
        compose_cfg([*QUICK, "trainer.max_epochs=3", "trainer.tensorboard=true"]), tmp_path
    )
    events = scalars(tmp_path)
    # the end of the run: test metrics at the last step, the config in the HParams tab
    [test_pos] = events.Scalars("test/pos/accuracy")
    assert (test_pos.step, test_pos.value) == (3, pytest.approx(metrics["test"]["pos"]["accuracy"]))
    hparams, metric_tags = tb_hparams(tmp_path)
    assert hparams["trainer.max_epochs"] == 3 and hparams["trainer.tensorboard"] == 1  # bool: 0/1
    assert "test/pos/accuracy" in metric_tags
    tags = set(events.Tags()["scalars"])
    assert {"train/loss/pos", "valid/ner/f1", "valid/score", "weight/pos", "kkt/stationary"} <= tags
    history = list(csv.DictReader((tmp_path / "history.csv").open()))
    for key in ("valid/score", "train/loss/ner"):
        logged = events.Scalars(key)
        assert [e.step for e in logged] == [1, 2, 3]
        expected = [float(row[key]) for row in history]
        assert [e.value for e in logged] == pytest.approx(expected, rel=1e-5)


def test_logger_tensorboard_with_its_alias_is_one_tracker(compose_cfg, tmp_path: Path) -> None:
    alias, both = tmp_path / "alias", tmp_path / "both"
    run(compose_cfg([*QUICK, "trainer.tensorboard=true"]), alias)
    run(compose_cfg([*QUICK, "logger=tensorboard", "trainer.tensorboard=true"]), both)
    assert len(list((both / "tensorboard").glob("events.out.tfevents.*"))) == 1
    assert scalars(both).Tags()["scalars"] == scalars(alias).Tags()["scalars"]
    for key in ("valid/score", "test/ner/f1"):
        assert [e.value for e in scalars(both).Scalars(key)] == [
            e.value for e in scalars(alias).Scalars(key)
        ]  # the same run (same seed), the same files


def test_search_phases_are_on_the_same_axis(compose_cfg, tmp_path: Path) -> None:
    cfg = compose_cfg(
        [*QUICK, "method=sparse_ste", "method.warmup_epochs=1", "method.search_epochs=2",
         "method.finetune_epochs=1", "trainer.tensorboard=true"]
    )  # fmt: skip
    run(cfg, tmp_path)
    rows = list(csv.DictReader((tmp_path / "history.csv").open()))
    events = scalars(tmp_path)
    assert [e.step for e in events.Scalars("valid/score")] == list(range(1, len(rows) + 1))
    assert [r["phase"] for r in rows] == ["warmup", "search", "search", "train"]
    # the mask entries: mean π while searching, each task's kept share once the masks are fixed
    assert [e.step for e in events.Scalars("mask/pi_mean/ner")] == [2, 3]
    for r in rows[1:3]:
        assert 0.0 < float(r["mask/pi_mean/pos"]) < 1.0
    density = [e.value for e in events.Scalars("mask/density/chunk")]
    assert density == [pytest.approx(float(rows[3]["mask/density/chunk"]))]
    assert float(rows[3]["mask/density/chunk"]) == pytest.approx(0.5, abs=0.01)  # keep_ratio
