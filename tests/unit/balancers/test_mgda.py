"""Per-block MGDA: the min-norm combination on shared blocks, the task's own gradient elsewhere."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mtlrun.balancers.equal import Equal
from mtlrun.balancers.mgda import MGDA
from mtlrun.errors import ConfigError
from mtlrun.model.paths import MultiTaskModel


def two_task_model() -> MultiTaskModel:
    torch.manual_seed(0)
    blocks = {
        "trunk": nn.Linear(3, 3, bias=False),
        "head:a": nn.Linear(3, 1),
        "head:b": nn.Linear(3, 1),
    }
    return MultiTaskModel(blocks, {"a": ["trunk", "head:a"], "b": ["trunk", "head:b"]})


def grads_of(loss: torch.Tensor, params: list[nn.Parameter]) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, params, retain_graph=True))


def test_shared_block_gets_the_two_task_min_norm_combination() -> None:
    model = two_task_model()
    x = torch.randn(8, 3)
    out = model(x)
    losses = {"a": out["a"].pow(2).mean(), "b": (out["b"] - 1).pow(2).mean()}
    trunk = model.blocks["trunk"].weight
    ga, gb = (grads_of(losses[t], [trunk])[0].flatten().double() for t in "ab")
    # Sener & Koltun's closed form for two tasks.
    alpha_a = float(((gb - ga) @ gb) / ((ga - gb) @ (ga - gb)))
    alpha_a = min(max(alpha_a, 0.0), 1.0)
    expected = alpha_a * ga + (1 - alpha_a) * gb
    head_a = grads_of(losses["a"], [model.blocks["head:a"].weight])[0]
    log = MGDA(["a", "b"], solver="exact").backward(losses, model)
    assert torch.allclose(trunk.grad.flatten().double(), expected, atol=1e-6)
    assert torch.allclose(model.blocks["head:a"].weight.grad, head_a)  # one user: its own gradient
    assert log["weight/a"] == pytest.approx(alpha_a, abs=1e-6)
    assert log["weight/a"] + log["weight/b"] == pytest.approx(1.0)


@pytest.mark.parametrize("solver", ["frank_wolfe", "projection"])
def test_solvers_agree_on_the_update(solver: str) -> None:
    updates = []
    for s in ("exact", solver):
        model = two_task_model()
        out = model(torch.ones(4, 3))
        MGDA(["a", "b"], solver=s).backward(
            {"a": out["a"].sum(), "b": -0.5 * out["b"].sum()}, model
        )
        updates.append(model.blocks["trunk"].weight.grad.clone())
    assert torch.allclose(updates[0], updates[1], atol=1e-5)


def test_without_shared_blocks_mgda_equals_the_plain_sum() -> None:
    torch.manual_seed(1)
    blocks = {
        "ta": nn.Linear(2, 2),
        "tb": nn.Linear(2, 2),
        "head:a": nn.Linear(2, 1),
        "head:b": nn.Linear(2, 1),
    }
    paths = {"a": ["ta", "head:a"], "b": ["tb", "head:b"]}
    grads = []
    for balancer in (Equal(["a", "b"], kkt_every=0), MGDA(["a", "b"])):
        torch.manual_seed(1)
        model = MultiTaskModel(
            {k: nn.Linear(*((2, 2) if k[0] == "t" else (2, 1))) for k in blocks}, paths
        )
        out = model(torch.ones(3, 2))
        log = balancer.backward({t: out[t].pow(2).sum() for t in "ab"}, model)
        grads.append([p.grad.clone() for p in model.parameters()])
    assert all(torch.allclose(x, y) for x, y in zip(*grads, strict=True))
    assert log["mgda/iterations"] == 0.0
    assert "kkt/stationary" not in balancer.epoch_end(0, {})  # no shared block: nothing to check


def test_opposite_task_gradients_are_pareto_stationary() -> None:
    model = two_task_model()
    out = model(torch.ones(4, 3))
    shared = out["a"].sum()  # both heads see the same trunk: make the losses pull exactly opposite
    balancer = MGDA(["a", "b"])
    balancer.backward({"a": shared, "b": -shared}, model)
    log = balancer.epoch_end(0, {})
    assert log["kkt/stationary"] == 1.0 and log["kkt/checked"] == 1.0
    assert log["kkt/ratio"] == pytest.approx(0.0, abs=1e-6)
    assert float(model.blocks["trunk"].weight.grad.abs().max()) < 1e-6


def test_bad_settings_are_config_errors() -> None:
    with pytest.raises(
        ConfigError, match="`balancer.solver` should be one of exact, frank_wolfe, projection"
    ):
        MGDA(["a", "b"], solver="newton")
    with pytest.raises(ConfigError, match="two-task closed form"):
        MGDA(["a", "b", "c"], solver="exact")
    with pytest.raises(
        ConfigError, match="`balancer.normalize` should be one of none, l2, loss, loss\\+"
    ):
        MGDA(["a"], normalize="max")
