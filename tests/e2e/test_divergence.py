"""A non-finite loss stops the run with where and why; it is never written down as a result."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from mtlrun.errors import ConfigError
from mtlrun.run import run
from mtlrun.training import loop
from mtlrun.training.loop import Diverged, NonFiniteWatch
from tests.conftest import TINY_TEXT, TOY_SMALL
from tests.e2e.test_cli import mtlrun

BASE = [*TINY_TEXT, *TOY_SMALL, "trainer.progress=false", "trainer.plots=false", "optim.lr=0.5"]


def strict_json(path: Path) -> dict:
    def refuse(name: str) -> None:
        raise AssertionError(f"{path} holds the non-JSON literal {name}")

    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.mark.parametrize("balancer", ["equal", "mgda", "equal_no_monitor"])
def test_a_huge_learning_rate_is_reported_as_divergence(
    compose_cfg, tmp_path: Path, balancer: str
) -> None:
    extra = ["balancer=equal", "balancer.kkt_every=0"] if balancer == "equal_no_monitor" else []
    extra = extra or [f"balancer={balancer}"]
    folder = tmp_path / "run"
    metrics = run(compose_cfg([*BASE, *extra, "optim.lr=1e30", "trainer.max_epochs=2"]), folder)
    info = metrics["diverged"]
    assert info["epoch"] == 1 and info["step"] >= 1 and info["task"] in ("pos", "chunk", "ner")
    assert "learning rate (optim.lr)" in info["note"]
    assert "test" not in metrics and metrics["epochs"]["best"] == 0  # no result from NaN weights
    on_disk = strict_json(folder / "metrics.json")
    assert on_disk["diverged"]["task"] == info["task"]
    with pytest.raises(ConfigError, match="holds the metrics.json of a diverged run"):
        run(compose_cfg([*BASE, *extra, "trainer.max_epochs=2"]), folder)


def test_divergence_in_epoch_two_keeps_epoch_one_as_the_result(
    compose_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = loop.task_loss
    calls = {"n": 0}
    straight = run(compose_cfg([*BASE, "trainer.max_epochs=1"]), tmp_path / "one")

    def nan_in_epoch_two(logits, target):
        calls["n"] += 1
        loss = original(logits, target)
        return loss * math.nan if calls["n"] == calls["at"] else loss

    monkeypatch.setattr(loop, "task_loss", nan_in_epoch_two)
    calls["at"] = 10**9
    run(compose_cfg([*BASE, "trainer.max_epochs=1", "trainer.seed=5"]), tmp_path / "count")
    per_epoch = calls["n"]  # loss calls per epoch: 3 tasks x steps
    calls.update(n=0, at=per_epoch + 3 * 1 + 2)  # epoch 2, step 2, the second task (chunk)
    metrics = run(compose_cfg([*BASE, "trainer.max_epochs=3"]), tmp_path / "run")
    assert metrics["diverged"]["epoch"] == 2 and metrics["diverged"]["step"] == 2
    assert metrics["diverged"]["task"] == "chunk"
    assert metrics["epochs"]["best"] == 1 and metrics["epochs"]["trained"] == 1
    assert metrics["test"] == straight["test"]  # the best finite epoch, the same as a 1-epoch run
    rows = (tmp_path / "run" / "history.csv").read_text().splitlines()
    assert len(rows) == 1 + 1  # the diverged epoch is not a row


def test_watch_records_the_first_bad_step_without_reading_it_every_step() -> None:
    watch = NonFiniteWatch(["pos", "ner"], torch.device("cpu"))
    watch.every = 50  # as on a GPU
    for step in range(10):
        bad = step in (3, 7)
        watch.record(
            {"pos": torch.tensor(1.0), "ner": torch.tensor(math.inf if bad else 1.0)}, step
        )
        assert not watch.due(step) or step == 0
    with pytest.raises(Diverged) as e:
        watch.check(epoch=4)
    assert e.value.info == {"task": "ner", "epoch": 5, "step": 4, "loss": "inf"}


def test_metrics_json_is_strict_even_when_values_are_not_finite(tmp_path: Path) -> None:
    from mtlrun.training.outputs import write_json

    write_json(tmp_path / "m.json", {"a": math.nan, "b": [math.inf, 1.5], "c": torch.tensor(2.0)})
    assert strict_json(tmp_path / "m.json") == {"a": None, "b": [None, 1.5], "c": 2.0}


@pytest.mark.slow
def test_cli_divergence_is_one_line_and_exit_3(tmp_path: Path) -> None:
    out = mtlrun([*BASE, "optim.lr=1e30", "trainer.max_epochs=1"], tmp_path)
    assert out.returncode == 3
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("mtlrun: error: training diverged: task ")
    assert "Traceback" not in out.stderr
