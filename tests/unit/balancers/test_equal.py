"""Equal weighting: the gradient of Σ_t w_t L_t; config errors; shared balancer properties."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mtlrun.balancers.equal import Equal
from mtlrun.errors import ConfigError
from mtlrun.model.paths import MultiTaskModel

TASKS = ["a", "b", "c"]


def tiny_model() -> MultiTaskModel:
    torch.manual_seed(0)
    blocks: dict[str, nn.Module] = {"trunk": nn.Sequential(nn.Linear(3, 5), nn.Tanh())}
    blocks.update({f"head:{t}": nn.Linear(5, 2) for t in TASKS})
    return MultiTaskModel(blocks, {t: ["trunk", f"head:{t}"] for t in TASKS})


def losses_of(model: MultiTaskModel) -> dict[str, torch.Tensor]:
    x = torch.linspace(-1, 1, 12).reshape(4, 3)
    targets = {
        "a": torch.tensor([0, 1, 1, 0]),
        "b": torch.tensor([1, 1, 0, 0]),
        "c": torch.tensor([0, 0, 0, 1]),
    }
    out = model(x)
    return {t: nn.functional.cross_entropy(out[t], targets[t]) for t in TASKS}


def balancer_grads(
    balancer: Equal, order: list[str] | None = None
) -> tuple[list[torch.Tensor], dict[str, float], list[torch.Tensor]]:
    """(grads after balancer.backward, its log, grads of the manual weighted sum)."""
    model = tiny_model()
    params = list(model.parameters())
    losses = losses_of(model)
    if order is not None:
        losses = {t: losses[t] for t in order}
    manual = torch.autograd.grad(
        sum(balancer.weights[t] * losses[t] for t in TASKS), params, retain_graph=True
    )
    log = balancer.backward(losses, model)
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    return grads, log, list(manual)


def test_equal_gradient_is_the_gradient_of_the_plain_sum() -> None:
    balancer = Equal(TASKS)
    assert balancer.weights == {"a": 1.0, "b": 1.0, "c": 1.0}
    grads, log, _ = balancer_grads(balancer)
    model = tiny_model()
    plain = torch.autograd.grad(sum(losses_of(model).values()), list(model.parameters()))
    for g, m in zip(grads, plain, strict=True):
        assert torch.allclose(g, m, atol=1e-7)
    assert log == {"weight/a": 1.0, "weight/b": 1.0, "weight/c": 1.0}


def test_static_weights_give_the_weighted_sum() -> None:
    balancer = Equal(TASKS, weights={"a": 2.0})
    assert balancer.weights == {"a": 2.0, "b": 1.0, "c": 1.0}
    grads, log, _ = balancer_grads(balancer)
    model = tiny_model()
    losses = losses_of(model)
    weighted = 2.0 * losses["a"] + losses["b"] + losses["c"]
    expected = torch.autograd.grad(weighted, list(model.parameters()))
    for g, m in zip(grads, expected, strict=True):
        assert torch.allclose(g, m, atol=1e-7)
    assert log == {"weight/a": 2.0, "weight/b": 1.0, "weight/c": 1.0}
    # The head of a differs from the unweighted case by exactly a factor 2.
    plain, _, _ = balancer_grads(Equal(TASKS))
    head_a = [k for k, (n, _) in enumerate(tiny_model().named_parameters()) if "head:a" in n]
    for k in head_a:
        assert torch.allclose(grads[k], 2.0 * plain[k], atol=1e-7)


def test_zero_weight_silences_a_task() -> None:
    balancer = Equal(TASKS, weights={"b": 0})
    model = tiny_model()
    balancer.backward(losses_of(model), model)
    assert torch.count_nonzero(model.blocks["head:b"].weight.grad) == 0
    assert torch.count_nonzero(model.blocks["head:a"].weight.grad) > 0


def test_log_covers_only_the_tasks_of_the_step() -> None:
    """With one input stream per task a step may carry a subset of the tasks."""
    model = tiny_model()
    losses = losses_of(model)
    log = Equal(TASKS, {"c": 0.5}).backward({"c": losses["c"], "a": losses["a"]}, model)
    assert log == {"weight/c": 0.5, "weight/a": 1.0}
    assert model.blocks["head:b"].weight.grad is None


def test_unknown_weight_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as err:
        Equal(TASKS, weights={"a": 2.0, "ner": 1.0, "zzz": 3.0})
    assert str(err.value) == (
        "`balancer.weights` has keys ['ner', 'zzz'] that are not tasks of this run; "
        "allowed keys: ['a', 'b', 'c']."
    )


def test_negative_weight_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as err:
        Equal(TASKS, weights={"b": -0.5})
    assert str(err.value) == "`balancer.weights` should be finite and >= 0. Found {'b': -0.5}."


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_weight_is_a_config_error(bad: float) -> None:
    with pytest.raises(ConfigError, match="balancer.weights"):
        Equal(TASKS, weights={"a": bad})


def test_state_dict_round_trip() -> None:
    balancer = Equal(TASKS, {"a": 3.0})
    state = balancer.state_dict()
    fresh = Equal(TASKS, {"a": 3.0})
    fresh.load_state_dict(state)
    assert fresh.weights == balancer.weights


# ------------------------------------------------------ shared balancer properties


@pytest.mark.parametrize("weights", [None, {"a": 2.0}, {"b": 0.0, "c": 0.25}])
def test_logged_weights_are_finite_and_non_negative(weights: dict[str, float] | None) -> None:
    _, log, _ = balancer_grads(Equal(TASKS, weights))
    assert set(log) == {f"weight/{t}" for t in TASKS}
    assert all(math.isfinite(v) and v >= 0 for v in log.values())


def test_invariant_to_task_order() -> None:
    reference, ref_log, _ = balancer_grads(Equal(TASKS, {"a": 2.0, "c": 0.5}))
    order = ["c", "a", "b"]
    shuffled, log, _ = balancer_grads(Equal(order, {"c": 0.5, "a": 2.0}), order=order)
    for g, r in zip(shuffled, reference, strict=True):
        assert torch.allclose(g, r, atol=1e-6)
    assert log == ref_log


def test_balancer_gradient_matches_manual_weighted_sum() -> None:
    grads, _, manual = balancer_grads(Equal(TASKS, {"b": 3.0}))
    assert any(torch.count_nonzero(m) > 0 for m in manual)
    for g, m in zip(grads, manual, strict=True):
        assert torch.allclose(g, m, atol=1e-7)
