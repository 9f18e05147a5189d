"""metrics.json ``fidelity``: every component's departures from its authors' code, as run."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from mtlrun.backbones.resnet import ResNet
from mtlrun.run import fidelity, run
from tests.conftest import QUICK, TINY_RESNET


def test_fidelity_keeps_each_kinds_notes_in_order_and_drops_empty_kinds() -> None:
    backbone = SimpleNamespace(deviations=["no GloVe", "BIO tags"])
    method = SimpleNamespace(deviations=())
    balancer = SimpleNamespace(deviations=("one",))
    assert fidelity(backbone, method, balancer) == {
        "backbone": ["no GloVe", "BIO tags"],
        "balancer": ["one"],
    }
    assert fidelity(method, method, method) == {}


def test_a_run_records_its_backbones_deviations(compose_cfg, tmp_path: Path) -> None:
    cfg = compose_cfg(
        [
            "data=mnist3",
            "data.tasks=[mnist,fashion]",
            "data.valid_size=16",
            "data.limit_train=16",
            "backbone=resnet",
            *TINY_RESNET,
            "method=hard",
            *QUICK,
            "trainer.max_epochs=1",
            "trainer.plots=false",
        ]
    )
    metrics = run(cfg, tmp_path)
    assert ResNet.deviations  # the small-image stem is a departure from AdaShare's DeepLab
    assert metrics["fidelity"]["backbone"] == list(ResNet.deviations)
    assert "method" not in metrics["fidelity"]  # hard sharing has no authors' code to depart from
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["fidelity"] == metrics["fidelity"]
