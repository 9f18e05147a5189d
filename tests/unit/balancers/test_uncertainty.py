"""Uncertainty weighting per likelihood (Kendall, Gal & Cipolla 2018), checked by hand.

With s = log σ²: classification (1/σ²) L + log σ = e^{−s} L + ½s; regression (1/(2σ²)) L + log σ
= ½e^{−s} L + ½s. Here s_0 = log 2 (e^{−s_0} = ½) and the losses are L_a = 3, L_b = 1.5, so
∂/∂s_t = −c_t e^{−s_0} L_t + ½ is
  classification (c = 1): a −1.5 + 0.5 = −1.0,  b −0.75 + 0.5 = −0.25 (both s rise);
  regression (c = ½):     a −0.75 + 0.5 = −0.25, b −0.375 + 0.5 = +0.125 (s_b falls).
Adam's first step moves each s by lr against the sign of its gradient.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mtlrun.balancers.uncertainty import Uncertainty
from mtlrun.errors import ConfigError
from mtlrun.model.paths import MultiTaskModel
from mtlrun.run import build

S0, LR = math.log(2.0), 0.1


def one_step(balancer: Uncertainty) -> tuple[dict[str, float], float]:
    """One backward on L_a = 3, L_b = 1.5, both linear in one shared weight w: the log and the
    model's gradient times w (= Σ_t weight_t L_t)."""
    lin = nn.Linear(1, 1, bias=False)
    model = MultiTaskModel(
        {"t": lin, "head:a": nn.Identity(), "head:b": nn.Identity()},
        {"a": ["t", "head:a"], "b": ["t", "head:b"]},
    )
    out = model(torch.ones(1, 1))
    w = float(lin.weight.detach())
    log = balancer.backward({"a": 3.0 * out["a"].sum() / w, "b": 1.5 * out["b"].sum() / w}, model)
    assert lin.weight.grad is not None
    return log, float(lin.weight.grad) * w


@pytest.mark.parametrize(
    ("kwargs", "weights", "s_grad", "s_step"),
    [
        ({}, (0.5, 0.5), (-1.0, -0.25), (+LR, +LR)),  # classification, the default
        ({"loss_type": "classification"}, (0.5, 0.5), (-1.0, -0.25), (+LR, +LR)),
        ({"loss_type": "regression"}, (0.25, 0.25), (-0.25, 0.125), (+LR, -LR)),
        ({"task_types": {"b": "regression"}}, (0.5, 0.25), (-1.0, 0.125), (+LR, -LR)),
        (
            {"loss_type": "regression", "task_types": {"a": "classification"}},
            (0.5, 0.25),
            (-1.0, 0.125),
            (+LR, -LR),
        ),
    ],
)
def test_one_step_by_hand(kwargs: dict, weights: tuple, s_grad: tuple, s_step: tuple) -> None:
    balancer = Uncertainty(["a", "b"], lr=LR, init_log_var=S0, kkt_every=0, **kwargs)
    log, grad_times_w = one_step(balancer)
    # The logged weight is the one that multiplied the loss: c_t e^{−s_t} before the s-update.
    assert (log["weight/a"], log["weight/b"]) == pytest.approx(weights, rel=1e-6)
    # The model's gradient: Σ_t c_t e^{−s_t} ∂L_t/∂w.
    assert grad_times_w == pytest.approx(weights[0] * 3.0 + weights[1] * 1.5, rel=1e-5)
    assert balancer.log_var.grad is not None
    assert balancer.log_var.grad.tolist() == pytest.approx(s_grad, rel=1e-5)
    expected = [S0 + step for step in s_step]
    assert balancer.log_var.detach().tolist() == pytest.approx(expected, abs=1e-6)


def test_task_types_are_checked_against_the_run_tasks() -> None:
    with pytest.raises(ConfigError) as info:
        Uncertainty(["a", "b"], task_types={"c": "regression", "a": "ordinal"})
    text = str(info.value)
    assert (
        "`balancer.task_types` has keys ['c'] that are not tasks of this run; "
        "allowed keys: ['a', 'b']." in text
    )
    assert (
        "`balancer.task_types` values should be one of classification, regression. "
        "Found {'a': 'ordinal'}." in text
    )
    with pytest.raises(ConfigError, match="`balancer.task_types` should map task names"):
        Uncertainty(["a", "b"], task_types="regression")  # type: ignore[arg-type]


def test_loss_type_is_a_choice() -> None:
    with pytest.raises(ConfigError) as info:
        Uncertainty(["a"], loss_type="poisson")
    assert str(info.value) == (
        "`balancer.loss_type` should be one of classification, regression. "
        "Found `balancer.loss_type = poisson`."
    )


def test_config_keys_reach_the_balancer(compose_cfg) -> None:
    cfg = compose_cfg(["balancer=uncertainty", "balancer.task_types={ner: regression}"])
    assert cfg.balancer.loss_type == "classification"
    balancer = build(cfg.balancer, tasks=["pos", "chunk", "ner"])
    assert balancer.loss_types == {"pos": "classification", "chunk": "classification",
                                   "ner": "regression"}  # fmt: skip
    cfg = compose_cfg(["balancer=uncertainty", "balancer.task_types={foo: regression}"])
    with pytest.raises(ConfigError, match=r"`balancer.task_types` has keys \['foo'\]"):
        build(cfg.balancer, tasks=["pos", "chunk", "ner"])
