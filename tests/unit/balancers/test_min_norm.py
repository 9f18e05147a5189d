"""Min-norm solvers (seed 001 eq. 4.5; Sener & Koltun 2018) against an exact reference QP."""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from torch import Tensor

from mtlrun.balancers.min_norm import (
    MinNormResult,
    gram_matrix,
    is_pareto_stationary,
    min_norm,
    project_simplex,
)

REL, ABS = 1e-6, 1e-12  # value agreement; ABS is relative to the largest ||g_t||²


def reference_value(G: Tensor) -> float:
    """Exact min of αᵀGα on the simplex: enumerate supports S, solve each face's KKT system.

    On S the face minimiser solves [2 G_SS, 1; 1ᵀ, 0] [a; −μ] = [0; 1]; the optimum is the best
    non-negative one (some optimum is a vertex of {optimal α} ∩ orthant, unique on its face).
    """
    g = G.numpy()
    best = np.inf
    for r in range(1, len(g) + 1):
        for support in itertools.combinations(range(len(g)), r):
            s = list(support)
            kkt = np.zeros((r + 1, r + 1))
            kkt[:r, :r], kkt[:r, r], kkt[r, :r] = 2 * g[np.ix_(s, s)], 1.0, 1.0
            a = np.linalg.lstsq(kkt, np.eye(r + 1)[r], rcond=None)[0][:r]
            if a.min() >= -1e-12:
                best = min(best, float(a @ g[np.ix_(s, s)] @ a))
    return max(best, 0.0)


def scale_of(G: Tensor) -> float:
    return max(float(G.diagonal().max()), 1.0)


def assert_value(value: float, ref: float, G: Tensor, what: str = "") -> None:
    assert abs(value - ref) <= REL * ref + ABS * scale_of(G), f"{what}: {value} vs ref {ref}"


def assert_on_simplex(result: MinNormResult, T: int) -> None:
    w = result.weights
    assert w.shape == (T,) and w.dtype == torch.float64
    assert bool(torch.isfinite(w).all()) and float(w.min()) >= 0.0
    assert abs(float(w.sum()) - 1.0) <= 1e-9


# ---- the random set: seeded families with the optimum at a vertex, on a face, inside ----

DIMS = (3, 5, 10, 50, 200, 1000)


def _vertex(gen: torch.Generator, T: int, d: int) -> Tensor:
    """g_0 plus gradients g_0 + h + c g_0 (h ⊥ g_0, c ≥ 0): the optimum is the vertex e_0."""
    g0 = torch.randn(d, generator=gen, dtype=torch.float64)
    h = torch.randn(T - 1, d, generator=gen, dtype=torch.float64)
    h -= (h @ g0)[:, None] * g0 / (g0 @ g0)
    c = torch.rand(T - 1, 1, generator=gen, dtype=torch.float64)
    return torch.cat([g0[None], g0 + h + c * g0])


def _interior_zero(gen: torch.Generator, T: int, d: int) -> Tensor:
    """Gradients whose mean with random positive weights is exactly 0 (Pareto-stationary)."""
    g = torch.randn(T, d, generator=gen, dtype=torch.float64)
    a = torch.rand(T, generator=gen, dtype=torch.float64) + 0.1
    return g - (a / a.sum()) @ g


def _colinear(gen: torch.Generator, T: int, d: int) -> Tensor:
    """c_t u: mixed signs give 0, one sign gives the vertex of the smallest |c_t|."""
    u = torch.randn(d, generator=gen, dtype=torch.float64)
    c = torch.randn(T, generator=gen, dtype=torch.float64)
    return c[:, None] * u


def _duplicated(gen: torch.Generator, T: int, d: int) -> Tensor:
    g = torch.randn((T + 1) // 2, d, generator=gen, dtype=torch.float64)
    return torch.cat([g, g])[:T]


def _zero_row(gen: torch.Generator, T: int, d: int) -> Tensor:
    g = torch.randn(T, d, generator=gen, dtype=torch.float64)
    g[int(torch.randint(T, (1,), generator=gen))] = 0.0
    return g


def _shared(gen: torch.Generator, T: int, d: int) -> Tensor:
    """A strong common direction: ill-conditioned G, optimum usually on a face."""
    common = 3.0 * torch.randn(1, d, generator=gen, dtype=torch.float64)
    return torch.randn(T, d, generator=gen, dtype=torch.float64) + common


FAMILIES = {
    "gauss": (10, lambda gen, T, d: torch.randn(T, d, generator=gen, dtype=torch.float64)),
    "shared": (6, _shared),
    "vertex": (5, _vertex),
    "interior_zero": (5, _interior_zero),
    "colinear": (4, _colinear),
    "duplicated": (3, _duplicated),
    "zero_row": (2, _zero_row),
}


@functools.cache
def problems() -> dict[str, Tensor]:
    """About 35 seeded problems, T in 2..10, d in 3..1000 (plus T > d cases)."""
    gen = torch.Generator().manual_seed(2018)
    out: dict[str, Tensor] = {}
    for family, (count, make) in FAMILIES.items():
        for i in range(count):
            T = 2 if i == 0 else int(torch.randint(2, 11, (1,), generator=gen))
            d = DIMS[int(torch.randint(len(DIMS), (1,), generator=gen))]
            out[f"{family}-{i}-T{T}-d{d}"] = make(gen, T, d)
    for T in (8, 10):  # more tasks than dimensions: 0 is usually inside the hull
        out[f"wide-T{T}-d3"] = torch.randn(T, 3, generator=gen, dtype=torch.float64)
    return out


@functools.cache
def reference(name: str) -> tuple[Tensor, float]:
    G = gram_matrix(problems()[name])
    return G, reference_value(G)


NAMES = list(problems())


@pytest.mark.parametrize("name", NAMES)
def test_projection_matches_exact_qp(name: str) -> None:
    G, ref = reference(name)
    result = min_norm(problems()[name], "projection")
    assert_on_simplex(result, G.shape[0])
    assert_value(result.norm_sq, ref, G, name)
    assert result.solver == "projection" and 1 <= result.iterations < 250


@pytest.mark.parametrize("name", NAMES)
def test_frank_wolfe_matches_exact_qp_or_its_rate(name: str) -> None:
    """Exact where FW stops by itself; else within its O(1/k) bound 4 diam² / (k + 2).

    FW with line search converges sublinearly when the optimum lies on a proper face
    (Jaggi 2013, Thm 1 with curvature C_f = 2 diam² for ||x||²) — the slowness of seed 001
    Fig. 3 — so 250 steps do not reach 1e-6 there.
    """
    G, ref = reference(name)
    result = min_norm(problems()[name], "frank_wolfe")
    assert_on_simplex(result, G.shape[0])
    assert result.norm_sq >= ref - ABS * scale_of(G)
    if result.iterations < 250:
        assert_value(result.norm_sq, ref, G, name)
    else:
        diam_sq = float((G.diagonal()[:, None] + G.diagonal()[None, :] - 2 * G).max())
        assert result.norm_sq - ref <= 4 * diam_sq / (result.iterations + 2)


@pytest.mark.parametrize("name", [n for n in NAMES if problems()[n].shape[0] == 2])
def test_exact_and_frank_wolfe_solve_two_tasks(name: str) -> None:
    G, ref = reference(name)
    exact = min_norm(problems()[name], "exact")
    assert_on_simplex(exact, 2)
    assert exact.iterations == 0 and exact.solver == "exact"
    for result in (exact, min_norm(problems()[name], "frank_wolfe")):
        assert_value(result.norm_sq, ref, G, name)


def test_projection_needs_fewer_iterations_than_frank_wolfe() -> None:
    """Seed 001 Fig. 3: the projection method takes far fewer iterations than Frank–Wolfe."""
    fw = [min_norm(g, "frank_wolfe").iterations for g in problems().values()]
    proj = [min_norm(g, "projection").iterations for g in problems().values()]
    assert np.mean(proj) <= 0.25 * np.mean(fw), (np.mean(proj), np.mean(fw))


def test_reference_agrees_with_scipy_slsqp() -> None:
    """The enumeration reference against a generic QP solver on a few problems."""
    for name in NAMES[:12]:
        G, ref = reference(name)
        g = G.numpy()
        T = len(g)
        sol = minimize(
            lambda a, g=g: a @ g @ a,
            np.full(T, 1.0 / T),
            jac=lambda a, g=g: 2 * g @ a,
            bounds=[(0.0, 1.0)] * T,
            constraints=[{"type": "eq", "fun": lambda a: a.sum() - 1.0}],
            method="SLSQP",
            options={"ftol": 1e-14, "maxiter": 500},
        )
        assert sol.fun >= ref - 1e-9 * scale_of(G)
        assert sol.fun - ref <= 1e-5 * scale_of(G), name


@pytest.mark.parametrize(("T", "seed"), [(2, 0), (6, 1)])
def test_million_dimensional_gradients(T: int, seed: int) -> None:
    """d = 1e6 in float32 (a real layer's size); the Gram matrix is formed in float64."""
    gen = torch.Generator().manual_seed(seed)
    grads = torch.randn(T, 1_000_000, generator=gen) + torch.randn(1, 1_000_000, generator=gen)
    G = gram_matrix(grads)
    ref = reference_value(G)
    projection = min_norm(grads, "projection")
    assert_on_simplex(projection, T)
    assert_value(projection.norm_sq, ref, G)
    if T == 2:
        assert_value(min_norm(G, "exact", gram=True).norm_sq, ref, G)
    fw = min_norm(G, "frank_wolfe", gram=True)
    assert fw.iterations == 250 or abs(fw.norm_sq - ref) <= REL * ref


# ---- hand cases for the two-task closed form (Sener & Koltun 2018, Alg. 1) ----


def test_exact_orthogonal_unit_vectors() -> None:
    result = min_norm(torch.eye(2, 5), "exact")
    torch.testing.assert_close(result.weights, torch.tensor([0.5, 0.5], dtype=torch.float64))
    assert result.norm_sq == pytest.approx(0.5, abs=1e-15)


def test_exact_parallel_vectors_take_the_shorter() -> None:
    g1 = torch.tensor([1.0, -2.0, 0.5])
    result = min_norm(torch.stack([g1, 2 * g1]), "exact")
    torch.testing.assert_close(result.weights, torch.tensor([1.0, 0.0], dtype=torch.float64))
    assert result.norm_sq == pytest.approx(float(g1 @ g1), rel=1e-12)


@pytest.mark.parametrize("solver", ["exact", "frank_wolfe", "projection"])
def test_opposite_vectors_reach_zero(solver: str) -> None:
    g1 = torch.tensor([3.0, 4.0])
    result = min_norm(torch.stack([g1, -2 * g1]), solver)
    assert result.norm_sq <= 1e-12
    torch.testing.assert_close(result.weights, torch.tensor([2 / 3, 1 / 3], dtype=torch.float64))


def test_exact_identical_gradients() -> None:
    result = min_norm(torch.ones(2, 4), "exact")
    assert result.norm_sq == pytest.approx(4.0)
    assert_on_simplex(result, 2)


# ---- the projection onto the simplex (Duchi et al. 2008) ----


@pytest.mark.parametrize(
    ("v", "expected"),
    [
        ([0.5, 0.5], [0.5, 0.5]),
        ([2.0, 0.0], [1.0, 0.0]),
        ([1.0, 1.0, 1.0], [1 / 3, 1 / 3, 1 / 3]),
        ([-1.0, -1.0], [0.5, 0.5]),
        ([0.0, 0.0, 5.0, 4.5], [0.0, 0.0, 0.75, 0.25]),
        ([7.0], [1.0]),
    ],
)
def test_project_simplex_hand_cases(v: list[float], expected: list[float]) -> None:
    out = project_simplex(torch.tensor(v, dtype=torch.float64))
    torch.testing.assert_close(out, torch.tensor(expected, dtype=torch.float64))


def test_project_simplex_is_the_nearest_simplex_point() -> None:
    """KKT of min ||p − v||² on the simplex (p = max(v + λ, 0) exactly) and scipy agreement."""
    gen = torch.Generator().manual_seed(7)
    for _ in range(20):
        T = int(torch.randint(1, 12, (1,), generator=gen))
        v = 2 * torch.randn(T, generator=gen, dtype=torch.float64)
        p = project_simplex(v)
        assert float(p.min()) >= 0.0 and abs(float(p.sum()) - 1.0) <= 1e-12
        lam = float((p - v)[p > 0].mean())
        torch.testing.assert_close(p, torch.clamp(v + lam, min=0.0), rtol=0, atol=1e-12)
        x = v.numpy()
        sol = minimize(
            lambda a, x=x: ((a - x) ** 2).sum(),
            np.full(T, 1.0 / T),
            jac=lambda a, x=x: 2 * (a - x),
            bounds=[(0.0, 1.0)] * T,
            constraints=[{"type": "eq", "fun": lambda a: a.sum() - 1.0}],
            method="SLSQP",
            options={"ftol": 1e-14},
        )
        assert float(((p - v) ** 2).sum()) <= sol.fun + 1e-10
        np.testing.assert_allclose(p.numpy(), sol.x, atol=1e-5)


# ---- inputs: Gram matrix, order, degenerate and invalid ----


@pytest.mark.parametrize("solver", ["frank_wolfe", "projection"])
def test_gram_input_gives_the_same_result(solver: str) -> None:
    for name in NAMES[::4]:
        grads = problems()[name]
        a, b = min_norm(grads, solver), min_norm(gram_matrix(grads), solver, gram=True)
        torch.testing.assert_close(a.weights, b.weights, rtol=0, atol=1e-12)
        assert a.norm_sq == pytest.approx(b.norm_sq, rel=1e-12, abs=1e-14)
        assert a.iterations == b.iterations


@pytest.mark.parametrize("solver", ["exact", "projection"])
def test_invariant_to_task_order(solver: str) -> None:
    """Permuting the rows permutes the weights (unique here: T <= d, generic) and keeps the value."""
    gen = torch.Generator().manual_seed(3)
    for _ in range(8):
        T = 2 if solver == "exact" else int(torch.randint(3, 11, (1,), generator=gen))
        grads = _shared(gen, T, 20)
        perm = torch.randperm(T, generator=gen)
        a, b = min_norm(grads, solver), min_norm(grads[perm], solver)
        torch.testing.assert_close(b.weights, a.weights[perm], rtol=0, atol=1e-8)
        assert b.norm_sq == pytest.approx(a.norm_sq, rel=1e-9)


@pytest.mark.parametrize("solver", ["exact", "frank_wolfe", "projection"])
def test_degenerate_inputs(solver: str) -> None:
    one = min_norm(torch.tensor([[3.0, 4.0]]), solver)
    assert one.weights.tolist() == [1.0] and one.norm_sq == pytest.approx(25.0)
    zeros = min_norm(torch.zeros(2, 7), solver)
    assert zeros.weights.tolist() == [0.5, 0.5] and zeros.norm_sq == 0.0
    assert zeros.iterations == 0
    if solver != "exact":
        assert min_norm(torch.zeros(4, 7), solver).weights.tolist() == [0.25] * 4
        with_zero = min_norm(torch.tensor([[1.0, 2.0], [0.0, 0.0], [-3.0, 1.0]]), solver)
        assert with_zero.norm_sq <= 1e-12


@pytest.mark.parametrize(("bad", "word"), [(float("nan"), "NaN"), (float("inf"), "inf")])
def test_non_finite_input_is_refused_by_name(bad: float, word: str) -> None:
    grads = torch.ones(3, 4)
    grads[1, 2] = bad
    with pytest.raises(ValueError, match=f"found {word} in the gradients"):
        min_norm(grads)
    with pytest.raises(ValueError, match=f"found {word} in the Gram matrix"):
        min_norm(grads[:, :3], gram=True)


@pytest.mark.parametrize(
    ("kwargs", "grads", "message"),
    [
        ({"solver": "exact"}, torch.eye(3), "two tasks; found T = 3"),
        ({"solver": "newton"}, torch.eye(2), "Unknown min-norm solver 'newton'"),
        ({"gram": True}, torch.tensor([[1.0, 2.0], [0.0, 1.0]]), "not symmetric"),
        ({"gram": True}, torch.tensor([[1.0, 2.0], [2.0, 1.0]]), "not positive semi-definite"),
        ({"gram": True}, torch.ones(2, 3), "should be square"),
        ({}, torch.ones(4), "should be a \\(T, d\\) matrix"),
        ({}, torch.ones(0, 4), "T >= 1"),
    ],
)
def test_invalid_inputs(kwargs: dict, grads: Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        min_norm(grads, **kwargs)


def test_pareto_stationarity() -> None:
    """Seed 001 def. 4.3: a convex combination of the gradients vanishes."""
    g = torch.tensor([[1.0, 2.0], [-1.0, -2.0]])
    assert is_pareto_stationary(min_norm(g), grads_norm_sq_max=5.0)
    orthogonal = torch.eye(2)
    assert not is_pareto_stationary(min_norm(orthogonal), grads_norm_sq_max=1.0)
    assert is_pareto_stationary(min_norm(torch.zeros(2, 3)), grads_norm_sq_max=0.0)
