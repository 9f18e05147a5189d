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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize(
    ("method", "budget"),
    [
        (
            "single_subnet",
            ["method.rounds=2", "method.prune_epochs=1", "method.final_density=0.25"],
        ),
        ("sparse_imp", ["method.rounds=2", "method.prune_epochs=1", "method.final_density=0.25"]),
        ("sparse_ste", ["method.search_epochs=1", "method.finetune_epochs=1"]),
    ],
)
def test_sparse_methods_run_on_cuda(compose_cfg, tmp_path: Path, method: str, budget) -> None:
    """Masks made on the GPU go through the CPU statistics (a device mix once broke this)."""
    cfg = compose_cfg(
        [*TINY_TEXT, *TOY_SMALL, f"method={method}", *budget, "trainer.device=cuda",
         "trainer.max_epochs=1", "trainer.progress=false"]
    )  # fmt: skip
    metrics = run(cfg, tmp_path)
    assert set(metrics["masks"]["density"]) == {"pos", "chunk", "ner"}
