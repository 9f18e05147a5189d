"""The same run on a CUDA device (deselected by default: pytest -m gpu)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mtlrun.run import run
from tests.conftest import TINY_TEXT, TOY_SMALL

pytestmark = pytest.mark.gpu


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_toy_trains_on_cuda(compose_cfg, tmp_path: Path) -> None:
    cfg = compose_cfg(
        [
            *TINY_TEXT,
            *TOY_SMALL,
            "trainer.device=cuda",
            "trainer.max_epochs=2",
            "trainer.progress=false",
        ]
    )
    metrics = run(cfg, tmp_path)
    assert metrics["run"]["device"].startswith("cuda")
    assert set(metrics["test"]) == {"pos", "chunk", "ner"}
