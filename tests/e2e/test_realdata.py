"""Smoke runs on the real files under MTLRUN_DATA (skipped when it is unset)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mtlrun.errors import DataError
from mtlrun.run import run
from tests.conftest import TINY_RESNET

pytestmark = pytest.mark.realdata

FAST = ["trainer.max_epochs=1", "trainer.progress=false", "trainer.plots=false"]


@pytest.fixture()
def compose_real(compose_cfg, monkeypatch: pytest.MonkeyPatch, real_data: Path):
    def _compose(overrides: list[str]):
        monkeypatch.setenv("MTLRUN_DATA", str(real_data))
        return compose_cfg(overrides)

    return _compose


def test_conll_hard_reports_every_metric_and_the_thesis_param_count(
    compose_real, tmp_path: Path
) -> None:
    cfg = compose_real(
        ["data=conll", "method=hard", "data.limit_train=200", "data.limit_eval=100", *FAST]
    )
    metrics = run(cfg, tmp_path)
    assert metrics["params"]["used"] == 533_930
    assert set(metrics["test"]["pos"]) == {"accuracy"}
    assert {"f1", "precision", "recall"} <= set(metrics["test"]["chunk"]) & set(
        metrics["test"]["ner"]
    )
    assert metrics["data"]["sizes"]["train"]["sentences"] == 200
    lines = (tmp_path / "predictions" / "test_ner.txt").read_text().split("\n\n")
    assert len([s for s in lines if s.strip()]) == 100


def test_conll_single_uses_three_encoders(compose_real, tmp_path: Path) -> None:
    cfg = compose_real(
        [
            "data=conll",
            "method=single",
            "data.tasks=[pos,ner]",
            "data.limit_train=50",
            "data.limit_eval=20",
            *FAST,
        ]
    )
    metrics = run(cfg, tmp_path)
    assert metrics["params"]["used"] == 2 * 533_930
    assert set(metrics["test"]) == {"pos", "ner"}


@pytest.mark.parametrize("backbone", [["backbone=lenet_bn"], ["backbone=resnet", *TINY_RESNET]])
def test_mnist3_runs_the_tasks_present(compose_real, tmp_path: Path, backbone: list[str]) -> None:
    cfg = compose_real(
        [
            "data=mnist3",
            "data.tasks=[mnist,fashion]",
            "data.limit_train=2048",
            "data.limit_eval=256",
            *backbone,
            *FAST,
        ]
    )
    metrics = run(cfg, tmp_path)
    assert set(metrics["test"]) == {"mnist", "fashion"}
    assert all(
        "data.limit_" in d for d in metrics["data"]["deviations"]
    )  # only the cuts of this smoke run
    assert all(0.0 <= m["accuracy"] <= 1.0 for m in metrics["test"].values())
    if backbone == ["backbone=lenet_bn"]:  # 32 steps are enough for LeNet, not for a fresh ResNet
        assert metrics["test"]["mnist"]["accuracy"] > 0.5  # chance is 0.1


def test_mnist3_kmnist_split_test_is_recorded(compose_real, tmp_path: Path) -> None:
    cfg = compose_real(
        [
            "data=mnist3",
            "data.missing_train=split_test",
            "data.limit_train=256",
            "data.limit_eval=128",
            *FAST,
        ]
    )
    metrics = run(cfg, tmp_path)
    assert any(
        d.startswith("kmnist:") and "8000/1000/1000" in d for d in metrics["data"]["deviations"]
    )
    assert set(metrics["test"]) == {"mnist", "fashion", "kmnist"}


def test_mnist3_missing_kmnist_stops_with_the_ways_on(compose_real, tmp_path: Path) -> None:
    with pytest.raises(
        DataError, match=r"KMNIST/raw/train-images-idx3-ubyte.*data.missing_train=split_test"
    ):
        run(compose_real(["data=mnist3", *FAST]), tmp_path)
