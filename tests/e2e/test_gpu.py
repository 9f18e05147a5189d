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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_the_divergence_watch_does_not_sync_the_host_per_step() -> None:
    """record() stays on the device (CUDA's sync debug mode raises on any host sync)."""
    import math

    from mtlrun.training.loop import Diverged, NonFiniteWatch

    device = torch.device("cuda")
    watch = NonFiniteWatch(["pos", "ner"], device)
    assert watch.every == 50
    losses = [torch.tensor(v, device=device) for v in (1.0, math.nan, 2.0)]
    torch.cuda.set_sync_debug_mode("error")
    try:
        for step, loss in enumerate(losses):
            watch.record({"pos": torch.ones((), device=device), "ner": loss}, step)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    with pytest.raises(Diverged) as e:
        watch.check(epoch=0)
    assert e.value.info == {"task": "ner", "epoch": 1, "step": 2, "loss": "nan"}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("balancer", ["equal", "mgda", "gradnorm"])
def test_divergence_on_cuda_is_reported_with_task_epoch_and_step(
    compose_cfg, tmp_path: Path, balancer: str
) -> None:
    """On a GPU the check is read every 50 steps; MGDA's solver meets the NaN first and the
    run still stops as diverged (not with the solver's error)."""
    cfg = compose_cfg(
        [*TINY_TEXT, *TOY_SMALL, f"balancer={balancer}", "optim.lr=1e30",
         "trainer.device=cuda", "trainer.max_epochs=2", "trainer.progress=false"]
    )  # fmt: skip
    metrics = run(cfg, tmp_path)
    info = metrics["diverged"]
    assert info["epoch"] == 1 and info["step"] >= 1, info
    assert "test" not in metrics
