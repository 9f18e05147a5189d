"""The loss-based weightings DWA, GLS, RLW, STCH and FAMO, checked against hand computations.

Each weighting's objective and logged weights on small inputs by hand (plain ``math``), badly
scaled and zero losses, a state round trip through ``torch.save``, argument errors that name
``balancer.weighting.<key>``, and one run through :class:`LossBalancer` on a toy model whose
gradient must be that of Σ_t w_t L_t with the logged weights.
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Callable

import pytest
import torch
from torch import nn

from mtlrun.balancers.dwa import DWA
from mtlrun.balancers.famo import FAMO
from mtlrun.balancers.gls import GLS
from mtlrun.balancers.loss_based import LossBalancer, LossWeighting
from mtlrun.balancers.rlw import RLW
from mtlrun.balancers.stch import STCH
from mtlrun.errors import ConfigError
from mtlrun.model.paths import MultiTaskModel

TASKS = {2: ["a", "b"], 3: ["a", "b", "c"]}
BAD_SCALES = [
    [1e-5, 1e-5, 1e-5],
    [1e5, 1e5, 1e5],
    [1e-5, 1e5, 1.0],
    [1e-6, 1e6, 1.0],
    [0.7, 0.7, 0.7],  # equal (duplicate) losses
]


def t64(values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def softmax(xs: list[float]) -> list[float]:
    exps = [math.exp(x - max(xs)) for x in xs]
    return [e / sum(exps) for e in exps]


def step(weighting: LossWeighting, values: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """One trainer step without a model: objective, then the after-backward hook."""
    losses = t64(values)
    total, weights = weighting.objective(losses)
    weighting.after_backward(losses)
    return total, weights


def grad_of(weighting: LossWeighting, values: list[float], dtype=torch.float64) -> torch.Tensor:
    """∂ objective / ∂ losses by autograd (the weight each loss really had)."""
    losses = torch.tensor(values, dtype=dtype, requires_grad=True)
    total, _ = weighting.objective(losses)
    (grad,) = torch.autograd.grad(total, losses)
    return grad


# ------------------------------------------------------------------------------------------ DWA


def test_dwa_weights_are_one_for_two_epochs_then_t_softmax_of_the_loss_ratios() -> None:
    dwa = DWA(TASKS[3], temperature=2.0)
    losses = [1.0, 2.0, 3.0]
    assert torch.equal(step(dwa, losses)[1], t64([1.0, 1.0, 1.0]))
    dwa.epoch_end(0, {"a": 2.0, "b": 1.0, "c": 4.0})
    assert torch.equal(step(dwa, losses)[1], t64([1.0, 1.0, 1.0]))  # one epoch: no ratio yet
    dwa.epoch_end(1, {"a": 1.0, "b": 1.0, "c": 1.0})
    # r = L(1)/L(0) = (0.5, 1, 0.25); w = 3 softmax(r / 2).
    e = [math.exp(0.25), math.exp(0.5), math.exp(0.125)]
    expected = [3 * x / sum(e) for x in e]
    total, weights = step(dwa, losses)
    assert weights.tolist() == pytest.approx(expected, rel=1e-12)
    assert float(total) == pytest.approx(
        sum(w * v for w, v in zip(expected, losses, strict=True)), rel=1e-12
    )
    assert float(weights.sum()) == pytest.approx(3.0)
    # The next epoch compares epochs 2 and 1 only: r = (3, 0.5, 2).
    dwa.epoch_end(2, {"a": 3.0, "b": 0.5, "c": 2.0})
    e = [math.exp(1.5), math.exp(0.25), math.exp(1.0)]
    assert step(dwa, losses)[1].tolist() == pytest.approx([3 * x / sum(e) for x in e], rel=1e-12)


def test_dwa_two_tasks_and_the_temperature() -> None:
    dwa = DWA(TASKS[2], temperature=0.5)
    dwa.epoch_end(0, {"a": 1.0, "b": 1.0})
    dwa.epoch_end(1, {"a": 0.5, "b": 1.5})
    p = softmax([0.5 / 0.5, 1.5 / 0.5])
    assert step(dwa, [1.0, 1.0])[1].tolist() == pytest.approx([2 * p[0], 2 * p[1]], rel=1e-12)
    assert grad_of(dwa, [3.0, 4.0]).tolist() == pytest.approx([2 * p[0], 2 * p[1]], rel=1e-12)


def test_dwa_ignores_an_epoch_that_did_not_train_every_task() -> None:
    dwa = DWA(TASKS[2])
    dwa.epoch_end(0, {"a": 1.0})  # e.g. a phase that trained task a only
    dwa.epoch_end(1, {"a": 1.0, "b": 1.0})
    assert torch.equal(step(dwa, [1.0, 1.0])[1], t64([1.0, 1.0]))


@pytest.mark.parametrize("scale", BAD_SCALES)
def test_dwa_badly_scaled_epoch_losses_give_finite_weights(scale: list[float]) -> None:
    dwa = DWA(TASKS[3])
    dwa.epoch_end(0, dict(zip(TASKS[3], scale, strict=True)))
    dwa.epoch_end(1, dict(zip(TASKS[3], reversed(scale), strict=True)))
    weights = step(dwa, [1.0, 1.0, 1.0])[1]
    assert torch.isfinite(weights).all() and (weights >= 0).all()
    assert float(weights.sum()) == pytest.approx(3.0)


def test_dwa_zero_epoch_loss_is_a_clear_error() -> None:
    dwa = DWA(TASKS[2])
    dwa.epoch_end(0, {"a": 0.0, "b": 1.0})
    with pytest.raises(ValueError, match=r"undefined for task\(s\) \['a'\]"):
        dwa.epoch_end(1, {"a": 0.5, "b": 1.0})
    ok = DWA(TASKS[2])  # a zero in the later epoch is a ratio of 0: fine
    ok.epoch_end(0, {"a": 1.0, "b": 1.0})
    ok.epoch_end(1, {"a": 0.0, "b": 1.0})
    p = softmax([0.0, 0.5])
    assert step(ok, [1.0, 1.0])[1].tolist() == pytest.approx([2 * p[0], 2 * p[1]])


# ------------------------------------------------------------------------------------------ GLS


@pytest.mark.parametrize("values", [[2.0, 8.0], [0.5, 3.0, 7.0], [1e-3, 1.0, 40.0]])
def test_gls_value_and_gradient_match_the_explicit_geometric_mean(values: list[float]) -> None:
    n = len(values)
    gls = GLS(TASKS[n])
    explicit = torch.tensor(values, dtype=torch.float64, requires_grad=True)
    reference = torch.prod(explicit) ** (1.0 / n)
    (expected_grad,) = torch.autograd.grad(reference, explicit)
    total, weights = gls.objective(t64(values))
    assert float(total) == pytest.approx(float(reference.detach()), rel=1e-12)
    assert weights.tolist() == pytest.approx(expected_grad.tolist(), rel=1e-12)
    assert grad_of(gls, values).tolist() == pytest.approx(expected_grad.tolist(), rel=1e-12)
    geo = math.prod(values) ** (1 / n)  # by hand: w_t = (Π L)^{1/T} / (T L_t)
    assert weights.tolist() == pytest.approx([geo / (n * v) for v in values], rel=1e-12)


def test_gls_equal_losses_weigh_one_over_t() -> None:
    _, weights = GLS(TASKS[3]).objective(t64([0.3, 0.3, 0.3]))
    assert weights.tolist() == pytest.approx([1 / 3] * 3, rel=1e-12)


@pytest.mark.parametrize("scale", BAD_SCALES)
def test_gls_badly_scaled_float32_losses_stay_finite_and_exact(scale: list[float]) -> None:
    gls = GLS(TASKS[3])
    total, weights = gls.objective(torch.tensor(scale, dtype=torch.float32))
    grad = grad_of(gls, scale, dtype=torch.float32)
    assert torch.isfinite(total) and torch.isfinite(weights).all() and torch.isfinite(grad).all()
    geo = math.exp(sum(math.log(v) for v in scale) / 3)
    assert float(total) == pytest.approx(geo, rel=1e-5)
    assert weights.tolist() == pytest.approx([geo / (3 * v) for v in scale], rel=1e-5)
    assert grad.tolist() == pytest.approx(weights.tolist(), rel=1e-5)


def test_gls_many_large_losses_do_not_overflow_in_float32() -> None:
    # Π = 1e39 is beyond float32 (LibMTL's product form gives inf here); the log form is exact.
    total, weights = GLS(TASKS[3]).objective(torch.tensor([1e13] * 3))
    assert float(total) == pytest.approx(1e13, rel=1e-5)
    assert weights.tolist() == pytest.approx([1 / 3] * 3, rel=1e-5)


@pytest.mark.parametrize("values", [[0.0, 1.0], [1.0, -2.0, 1.0]])
def test_gls_zero_or_negative_loss_is_a_clear_error(values: list[float]) -> None:
    with pytest.raises(ValueError, match="geometric mean .* has no usable gradient"):
        GLS(TASKS[len(values)]).objective(t64(values))


# ------------------------------------------------------------------------------------------ RLW


@pytest.mark.parametrize("n", [2, 3])
def test_rlw_draws_softmax_of_a_standard_normal_from_the_global_generator(n: int) -> None:
    rlw = RLW(TASKS[n])
    torch.manual_seed(123)
    expected = torch.softmax(torch.randn(n), dim=-1)
    after = torch.randn(1)
    torch.manual_seed(123)
    total, weights = rlw.objective(torch.ones(n))
    assert torch.equal(weights, expected)
    assert torch.equal(torch.randn(1), after)  # one draw of n from the global generator
    assert (weights > 0).all() and float(weights.sum()) == pytest.approx(1.0)  # LibMTL: no ×T
    assert float(total) == pytest.approx(1.0)


def test_rlw_same_seed_same_weights_and_fresh_draws_each_step() -> None:
    rlw = RLW(TASKS[3])
    torch.manual_seed(7)
    first = [rlw.objective(t64([1.0, 2.0, 3.0]))[1] for _ in range(3)]
    torch.manual_seed(7)
    again = [rlw.objective(t64([1.0, 2.0, 3.0]))[1] for _ in range(3)]
    assert all(torch.equal(x, y) for x, y in zip(first, again, strict=True))
    assert not torch.equal(first[0], first[1])
    assert first[0].dtype == torch.float64  # the losses' dtype, the draw's values


@pytest.mark.parametrize("scale", BAD_SCALES)
def test_rlw_badly_scaled_losses_stay_finite(scale: list[float]) -> None:
    for values in (scale, [0.0, 1.0, 2.0]):
        total, weights = RLW(TASKS[3]).objective(torch.tensor(values))
        assert torch.isfinite(total) and torch.isfinite(weights).all()


# ----------------------------------------------------------------------------------------- STCH


def stch_after_warmup(mu: float) -> STCH:
    """warmup_epoch = 1: epoch 0 plain log losses, epoch 1 averages (2, 4) and (4, 8): n = (3, 6)."""
    stch = STCH(TASKS[2], mu=mu, warmup_epoch=1)
    step(stch, [5.0, 5.0])
    stch.epoch_end(0, {})
    step(stch, [2.0, 4.0])
    step(stch, [4.0, 8.0])
    stch.epoch_end(1, {})
    return stch


def test_stch_warmup_descends_the_sum_of_log_losses() -> None:
    stch = STCH(TASKS[3], warmup_epoch=1)
    total, weights = step(stch, [2.0, 0.5, 4.0])
    assert float(total) == pytest.approx(math.log(2.0) + math.log(0.5) + math.log(4.0))
    assert weights.tolist() == pytest.approx([0.5, 2.0, 0.25])
    assert stch.loss_count == 0  # epoch 0 < warmup_epoch: nothing averaged yet
    stch.epoch_end(0, {})
    step(stch, [1.0, 1.0, 1.0])
    assert stch.loss_count == 1 and stch.nadir is None


@pytest.mark.parametrize(
    ("mu", "value", "weights"),
    [
        # L = (3, 12), n = (3, 6): f = (log 1, log 2). μ = 1: s = (1/3, 2/3),
        # value 2·log(e^{−log 2} + 1) = 2 log 1.5, w_t = 2 s_t / (L_t / n_t · n_t) = (2/9, 1/9).
        (1.0, 2 * math.log(1.5), [2 / 9, 1 / 9]),
        # μ = ½: s = softmax(0, 2 log 2) = (1/5, 4/5); value 2·½·log(1/4 + 1); w = (2/15, 2/15).
        (0.5, math.log(1.25), [2 / 15, 2 / 15]),
    ],
)
def test_stch_after_warmup_by_hand(mu: float, value: float, weights: list[float]) -> None:
    stch = stch_after_warmup(mu)
    total, logged = step(stch, [3.0, 12.0])
    assert stch.nadir is not None and stch.nadir.tolist() == pytest.approx([3.0, 6.0])
    assert float(total) == pytest.approx(value, rel=1e-12)
    assert logged.tolist() == pytest.approx(weights, rel=1e-12)
    assert grad_of(stch, [3.0, 12.0]).tolist() == pytest.approx(weights, rel=1e-12)
    step(stch, [30.0, 60.0])
    assert stch.nadir.tolist() == pytest.approx([3.0, 6.0])  # fixed after the warm-up


def test_stch_libmtl_defaults_warm_up_five_epochs() -> None:
    stch = STCH(TASKS[2])
    assert (stch.mu, stch.warmup_epoch) == (1.0, 4)
    for epoch in range(5):
        assert step(stch, [2.0, 4.0])[1].tolist() == pytest.approx([0.5, 0.25])
        stch.epoch_end(epoch, {})
    assert stch.loss_count == 1  # only epoch 4 is averaged
    step(stch, [2.0, 4.0])
    assert stch.nadir is not None and stch.nadir.tolist() == [2.0, 4.0]


@pytest.mark.parametrize("scale", BAD_SCALES)
def test_stch_badly_scaled_and_zero_losses_stay_finite(scale: list[float]) -> None:
    stch = STCH(TASKS[3], warmup_epoch=0)
    for values in (scale, [0.0, 1.0, 2.0]):  # a zero loss in the warm-up: weight 1e20
        total, weights = step(stch, values)
        assert torch.isfinite(total) and torch.isfinite(weights).all()
    stch.epoch_end(0, {})
    for values in (scale, list(reversed(scale)), [0.0, 1.0, 2.0], [1e-6, 1e6, 0.0]):
        total, weights = step(stch, values)
        assert torch.isfinite(total) and torch.isfinite(weights).all(), values
        grad = grad_of(stch, values)
        assert grad.tolist() == pytest.approx(weights.tolist(), rel=1e-9)


def test_stch_reference_point_errors_are_clear() -> None:
    skipped = STCH(TASKS[2], warmup_epoch=0)
    skipped.epoch_end(0, {})  # the warm-up epoch trained no joint step
    with pytest.raises(ValueError, match="no reference point"):
        skipped.objective(t64([1.0, 1.0]))
    zero = STCH(TASKS[2], warmup_epoch=0)
    step(zero, [0.0, 1.0])
    zero.epoch_end(0, {})
    with pytest.raises(ValueError, match=r"task\(s\) \['a'\]"):
        zero.objective(t64([1.0, 1.0]))


# ----------------------------------------------------------------------------------------- FAMO

BETA1, BETA2, ADAM_EPS = 0.9, 0.999, 1e-8


def test_famo_first_step_weights_by_hand() -> None:
    famo = FAMO(TASKS[2])
    # z = (½, ½), D = (1, 3) (+1e-8): c = ½ + 1/6 = 2/3; w = z / (c D) = (3/4, 1/4).
    total, weights = step(famo, [1.0, 3.0])
    assert weights.tolist() == pytest.approx([0.75, 0.25], rel=1e-7)
    assert float(total) == pytest.approx(0.75 * math.log(3.0), rel=1e-7)
    assert grad_of(FAMO(TASKS[2]), [1.0, 3.0]).tolist() == pytest.approx([0.75, 0.25], rel=1e-7)


def test_famo_logit_updates_are_two_hand_computed_adam_steps() -> None:
    lr, gamma = 0.025, 1e-3  # LibMTL's defaults
    famo = FAMO(TASKS[3], update="next_batch")  # the update of the next objective
    steps = [[1.0, 2.0, 4.0], [0.5, 2.0, 5.0], [0.4, 1.0, 5.0]]
    step(famo, steps[0])
    xi, m, v = [0.0] * 3, [0.0] * 3, [0.0] * 3
    for k in (1, 2):
        # Step k's objective first updates ξ from the fall of the log losses over step k−1:
        # δ, the softmax Jacobian J = diag(z) − z zᵀ as a matrix, then Adam with L2 decay.
        delta = [
            math.log(b + 1e-8) - math.log(a + 1e-8)
            for b, a in zip(steps[k - 1], steps[k], strict=True)
        ]
        z = softmax(xi)
        jac = [[(z[i] if i == j else 0.0) - z[i] * z[j] for j in range(3)] for i in range(3)]
        g = [sum(jac[j][i] * delta[j] for j in range(3)) + gamma * xi[i] for i in range(3)]
        m = [BETA1 * mi + (1 - BETA1) * gi for mi, gi in zip(m, g, strict=True)]
        v = [BETA2 * vi + (1 - BETA2) * gi * gi for vi, gi in zip(v, g, strict=True)]
        m_hat = [mi / (1 - BETA1**k) for mi in m]
        v_hat = [vi / (1 - BETA2**k) for vi in v]
        xi = [
            x - lr * mh / (math.sqrt(vh) + ADAM_EPS)
            for x, mh, vh in zip(xi, m_hat, v_hat, strict=True)
        ]
        _, weights = step(famo, steps[k])
        assert famo.logits.tolist() == pytest.approx(xi, rel=1e-5, abs=1e-7)
        z = softmax(xi)
        d = [x + 1e-8 for x in steps[k]]
        c = sum(zi / di for zi, di in zip(z, d, strict=True))
        assert weights.tolist() == pytest.approx(
            [zi / (c * di) for zi, di in zip(z, d, strict=True)], rel=1e-5
        )
    # Task a's loss fell most over the first step: its logit fell (its weight shrinks).
    assert famo.logits[0] < 0 < famo.logits[2]


@pytest.mark.parametrize("scale", BAD_SCALES)
def test_famo_badly_scaled_and_zero_losses_stay_finite(scale: list[float]) -> None:
    famo = FAMO(TASKS[3])
    for values in (scale, [0.0, 1.0, 1e5], list(reversed(scale)), [1e-6, 0.0, 1e6], scale):
        total, weights = step(famo, values)
        assert torch.isfinite(total) and torch.isfinite(weights).all(), values
        assert float(weights.sum()) == pytest.approx(1.0)
        assert torch.isfinite(famo.logits).all()


# ------------------------------------------------------------------------ all: state, arguments

SCHEDULE = [[1.0, 2.0, 3.0], [0.9, 1.5, 3.5], [0.7, 1.4, 2.0], [0.6, 1.0, 2.5]]


def run_epochs(weighting: LossWeighting, epochs: range) -> None:
    """Two steps per epoch on the SCHEDULE's losses, then the epoch's mean losses."""
    for epoch in epochs:
        n = len(weighting.tasks)
        values = [SCHEDULE[(2 * epoch + i) % len(SCHEDULE)][:n] for i in range(2)]
        for v in values:
            step(weighting, v)
        means = [sum(col) / 2 for col in zip(*values, strict=True)]
        weighting.epoch_end(epoch, dict(zip(weighting.tasks, means, strict=True)))


FACTORIES: dict[str, Callable[[list[str]], LossWeighting]] = {
    "dwa": lambda tasks: DWA(tasks),
    "gls": lambda tasks: GLS(tasks),
    "rlw": lambda tasks: RLW(tasks),
    "stch": lambda tasks: STCH(tasks, warmup_epoch=1),
    "famo": lambda tasks: FAMO(tasks),
}


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("name", list(FACTORIES))
@pytest.mark.parametrize("saved_after", [1, 2, 3])
@pytest.mark.parametrize("via", ["file", "memory"])
def test_state_round_trip_gives_identical_next_weights(
    name: str, n: int, saved_after: int, via: str
) -> None:
    original = FACTORIES[name](TASKS[n])
    run_epochs(original, range(saved_after))
    step(original, SCHEDULE[3][:n])  # mid-epoch: FAMO holds this step's losses
    state = original.state_dict()
    if via == "file":  # as a checkpoint does
        buffer = io.BytesIO()
        torch.save(state, buffer)
        buffer.seek(0)
        state = torch.load(buffer, weights_only=False)
    restored = FACTORIES[name](TASKS[n])
    # In memory, the two must not share tensors that either updates in place.
    restored.load_state_dict(state)
    for seed, losses in enumerate((SCHEDULE[0], SCHEDULE[2], SCHEDULE[1])):
        if seed == 2:  # across an epoch boundary too
            for w in (original, restored):
                w.epoch_end(saved_after, dict(zip(TASKS[n], [0.5, 0.8, 1.1][:n], strict=True)))
        # The checkpoint restores torch's global generator, which RLW draws from.
        torch.manual_seed(seed)
        a = step(original, losses[:n])
        torch.manual_seed(seed)
        b = step(restored, losses[:n])
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]), (name, seed)


@pytest.mark.parametrize(
    ("factory", "key", "should", "shown"),
    [
        (functools.partial(DWA, temperature=-1), "temperature", "> 0", "-1"),
        (functools.partial(DWA, temperature=0.0), "temperature", "> 0", "0.0"),
        (functools.partial(STCH, mu=0.0), "mu", "> 0", "0.0"),
        (functools.partial(STCH, warmup_epoch=-1), "warmup_epoch", "an integer >= 0", "-1"),
        (functools.partial(STCH, warmup_epoch=1.5), "warmup_epoch", "an integer >= 0", "1.5"),
        (functools.partial(FAMO, w_lr=0.0), "w_lr", "> 0", "0.0"),
        (functools.partial(FAMO, gamma=-1e-3), "gamma", ">= 0", "-0.001"),
    ],
)
def test_bad_arguments_name_the_key(factory: Callable, key: str, should: str, shown: str) -> None:
    message = f"`balancer.weighting.{key}` should be {should}. Found `balancer.weighting.{key} = {shown}`."
    with pytest.raises(ConfigError) as caught:
        factory(tasks=TASKS[2])
    assert str(caught.value) == message
    with pytest.raises(ConfigError) as caught:  # through the driver: the same one message
        LossBalancer(TASKS[2], weighting=factory)
    assert str(caught.value) == message


def test_two_bad_arguments_are_one_error() -> None:
    with pytest.raises(ConfigError, match=r"(?s)balancer\.weighting\.mu.*warmup_epoch"):
        STCH(TASKS[2], mu=-1.0, warmup_epoch=-2)


# ------------------------------------------------------------------- end to end: LossBalancer


def toy_model(n: int) -> MultiTaskModel:
    torch.manual_seed(0)
    blocks: dict[str, nn.Module] = {"trunk": nn.Linear(4, 3)}
    blocks.update({f"head:{t}": nn.Linear(3, 1) for t in TASKS[n]})
    return MultiTaskModel(blocks, {t: ["trunk", f"head:{t}"] for t in TASKS[n]})


def toy_losses(model: MultiTaskModel, x: torch.Tensor, n: int) -> dict[str, torch.Tensor]:
    out = model(x)
    # Positive and of different sizes per task (GLS needs positive losses).
    return {t: (out[t] - k).pow(2).mean() + 0.1 * (k + 1) for k, t in enumerate(TASKS[n])}


E2E = {
    "dwa": functools.partial(DWA, temperature=2.0),
    "gls": GLS,
    "rlw": RLW,
    "stch": functools.partial(STCH, mu=0.5, warmup_epoch=0),
    "famo": functools.partial(FAMO, w_lr=0.1),
}


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("name", list(E2E))
def test_loss_balancer_gradient_is_that_of_the_logged_weighted_sum(name: str, n: int) -> None:
    model = toy_model(n)
    balancer = LossBalancer(TASKS[n], weighting=E2E[name], kkt_every=0, name=name)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    params = list(model.parameters())
    x = torch.randn(6, 4)
    seen = set()
    for epoch in range(3):
        sums = dict.fromkeys(TASKS[n], 0.0)
        for _ in range(2):
            optimizer.zero_grad(set_to_none=True)
            losses = toy_losses(model, x, n)
            log = balancer.backward(losses, model)
            weights = [log[f"weight/{t}"] for t in TASKS[n]]
            seen.add(tuple(round(w, 6) for w in weights))
            again = toy_losses(model, x, n)  # the same θ: the same losses, a fresh graph
            expected = torch.autograd.grad(
                sum(w * again[t] for w, t in zip(weights, TASKS[n], strict=True)), params
            )
            for p, g in zip(params, expected, strict=True):
                assert p.grad is not None
                assert torch.allclose(p.grad, g, rtol=1e-4, atol=1e-6), (name, epoch)
            optimizer.step()
            for t in TASKS[n]:
                sums[t] += float(losses[t].detach()) / 2
        balancer.epoch_end(epoch, sums)
    assert len(seen) > 1  # the weights moved: the check ran on non-trivial weights too
