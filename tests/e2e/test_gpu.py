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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("kernel", ["padded", "packed"])
def test_a_hard_sharing_step_on_cuda_never_waits_for_the_gpu(kernel: str) -> None:
    """The whole step as train_epoch runs it (copies, forward, losses, watch, balancer, clip,
    optimiser) queues work without a host sync, so the CPU runs ahead of the GPU; with either
    BiLSTM kernel (the packed one packs without pack_padded_sequence's waits)."""
    from mtlrun.backbones.cnn_bilstm import CNNBiLSTM
    from mtlrun.balancers.equal import Equal
    from mtlrun.data.tagging import toy_data
    from mtlrun.methods.hard import HardSharing
    from mtlrun.training.device import to_device
    from mtlrun.training.evaluate import task_loss
    from mtlrun.training.loop import NonFiniteWatch

    device = torch.device("cuda")
    data = toy_data(n_train=40, n_valid=8, n_test=8)
    torch.manual_seed(0)
    backbone = CNNBiLSTM(input_spec=data.input_spec, lstm_kernel=kernel, hidden=16)
    model = HardSharing().build(backbone, data.tasks).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    balancer = Equal([t.name for t in data.tasks], kkt_every=0)
    watch = NonFiniteWatch(model.tasks, device)
    steps = list(data.train_steps(8, 0, 0, 4))

    def step(k: int, groups: list) -> None:
        optimizer.zero_grad(set_to_none=True)
        losses = {}
        for inputs, targets in groups:
            for task, logits in model(to_device(inputs, device)).items():
                losses[task] = task_loss(logits, to_device(targets[task], device))
        watch.record(losses, k)
        balancer.backward(losses, model)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()

    step(0, steps[0])  # first call: lazy CUDA/cuDNN set-up may sync
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for k, groups in enumerate(steps[1:], start=1):
            step(k, groups)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    watch.check(epoch=0)
