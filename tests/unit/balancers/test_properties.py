"""Properties every balancer must have (STYLE §8): finite weights, MGDA weights on the simplex,
the same update whatever the order of the tasks, and plain averaging when the tasks agree."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from mtlrun.balancers.equal import Equal
from mtlrun.balancers.gradnorm import GradNorm
from mtlrun.balancers.hybrid import Hybrid
from mtlrun.balancers.mgda import MGDA
from mtlrun.balancers.uncertainty import Uncertainty
from mtlrun.model.paths import MultiTaskModel

TASKS = ["a", "b", "c"]


def _hybrid_mgda(tasks: list[str]) -> Hybrid:
    hybrid = Hybrid(tasks, ub="z")
    hybrid.phase = 1
    return hybrid


FACTORIES: dict[str, Callable[[list[str]], object]] = {
    "equal": lambda t: Equal(t, kkt_every=1),
    "uncertainty": lambda t: Uncertainty(t, kkt_every=1),
    "gradnorm params": lambda t: GradNorm(t, on="params", kkt_every=1),
    "gradnorm z": lambda t: GradNorm(t, on="z", kkt_every=1),
    "mgda projection": lambda t: MGDA(t, solver="projection", max_iter=2000),
    "mgda frank_wolfe": lambda t: MGDA(t, solver="frank_wolfe", max_iter=5000),
    "mgda_ub": lambda t: MGDA(t, on="z", max_iter=2000),
    "hybrid gradnorm": lambda t: Hybrid(t, ub="z"),
    "hybrid mgda": _hybrid_mgda,
}
MIN_NORM = {"mgda projection", "mgda frank_wolfe", "mgda_ub", "hybrid mgda"}


def model_and_losses(order: list[str], same: bool = False, seed: int = 0):
    """A shared trunk and one head per task; ``same``: every task has the same loss."""
    torch.manual_seed(seed)
    trunk = nn.Sequential(nn.Linear(5, 4), nn.Tanh())
    heads = {t: nn.Linear(4, 1) for t in TASKS}
    model = MultiTaskModel(
        {"trunk": trunk, **{f"head:{t}": heads[t] for t in TASKS}},
        {t: ["trunk", f"head:{t}"] for t in order},
    )
    model.taps = {}
    x = torch.randn(12, 5, generator=torch.Generator().manual_seed(seed + 1))
    out = model(x)
    targets = {"a": 1.0, "b": -2.0, "c": 0.5}
    losses = {
        t: (out["a" if same else t] - (0.0 if same else targets[t])).pow(2).mean() for t in order
    }
    return model, losses


@pytest.mark.parametrize("name", list(FACTORIES))
def test_weights_are_finite_and_min_norm_weights_on_the_simplex(name: str) -> None:
    model, losses = model_and_losses(TASKS)
    log = FACTORIES[name](TASKS).backward(losses, model)
    weights = torch.tensor([log[f"weight/{t}"] for t in TASKS])
    assert torch.isfinite(weights).all() and (weights > 0).all()
    if name in MIN_NORM:  # one shared block: the logged weights are its α
        assert float(weights.sum()) == pytest.approx(1.0, abs=1e-9)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_the_update_does_not_depend_on_the_task_order(name: str) -> None:
    grads = []
    for order in (TASKS, TASKS[::-1]):
        model, losses = model_and_losses(order)
        FACTORIES[name](order).backward(losses, model)
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for n in grads[0]:
        assert torch.allclose(grads[0][n], grads[1][n], rtol=1e-4, atol=1e-6), n


@pytest.mark.parametrize("name", list(FACTORIES))
def test_agreeing_tasks_move_the_trunk_along_their_common_gradient(name: str) -> None:
    model, losses = model_and_losses(TASKS, same=True)
    trunk = model.blocks["trunk"][0].weight
    common = torch.autograd.grad(losses["a"], trunk, retain_graph=True)[0]
    FACTORIES[name](TASKS).backward(losses, model)
    cosine = torch.nn.functional.cosine_similarity(trunk.grad.flatten(), common.flatten(), dim=0)
    assert float(cosine) == pytest.approx(1.0, abs=1e-5)
    if name in MIN_NORM:  # the min-norm point of identical gradients is that gradient: the mean
        assert torch.allclose(trunk.grad, common, atol=1e-6)
    if name == "equal":
        assert torch.allclose(trunk.grad, 3 * common, atol=1e-6)
