"""mtlrun's training step (padded BiLSTM kernel, the KKT monitor's gradients reused for the
update) computes the losses and gradients of the plain loop over the textbook model (packed
BiLSTM, one backward of the summed loss), on the same batch and parameters."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import Tensor, nn

from mtlrun.backbones.cnn_bilstm import CNNBiLSTM
from mtlrun.balancers.equal import Equal
from mtlrun.data.tagging import TaggingData, toy_data
from mtlrun.methods.hard import HardSharing
from mtlrun.methods.hierarchical import Hierarchical
from mtlrun.methods.single import SingleTask
from mtlrun.model.paths import MultiTaskModel
from mtlrun.training.evaluate import task_loss
from mtlrun.training.loop import TrainSettings, train_epoch

CPU = torch.device("cpu")
TINY = {"word_dim": 8, "char_dim": 4, "char_filters": 4, "hidden": 6, "dropout": 0.5}
METHODS = {"hard": HardSharing, "single": SingleTask, "hierarchical": Hierarchical}


class Recorder(torch.optim.Optimizer):
    """Keeps the gradients it is asked to apply (a copy per step) and changes nothing."""

    def __init__(self, params: Iterator[nn.Parameter]) -> None:
        super().__init__(list(params), {"lr": 0.0})
        self.seen: list[list[Tensor | None]] = []

    def step(self, closure: object = None) -> None:  # type: ignore[override]
        grads = [p.grad for g in self.param_groups for p in g["params"]]
        self.seen.append([None if x is None else x.detach().clone() for x in grads])


@pytest.fixture(scope="module")
def data() -> TaggingData:
    return toy_data(n_train=30, n_valid=10, n_test=10)


def model_of(data: TaggingData, method: str, kernel: str) -> MultiTaskModel:
    torch.manual_seed(0)
    backbone = CNNBiLSTM(input_spec=data.input_spec, lstm_kernel=kernel, **TINY)
    return METHODS[method]().build(backbone, data.tasks)


def mtlrun_step(data: TaggingData, method: str, kkt_every: int) -> tuple[Recorder, dict]:
    model = model_of(data, method, "auto")
    recorder = Recorder(model.parameters())
    balancer = Equal([t.name for t in data.tasks], kkt_every=kkt_every)
    settings = TrainSettings(max_epochs=1, batch_size=8, steps_per_epoch=1, progress=False)
    settings.grad_clip = None
    torch.manual_seed(7)  # the dropout masks
    logs = train_epoch(model, data, balancer, recorder, settings, 0, CPU)
    return recorder, logs


def plain_step(data: TaggingData, method: str) -> tuple[list[Tensor | None], dict[str, float]]:
    """The loop a researcher would write, over the packed textbook model, same batch."""
    model = model_of(data, method, "packed").train()
    (groups,) = data.train_steps(8, 0, 0, 1)
    torch.manual_seed(7)
    losses = {}
    for inputs, targets in groups:
        for task, logits in model(inputs).items():
            losses[task] = task_loss(logits, targets[task])
    torch.stack(list(losses.values())).sum().backward()
    return [p.grad for p in model.parameters()], {t: float(v.detach()) for t, v in losses.items()}


def close(a: Tensor | None, b: Tensor | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return float((a - b).abs().max()) <= 1e-4 * float(b.abs().max()) + 1e-7


@pytest.mark.parametrize("kkt_every", [0, 1])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_a_step_has_the_plain_loops_losses_and_gradients(
    data: TaggingData, method: str, kkt_every: int
) -> None:
    recorder, logs = mtlrun_step(data, method, kkt_every)
    grads, losses = plain_step(data, method)
    (seen,) = recorder.seen
    assert len(seen) == len(grads)
    assert all(close(a, b) for a, b in zip(seen, grads, strict=True))
    assert sum(g is not None and float(g.abs().max()) > 0 for g in grads) > 5
    for task, value in losses.items():
        assert logs[f"train/loss/{task}"] == pytest.approx(value, rel=1e-5)


def test_the_monitored_step_reuses_the_per_task_gradients(data: TaggingData) -> None:
    """kkt_every=1: one backward pass per task and none for the sum (4 -> 3 with 3 tasks)."""
    counts = {"backward": 0}
    model = model_of(data, "hard", "auto")
    weight = model.blocks[model.head("pos")].linear.weight

    def count(grad: Tensor) -> None:
        counts["backward"] += 1

    weight.register_hook(count)
    balancer = Equal([t.name for t in data.tasks], kkt_every=1)
    settings = TrainSettings(max_epochs=1, batch_size=8, steps_per_epoch=2, progress=False)
    train_epoch(model, data, balancer, Recorder(model.parameters()), settings, 0, CPU)
    assert counts["backward"] == 2  # pos's head: once per step (its own pass), never again
    assert balancer.monitor.checked == 2
