"""FAMO's logit update from the step's own mini-batch forwarded again after the optimiser step
(``update=same_batch``, the authors' and LibMTL's trainers), through the trainer's hook."""

from __future__ import annotations

import functools

import pytest
import torch

from mtlrun.balancers.famo import FAMO
from mtlrun.balancers.loss_based import LossBalancer
from mtlrun.run import build, setup
from mtlrun.training.loop import TrainSettings, train_epoch
from tests.conftest import TINY_TEXT, TOY_SMALL


def adam_first_step(grad: torch.Tensor, lr: float, decay: float, x: torch.Tensor) -> torch.Tensor:
    """x after torch's first Adam step (bias-corrected: the step is lr · sign-like g/|g|)."""
    g = grad + decay * x
    m, v = 0.1 * g, 0.001 * g * g
    m_hat, v_hat = m / 0.1, v / 0.001
    return x - lr * m_hat / (v_hat.sqrt() + 1e-8)


def test_same_batch_update_uses_the_recomputed_losses() -> None:
    famo = FAMO(["a", "b", "c"])
    before = torch.tensor([2.0, 1.0, 0.5])
    after = torch.tensor([1.0, 0.9, 0.5])  # a fell most, c not at all
    famo.objective(before.clone().requires_grad_(True))
    famo.after_backward(before)
    famo.after_step(lambda: after)
    delta = (before + 1e-8).log() - (after + 1e-8).log()
    z = torch.full((3,), 1 / 3)
    grad = z * (delta - (z * delta).sum())
    want = adam_first_step(grad, 0.025, 1e-3, torch.zeros(3))
    torch.testing.assert_close(famo.logits.detach(), want)
    assert famo.logits[2] > famo.logits[0]  # the task whose loss fell least gains weight
    # the next objective does not update again (the update already happened)
    famo.objective(after.clone().requires_grad_(True))
    torch.testing.assert_close(famo.logits.detach(), want)


def test_next_batch_update_waits_for_the_next_objective() -> None:
    famo = FAMO(["a", "b"], update="next_batch")
    famo.objective(torch.tensor([2.0, 1.0], requires_grad=True))
    famo.after_backward(torch.tensor([2.0, 1.0]))
    famo.after_step(lambda: pytest.fail("next_batch must not forward again"))
    assert torch.equal(famo.logits.detach(), torch.zeros(2))
    famo.objective(torch.tensor([1.0, 1.0], requires_grad=True))
    assert famo.logits[1] > famo.logits[0]


def test_the_trainer_forwards_the_batch_again_after_the_step(compose_cfg) -> None:
    cfg = compose_cfg([*TINY_TEXT, *TOY_SMALL, "balancer=famo", "optim.lr=0.5"])
    method = build(cfg.method)
    data, _, model, balancer, optimizer, _ = setup(cfg, method, torch.device("cpu"))
    assert isinstance(balancer, LossBalancer)
    calls: list[dict[str, torch.Tensor]] = []
    famo = balancer.weighting
    assert isinstance(famo, FAMO) and famo.update == "same_batch"
    original = famo.after_step

    def spy(recompute):
        def recorded():
            losses = recompute()
            calls.append({"grad": losses.requires_grad, "losses": losses})
            return losses

        original(recorded)

    famo.after_step = functools.partial(spy)  # type: ignore[method-assign]
    settings = TrainSettings(max_epochs=1, batch_size=8, steps_per_epoch=3, progress=False)
    train_epoch(model, data, balancer, optimizer, settings, 0, torch.device("cpu"))
    assert len(calls) == 3  # once per step
    assert not any(c["grad"] for c in calls)  # no graph for the extra forward
    assert not torch.equal(famo.logits.detach(), torch.zeros(3))  # the logits learned
