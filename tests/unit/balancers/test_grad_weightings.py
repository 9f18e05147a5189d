"""DB-MTL, IMTL and MoCo per block, against explicit re-computations of their formulas.

The references below are written from the papers' update rules (and LibMTL's constants:
ε = 1e-8, λ_0 = 1/T, tracked gradients starting at 0), on fixed small gradient matrices.
"""

from __future__ import annotations

import copy
import functools
import math

import pytest
import torch
from torch import Tensor, nn

from mtlrun.balancers.db_mtl import DBMTL, DualBalancing
from mtlrun.balancers.imtl import IMTL, IMTLG, imtl_g
from mtlrun.balancers.moco import MoCo
from mtlrun.balancers.per_block import PerBlock
from mtlrun.balancers.weighting import BlockStat, NonFiniteWeights, Weighting
from mtlrun.errors import ConfigError
from mtlrun.model.paths import MultiTaskModel

F64 = torch.float64
J = torch.tensor(
    [[1.0, 2.0, 0.0, 1.0], [0.0, 1.0, 3.0, -1.0], [2.0, -1.0, 1.0, 0.5]], dtype=F64
)  # three tasks, d = 4, linearly independent, pairwise non-orthogonal
STEPS = [  # (rows, losses) of three consecutive steps
    (J, torch.tensor([0.7, 2.0, 1.3], dtype=F64)),
    (J.flip(1) - 0.5, torch.tensor([0.6, 1.5, 1.1], dtype=F64)),
    (0.3 * J + J.roll(1, 0), torch.tensor([0.5, 1.2, 1.0], dtype=F64)),
]
USERS = ["a", "b", "c"]


def stat(rows: Tensor, losses: Tensor, users: list[str] = USERS, block: str = "trunk") -> BlockStat:
    def gram() -> Tensor:
        r = rows.double()
        return r @ r.T

    return BlockStat(block, list(users), losses.double(), gram, lambda: rows)


def unit_projections(alpha: Tensor, rows: Tensor) -> Tensor:
    """g·u_t for the aggregate g = Σ α_t g_t and every unit task gradient u_t."""
    return (rows / rows.norm(dim=1, keepdim=True)) @ (alpha @ rows)


# ------------------------------------------------------------------------------------ IMTL-G


def libmtl_imtl_g(rows: Tensor) -> Tensor:
    """IMTL-G's closed form (Liu et al. 2021 eq. 7) with task 1 as the reference."""
    unit = rows / rows.norm(dim=1, keepdim=True)
    d = rows[:1] - rows[1:]
    u = unit[:1] - unit[1:]
    rest = rows[0] @ u.T @ torch.linalg.inv(d @ u.T)
    return torch.cat([(1 - rest.sum()).unsqueeze(0), rest])


def test_imtl_g_equals_the_closed_form_and_projects_equally() -> None:
    alpha = IMTLG()(stat(J, torch.ones(3, dtype=F64)))
    assert torch.allclose(alpha, libmtl_imtl_g(J), atol=1e-12)
    assert float(alpha.sum()) == pytest.approx(1.0)
    proj = unit_projections(alpha, J)
    assert torch.allclose(proj, proj[0].expand(3), rtol=1e-12)


@pytest.mark.parametrize(
    "scales",
    [(1e-5, 1e5, 1.0), (1e-6, 1.0, 1e6), (1.0, 1.0, 1.0)],
    ids=["1e-5/1e5", "1e-6/1e6", "1"],
)
def test_imtl_g_holds_for_badly_scaled_gradients(scales: tuple[float, ...]) -> None:
    rows = J * torch.tensor(scales, dtype=F64)[:, None]
    alpha = imtl_g(rows @ rows.T)
    assert bool(torch.isfinite(alpha).all())
    proj = unit_projections(alpha, rows)
    assert torch.allclose(proj, proj[0].expand(3), rtol=1e-8)


def test_imtl_g_on_duplicate_spread_and_zero_rows() -> None:
    spread = torch.tensor([[1e-6, 1e6, 1.0, -1e3], [1e6, -1e-6, 1e3, 1.0]], dtype=F64)
    dup = torch.stack([J[0], J[0], J[1]])
    for rows in (spread, dup):
        alpha = imtl_g(rows @ rows.T)
        proj = unit_projections(alpha, rows)
        assert bool(torch.isfinite(alpha).all())
        assert torch.allclose(proj, proj[0].expand(len(rows)), rtol=1e-8)
    zero = torch.stack([J[0], torch.zeros(4, dtype=F64), J[1]])
    alpha = imtl_g(zero @ zero.T)
    assert alpha[1] == 0.0  # no direction: no weight; the others solved without it
    assert torch.allclose(alpha[[0, 2]], libmtl_imtl_g(J[:2]), atol=1e-12)
    assert torch.equal(imtl_g(torch.zeros(2, 2, dtype=F64)), torch.zeros(2, dtype=F64))


# ------------------------------------------------------------------------------------ DB-MTL


def db_mtl_reference(
    steps: list[tuple[Tensor, Tensor]], beta: float, sigma: float, log_grad: bool = True
) -> list:
    """DB-MTL (Lin et al. 2023 Alg. 1) on all steps: the update and α per step. ``log_grad``:
    the rows are ∇L (divided by L + ε here) rather than ∇ log(L + ε) already."""
    buffer, out = torch.zeros_like(steps[0][0]), []
    for k, (rows, losses) in enumerate(steps, start=1):
        g = rows / (losses + 1e-8)[:, None] if log_grad else rows  # ∇ log(L + ε)
        rate = beta / k**sigma
        buffer = (1 - rate) * g + rate * buffer
        norms = buffer.norm(dim=1)
        alpha = norms.max() / (norms + 1e-8)
        out.append((sum(alpha[t] * buffer[t] for t in range(len(rows))), alpha))
    return out


@pytest.mark.parametrize(("beta", "sigma"), [(0.9, 0.0), (0.5, 0.5)])
def test_db_mtl_follows_its_formula_over_three_steps(beta: float, sigma: float) -> None:
    w = DBMTL(beta=beta, beta_sigma=sigma)
    for (rows, losses), (expected, alpha) in zip(
        STEPS, db_mtl_reference(STEPS, beta, sigma), strict=True
    ):
        assert torch.allclose(w(stat(rows, losses)), expected, rtol=1e-12, atol=1e-12)
        assert [w.logs()[f"weight/{t}"] for t in USERS] == pytest.approx(alpha.tolist())
    assert w.step == 3


def test_db_mtl_first_step_by_hand() -> None:
    # Orthogonal rows of norms 2 and 1 with losses 1 and 0.5: log-gradients of norm 2 and 2,
    # ĝ_1 = 0.1 × that (β = 0.9, ĝ_0 = 0), equal norms: α = 1 both, update = their sum.
    rows = torch.tensor([[2.0, 0, 0, 0], [0, 1.0, 0, 0]], dtype=F64)
    out = DBMTL()(stat(rows, torch.tensor([1.0, 0.5], dtype=F64), ["a", "b"]))
    assert torch.allclose(out, torch.tensor([0.2, 0.2, 0, 0], dtype=F64), rtol=1e-7)


# -------------------------------------------------------------------------------------- MoCo


def moco_reference(steps, beta, beta_s, gamma, gamma_s, rho) -> list:
    """MoCo (Fernando et al. 2023 eq. 6–7, softmax step as in LibMTL): update and λ per step."""
    y = torch.zeros_like(steps[0][0])
    n = len(steps[0][0])
    lambd, out = torch.full((n,), 1 / n, dtype=F64), []
    for k, (rows, losses) in enumerate(steps, start=1):
        h = torch.stack([rows[t] / (rows[t].norm() + 1e-8) * losses[t] for t in range(n)])
        y = y - beta / k**beta_s * (y - h)
        step = gamma / k**gamma_s * (y @ y.T + rho * torch.eye(n, dtype=F64)) @ lambd
        lambd = torch.softmax(lambd - step, dim=0)
        out.append((y.T @ lambd, lambd))
    return out


def test_moco_two_steps_by_hand() -> None:
    # h_a = 1·e1 (loss 1), h_b = 2·e3 (loss 2). Step 1: β_1 = 0.5, y = (0.5 e1, e3),
    # YYᵀ = diag(0.25, 1), λ = softmax(0.5 − 0.1·(0.125, 0.5)). Step 2 (same rows):
    # β_2 = 0.5/√2: y_a = 0.5 + 0.5 β_2, y_b = 1 + β_2; γ_2 = 0.1/√2.
    rows = torch.tensor([[3.0, 0, 0, 0], [0, 0, 4.0, 0]], dtype=F64)
    losses = torch.tensor([1.0, 2.0], dtype=F64)
    w = MoCo()
    out1 = w(stat(rows, losses, ["a", "b"]))
    l1 = torch.softmax(torch.tensor([0.5 - 0.0125, 0.5 - 0.05], dtype=F64), 0)
    assert torch.allclose(out1, torch.tensor([0.5 * l1[0], 0, l1[1], 0], dtype=F64), rtol=1e-7)
    out2 = w(stat(rows, losses, ["a", "b"]))
    b2, g2 = 0.5 / math.sqrt(2), 0.1 / math.sqrt(2)
    ya, yb = 0.5 + 0.5 * b2, 1 + b2
    l2 = torch.softmax(l1 - g2 * torch.tensor([ya**2, yb**2], dtype=F64) * l1, 0)
    assert torch.allclose(out2, torch.tensor([l2[0] * ya, 0, l2[1] * yb, 0], dtype=F64), rtol=1e-7)
    assert [w.logs()["weight/a"], w.logs()["weight/b"]] == pytest.approx(l2.tolist())


@pytest.mark.parametrize("kwargs", [{}, {"beta": 0.9, "beta_sigma": 0.0, "gamma": 0.5, "rho": 0.1}])
def test_moco_follows_its_formula_over_three_steps(kwargs: dict) -> None:
    w = MoCo(**kwargs)
    args = {"beta": 0.5, "beta_sigma": 0.5, "gamma": 0.1, "gamma_sigma": 0.5, "rho": 0.0} | kwargs
    expected = moco_reference(STEPS, *args.values())
    for (rows, losses), (direction, lambd) in zip(STEPS, expected, strict=True):
        assert torch.allclose(w(stat(rows, losses)), direction, rtol=1e-12, atol=1e-12)
        assert torch.allclose(w.lambd, lambd, rtol=1e-12)


# ------------------------------------------------------------------- badly scaled, per weighting

BAD_ROWS = {
    "norms 1e-5/1e5": J[:2] * torch.tensor([[1e-5], [1e5]], dtype=F64),
    "spread 1e±6": torch.tensor([[1e-6, 1e6, 1.0, -1e3], [1e6, -1e-6, 1e3, 1.0]], dtype=F64),
    "duplicate": torch.stack([J[0], J[0]]),
    "zero row": torch.stack([J[0], torch.zeros(4, dtype=F64)]),
    "all zero": torch.zeros(2, 4, dtype=F64),
}


@pytest.mark.parametrize("make", [DBMTL, MoCo, IMTLG], ids=["db_mtl", "moco", "imtl_g"])
@pytest.mark.parametrize("name", list(BAD_ROWS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_badly_scaled_gradients_give_finite_outputs(make, name: str, dtype) -> None:
    w: Weighting = make()
    rows = BAD_ROWS[name].to(dtype)
    for losses in ([1.0, 1e-4], [1e3, 0.5]):
        out = w(stat(rows, torch.tensor(losses, dtype=F64), ["a", "b"]))
        assert bool(torch.isfinite(out).all()), out
        expected = (len(rows),) if w.stat == "gram" else (rows.shape[1],)
        assert out.shape == expected
        if w.stat == "direction":
            assert out.dtype == dtype  # the driver adds it onto .grad as it is


def test_an_overflowing_direction_stops_the_run() -> None:
    rows = torch.tensor([[3e38, 0.0], [0.0, 1.0]], dtype=torch.float32)  # / (1e-8 + ε): inf
    with pytest.raises(NonFiniteWeights, match="DB-MTL gave block 'trunk' a non-finite"):
        DBMTL()(stat(rows, torch.tensor([1e-8, 1.0], dtype=F64), ["a", "b"]))


@pytest.mark.parametrize("make", [DBMTL, MoCo], ids=["db_mtl", "moco"])
def test_tracked_state_refuses_another_block_shape(make) -> None:
    w = make()
    w(stat(J, STEPS[0][1]))
    with pytest.raises(ConfigError, match="tracks each task's gradient on block 'trunk'"):
        w(stat(J[:, :3], STEPS[0][1]))  # on=z with a smaller last batch
    with pytest.raises(ConfigError, match=r"balancer.on=params"):
        w(stat(J[:2], STEPS[0][1][:2], ["a", "b"]))


@pytest.mark.parametrize("make", [DBMTL, MoCo], ids=["db_mtl", "moco"])
def test_weighting_state_round_trip_gives_the_same_next_output(make) -> None:
    first = make()
    first(stat(*STEPS[0]))
    first(stat(*STEPS[1]))
    saved = copy.deepcopy(first.state_dict())
    expected = first(stat(*STEPS[2]))
    second = make()
    second.load_state_dict(saved)
    assert torch.equal(second(stat(*STEPS[2])), expected)


# ------------------------------------------------------------------------- through the driver


def model_and_losses(seed: int = 0) -> tuple[MultiTaskModel, dict[str, Tensor]]:
    """A shared trunk (both tasks) and one head per task (one user each)."""
    torch.manual_seed(seed)
    blocks = {
        "trunk": nn.Linear(3, 4, bias=False),
        "head:a": nn.Linear(4, 1),
        "head:b": nn.Linear(4, 1),
    }
    model = MultiTaskModel(blocks, {"a": ["trunk", "head:a"], "b": ["trunk", "head:b"]})
    out = model(torch.randn(6, 3))
    losses = {"a": out["a"].pow(2).mean() + 0.1, "b": 3 * (out["b"] - 1).pow(2).mean()}
    return model, losses


def grads(model: MultiTaskModel, loss: Tensor) -> dict[str, Tensor]:
    names = ["trunk", "head:a", "head:b"]
    ps = [model.blocks[b].weight for b in names]
    gs = torch.autograd.grad(loss, ps, retain_graph=True, allow_unused=True)
    return {
        b: g if g is not None else torch.zeros_like(p)
        for b, g, p in zip(names, gs, ps, strict=True)
    }


@pytest.mark.parametrize(
    "weighting",
    [functools.partial(DBMTL, beta=0.5), functools.partial(MoCo, rho=0.1)],
    ids=["db_mtl", "moco"],
)
def test_per_block_direction_on_the_trunk_own_gradient_on_the_heads(weighting) -> None:
    model, losses = model_and_losses()
    g = {t: grads(model, losses[t]) for t in "ab"}
    rows = torch.stack([g[t]["trunk"].flatten() for t in "ab"]).double()
    values = torch.stack([losses[t].detach() for t in "ab"]).double()
    if weighting.func is DBMTL:
        expected = db_mtl_reference([(rows, values)], 0.5, 0.0)[0][0]
    else:
        expected = moco_reference([(rows, values)], 0.5, 0.5, 0.1, 0.5, 0.1)[0][0]
    balancer = PerBlock(["a", "b"], weighting=weighting, name="x")
    log = balancer.backward(losses, model)
    trunk = model.blocks["trunk"].weight.grad
    assert torch.allclose(trunk.flatten().double(), expected, rtol=1e-5, atol=1e-7)
    assert torch.equal(model.blocks["head:a"].weight.grad, g["a"]["head:a"])  # one user
    assert torch.equal(model.blocks["head:b"].weight.grad, g["b"]["head:b"])
    assert set(log) >= {"weight/a", "weight/b"}
    assert set(balancer.state_dict()["blocks"]) == {"trunk"}  # only shared blocks keep state


def test_dual_balancing_back_propagates_the_log_losses() -> None:
    model, losses = model_and_losses()
    logs = {t: torch.log(losses[t] + 1e-8) for t in "ab"}
    g = {t: grads(model, logs[t]) for t in "ab"}
    rows = torch.stack([g[t]["trunk"].flatten() for t in "ab"]).double()
    expected = db_mtl_reference([(rows, torch.ones(2, dtype=F64))], 0.9, 0.0, log_grad=False)[0][0]
    DualBalancing(["a", "b"]).backward(losses, model)
    trunk = model.blocks["trunk"].weight.grad
    assert torch.allclose(trunk.flatten().double(), expected, rtol=1e-5, atol=1e-7)
    head = model.blocks["head:a"].weight.grad
    assert torch.equal(head, g["a"]["head:a"])  # LibMTL: heads descend log L_t too
    plain = grads(model, losses["a"])["head:a"]
    assert torch.allclose(head, plain / float(losses["a"].detach()), rtol=1e-6)


def test_imtl_scales_the_losses_and_learns_the_scales() -> None:
    lr, s0 = 0.05, torch.tensor([math.log(2.0), math.log(0.5)])
    balancer = IMTL(["a", "b"], lr=lr)
    with torch.no_grad():
        balancer.scale.copy_(s0)
    model, losses = model_and_losses()
    g = {t: grads(model, losses[t]) for t in "ab"}
    scaled = torch.stack([2.0 * g["a"]["trunk"].flatten(), 0.5 * g["b"]["trunk"].flatten()])
    alpha = libmtl_imtl_g(scaled.double())
    log = balancer.backward(losses, model)
    trunk = model.blocks["trunk"].weight.grad.flatten().double()
    assert torch.allclose(trunk, alpha @ scaled.double(), rtol=1e-5, atol=1e-7)
    proj = unit_projections(alpha, scaled.double())
    assert torch.allclose(proj, proj[0].expand(2), rtol=1e-8)
    # One user: the gradient of the scaled loss e^{s_t} L_t, as LibMTL back-propagates it.
    assert torch.allclose(model.blocks["head:a"].weight.grad, 2.0 * g["a"]["head:a"], rtol=1e-6)
    assert torch.allclose(model.blocks["head:b"].weight.grad, 0.5 * g["b"]["head:b"], rtol=1e-6)
    assert log["weight/a"] == pytest.approx(2.0 * float(alpha[0]), rel=1e-5)
    assert log["imtl/scale/b"] == pytest.approx(0.5)
    # Adam's first step moves s_t by lr against the sign of e^{s_t} L_t − 1.
    signs = torch.sign(torch.stack([2 * losses["a"], 0.5 * losses["b"]]).detach() - 1)
    assert torch.allclose(balancer.scale.detach(), s0 - lr * signs, atol=1e-6)


def test_imtl_at_zero_scales_gives_heads_their_own_gradient() -> None:
    model, losses = model_and_losses()
    g = {t: grads(model, losses[t]) for t in "ab"}
    IMTL(["a", "b"]).backward(losses, model)
    assert torch.equal(model.blocks["head:a"].weight.grad, g["a"]["head:a"])
    assert torch.equal(model.blocks["head:b"].weight.grad, g["b"]["head:b"])


@pytest.mark.parametrize("build", [lambda: IMTL(["a", "b"], lr=0.1), lambda: DualBalancing(["a", "b"]),
                                   lambda: PerBlock(["a", "b"], weighting=MoCo, name="moco")])  # fmt: skip
def test_balancer_state_round_trip_gives_the_same_next_update(build) -> None:
    first = build()
    for seed in (1, 2):
        model, losses = model_and_losses(seed)
        first.backward(losses, model)
    saved = copy.deepcopy(first.state_dict())
    updates = []
    for balancer in (first, build()):
        if balancer is not first:
            balancer.load_state_dict(saved)
        model, losses = model_and_losses(3)
        balancer.backward(losses, model)
        updates.append([p.grad.clone() for p in model.parameters()])
        updates.append(balancer.state_dict().get("scale", torch.zeros(())))
    assert all(torch.equal(x, y) for x, y in zip(updates[0], updates[2], strict=True))
    assert torch.equal(updates[1], updates[3])


# ---------------------------------------------------------------------------------- arguments


def test_argument_errors_name_the_keys() -> None:
    with pytest.raises(ConfigError, match=r"`balancer.weighting.beta` should be in \[0, 1\)"):
        DBMTL(beta=1.0)
    with pytest.raises(ConfigError) as e:
        PerBlock(["a", "b"], weighting=functools.partial(MoCo, beta=0.0, rho=-1.0), name="moco")
    assert "`balancer.weighting.beta` should be in (0, 1]" in str(e.value)
    assert "`balancer.weighting.rho` should be >= 0. Found `balancer.weighting.rho = -1.0`" in str(
        e.value
    )
    with pytest.raises(ConfigError) as e:
        DualBalancing(["a", "b"], beta=2.0, beta_sigma=-1.0)
    assert "`balancer.beta` should be" in str(e.value)
    assert "`balancer.beta_sigma` should be >= 0" in str(e.value)
    with pytest.raises(ConfigError) as e:
        IMTL(["a", "b"], lr=0.0, on="x")
    assert "`balancer.lr` should be > 0. Found `balancer.lr = 0.0`" in str(e.value)
    assert "`balancer.on` should be one of" in str(e.value)
