"""Min-norm solvers (seed 001 eq. 4.5; Sener & Koltun 2018) against an exact reference QP.

Two problem sets: the random set (optimum at a vertex, on a face, inside) and the audit families
(one scale of norms from 1e-5 to 1e5, norms spread over 10^±3 and 10^±6, colinear, duplicated
and zero rows, each exact and nearly so, randn · 3e3), T = 2..10, d = 1..10^4. The acceptance
rule: the value within 1e-6 relative of the reference, or 1e-12 · max_t ||g_t||² when it is ~0.
scripts/bench_min_norm.py reports the same families as a table.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

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
    """The exact min of αᵀGα on the simplex (see ``reference_min_norm``)."""
    return reference_min_norm(G).value


@dataclass(frozen=True)
class Reference:
    """``value``: min αᵀGα on the simplex; ``weights``: a minimiser; ``certified``: the KKT
    conditions of ``weights`` were checked in exact rational arithmetic."""

    value: float
    weights: np.ndarray
    certified: bool


def reference_min_norm(G: Tensor) -> Reference:
    """Exact min of αᵀGα on the simplex: enumerate supports S, solve each face's KKT system.

    On S the face minimiser solves [2 G_SS, 1; 1ᵀ, 0] [a; −μ] = [0; 1]; the optimum is the best
    non-negative one (some optimum is a vertex of {optimal α} ∩ orthant, unique on its face).
    Each face is solved in float64 on the cosine matrix D⁻¹GD⁻¹ (D = diag ||g_t||), clipped to
    the simplex (so every candidate is feasible and its value an upper bound), and the best
    candidate, smallest support first among ties, is then re-solved in exact rationals
    (``fractions``) on the float64 G: a ≥ 0 and an exact Frank–Wolfe gap 2(aᵀGa − min_t (Ga)_t)
    ≤ 1e-9 aᵀGa certify it to 1e-9 relative (G being PSD up to rounding).
    """
    g = G.numpy()
    T, scale = len(g), float(g.diagonal().max())
    if scale <= 0.0:
        return Reference(0.0, np.full(T, 1.0 / T), True)
    gn = g / scale
    norms = np.sqrt(np.clip(gn.diagonal(), 0.0, None))
    norms[norms == 0.0] = 1.0
    cos = gn / np.outer(norms, norms)
    best, weights, support = np.inf, np.full(T, 1.0 / T), (0,)
    for r in range(1, T + 1):
        supports = list(itertools.combinations(range(T), r))
        alphas = _face_candidates(cos, norms, np.array(supports))
        values = np.einsum("ki,ij,kj->k", alphas, gn, alphas)
        values[~np.isfinite(values)] = np.inf
        k = int(np.argmin(values))  # the first of ties: supports come in a fixed order
        if values[k] < best * (1.0 - 1e-9):
            best, weights, support = float(values[k]), alphas[k], supports[k]
    exact = _exact_kkt(g, support)
    if exact is not None:
        return Reference(max(exact[0], 0.0), exact[1], True)
    return Reference(scale * max(best, 0.0), weights, False)


def _face_candidates(cos: np.ndarray, norms: np.ndarray, supports: np.ndarray) -> np.ndarray:
    """(K, T) feasible α: each support's equilibrated face KKT solution, clipped and rescaled."""
    K, r = supports.shape
    inv = 1.0 / norms[supports]  # (K, r)
    w = inv / inv.max(axis=1, keepdims=True)
    kkt = np.zeros((K, r + 1, r + 1))
    kkt[:, :r, :r] = cos[supports[:, :, None], supports[:, None, :]]
    kkt[:, :r, r], kkt[:, r, :r] = w, w
    x = np.linalg.pinv(kkt, rcond=1e-13)[:, :r, r]  # the solution for the right side e_r
    a = np.clip(x * inv, 0.0, None)
    total = a.sum(axis=1, keepdims=True)
    alphas = np.zeros((K, len(cos)))
    np.put_along_axis(alphas, supports, a / np.where(total > 0, total, np.nan), axis=1)
    return alphas


def _exact_kkt(g: np.ndarray, support: tuple[int, ...]) -> tuple[float, np.ndarray] | None:
    """(value, α) of the face S solved exactly, if it satisfies the KKT conditions; else None."""
    s, r = list(support), len(support)
    G = [[Fraction(float(g[i, j])) for j in range(len(g))] for i in range(len(g))]
    rows = [[2 * G[i][j] for j in s] + [Fraction(1), Fraction(0)] for i in s]
    rows.append([Fraction(1)] * r + [Fraction(0), Fraction(1)])
    for col in range(r + 1):  # Gauss–Jordan, exact
        pivot = next((k for k in range(col, r + 1) if rows[k][col] != 0), None)
        if pivot is None:
            return None
        rows[col], rows[pivot] = rows[pivot], rows[col]
        rows[col] = [v / rows[col][col] for v in rows[col]]
        for k in range(r + 1):
            if k != col and rows[k][col] != 0:
                rows[k] = [a - rows[k][col] * b for a, b in zip(rows[k], rows[col], strict=True)]
    a = [rows[k][r + 1] for k in range(r)]
    if min(a) < 0:
        return None
    alpha = [Fraction(0)] * len(g)
    for k, i in enumerate(s):
        alpha[i] = a[k]
    g_alpha = [sum(G[t][i] * alpha[i] for i in s) for t in range(len(g))]
    value = sum(alpha[i] * g_alpha[i] for i in s)
    if 2 * (value - min(g_alpha)) > Fraction(1, 10**9) * value:  # FW gap ≥ f − f*, exact
        return None
    return float(value), np.array([float(v) for v in alpha])


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


# ---- the audit families: one scale, many scales, degenerate rows, the crash case ----


def _norms(lo: float, hi: float) -> Callable[[torch.Generator, int, int], Tensor]:
    """Random directions with row norms 10^U(lo, hi)."""

    def make(gen: torch.Generator, T: int, d: int) -> Tensor:
        u = torch.randn(T, d, generator=gen, dtype=torch.float64)
        exponent = lo + (hi - lo) * torch.rand(T, 1, generator=gen, dtype=torch.float64)
        return u / u.norm(dim=1, keepdim=True) * 10.0**exponent

    return make


def _spread_opposed(gen: torch.Generator, T: int, d: int) -> Tensor:
    """Norms over 10^±6 with the small rows roughly opposite the large ones: f* ≪ min ||g||²."""
    g = _norms(-6.0, 6.0)(gen, T, d)
    small = g.norm(dim=1) < float(g.norm(dim=1).median())
    shared = torch.randn(d, generator=gen, dtype=torch.float64)
    signs = torch.where(small, -1.0, 1.0).to(torch.float64)
    return g + 0.9 * signs[:, None] * g.norm(dim=1, keepdim=True) * shared / shared.norm()


def _near(make: Callable[[torch.Generator, int, int], Tensor]) -> Callable[..., Tensor]:
    """A family with each row moved by 1e-6 of its norm: nearly, not exactly, degenerate."""

    def near(gen: torch.Generator, T: int, d: int) -> Tensor:
        g = make(gen, T, d)
        noise = torch.randn(T, d, generator=gen, dtype=torch.float64)
        return g + 1e-6 * g.norm(dim=1, keepdim=True) * noise / noise.norm(dim=1, keepdim=True)

    return near


FAMILY_MAKERS: dict[str, Callable[[torch.Generator, int, int], Tensor]] = {
    "unit_norms": _norms(0.0, 0.0),
    "norms_1e5": _norms(4.5, 5.5),
    "norms_1e-5": _norms(-5.5, -4.5),
    "spread_1e3": _norms(-3.0, 3.0),
    "spread_1e6": _norms(-6.0, 6.0),
    "spread_1e6_opposed": _spread_opposed,
    "colinear": _colinear,
    "near_colinear": _near(_colinear),
    "duplicated": _duplicated,
    "near_duplicated": _near(_duplicated),
    "zero_row": _zero_row,
    "randn_3e3": lambda gen, T, d: 3e3 * torch.randn(T, d, generator=gen, dtype=torch.float64),
}
AUDIT_SHAPES = [(T, d) for T in (2, 3, 5, 10) for d in (1, 20, 10_000)]


def audit_problem(family: str, T: int, d: int, seed: int = 0) -> Tensor:
    """One seeded problem of a family; the seed mixes family, T, d and ``seed``."""
    index = list(FAMILY_MAKERS).index(family)
    gen = torch.Generator().manual_seed(1_000_003 * seed + 10_007 * index + 101 * T + d)
    return FAMILY_MAKERS[family](gen, T, d)


def audit_crash_case() -> Tensor:
    """The audit's crash: torch.manual_seed(0); min_norm(torch.randn(2, 100) * 3e3)."""
    return torch.randn(2, 100, generator=torch.Generator().manual_seed(0)) * 3e3


AUDIT = [(f, T, d) for f in FAMILY_MAKERS for T, d in AUDIT_SHAPES]
AUDIT_IDS = [f"{f}-T{T}-d{d}" for f, T, d in AUDIT]


@functools.cache
def audit_reference(family: str, T: int, d: int) -> tuple[Tensor, Reference]:
    grads = audit_crash_case() if family == "audit_crash" else audit_problem(family, T, d)
    return grads, reference_min_norm(gram_matrix(grads))


def assert_close_to_reference(value: float, ref: float, scale: float, what: str) -> None:
    """The acceptance rule: 1e-6 relative, or 1e-12 · max ||g_t||² when the optimum is ~0."""
    assert abs(value - ref) <= max(REL * ref, ABS * scale), f"{what}: {value} vs ref {ref}"


@pytest.mark.parametrize(("family", "T", "d"), AUDIT, ids=AUDIT_IDS)
def test_projection_is_exact_on_every_family(family: str, T: int, d: int) -> None:
    """The default solver to 1e-6 of the reference, whatever the scale or spread of the norms."""
    grads, ref = audit_reference(family, T, d)
    result = min_norm(grads, "projection")
    assert_on_simplex(result, T)
    scale = float(grads.norm(dim=1).max()) ** 2
    assert_close_to_reference(result.norm_sq, ref.value, scale, "projection")
    assert 1 <= result.iterations <= 60


@pytest.mark.parametrize(
    ("family", "T", "d"),
    [c for c in AUDIT if c[1] == 2] + [("audit_crash", 2, 100)],
    ids=[i for c, i in zip(AUDIT, AUDIT_IDS, strict=True) if c[1] == 2] + ["audit_crash"],
)
def test_two_task_solvers_are_exact_on_every_family(family: str, T: int, d: int) -> None:
    """``exact`` and ``projection`` (the default) to 1e-6; the audit's crash case among them."""
    grads, ref = audit_reference(family, T, d)
    scale = float(grads.double().norm(dim=1).max()) ** 2
    for solver in ("exact", "projection"):
        result = min_norm(grads, solver)
        assert_on_simplex(result, 2)
        assert_close_to_reference(result.norm_sq, ref.value, scale, solver)


def test_the_audit_crash_case_is_solved() -> None:
    """torch.manual_seed(0); min_norm(torch.randn(2, 100) * 3e3) used to raise in the projection."""
    torch.manual_seed(0)
    grads = torch.randn(2, 100) * 3e3
    result = min_norm(grads)
    assert_on_simplex(result, 2)
    G = gram_matrix(grads)
    assert_close_to_reference(result.norm_sq, reference_value(G), float(G.diagonal().max()), "")


SCALED = [
    (f, T, d, solver)
    for f, T, d in AUDIT
    if d == 20
    for solver in ("exact", "frank_wolfe", "projection")
    if solver != "exact" or T == 2
]


@pytest.mark.parametrize("factor", [1e-8, 1e8], ids=["x1e-8", "x1e8"])
@pytest.mark.parametrize(
    ("family", "T", "d", "solver"), SCALED, ids=[f"{s}-{f}-T{T}-d{d}" for f, T, d, s in SCALED]
)
def test_scaling_every_gradient_scales_the_value(
    family: str, T: int, d: int, solver: str, factor: float
) -> None:
    """min over Δ of ||Σ α_t c g_t||² = c² · min ||Σ α_t g_t||²: the solvers see G / max diag."""
    grads, ref = audit_reference(family, T, d)
    base = min_norm(grads, solver)
    scaled = min_norm(grads * factor, solver)
    assert_on_simplex(scaled, T)
    scale = float(grads.norm(dim=1).max()) ** 2
    assert_close_to_reference(scaled.norm_sq / factor**2, base.norm_sq, scale, solver)
    if solver != "frank_wolfe":
        assert_close_to_reference(scaled.norm_sq / factor**2, ref.value, scale, solver)


@pytest.mark.parametrize("tol", [1e-4, 1e-12], ids=["tol1e-4", "tol1e-12"])
@pytest.mark.parametrize(("family", "T", "d"), AUDIT, ids=AUDIT_IDS)
def test_frank_wolfe_stops_on_its_duality_gap(family: str, T: int, d: int, tol: float) -> None:
    """Before max_iter FW stops only once its gap 2(αᵀGα − min_t (Gα)_t) ≤ tol · max ||g_t||²,
    which bounds f − f* (Jaggi 2013); so f − f* ≤ tol · scale whenever it stops early."""
    grads, ref = audit_reference(family, T, d)
    result = min_norm(grads, "frank_wolfe", max_iter=300, tol=tol)
    assert_on_simplex(result, T)
    G = gram_matrix(grads)
    scale = float(G.diagonal().max())
    alpha = result.weights
    gap = 2.0 * float(alpha @ G @ alpha - (G @ alpha).min())
    assert result.norm_sq >= ref.value - ABS * scale
    if result.iterations < 300:
        assert gap <= tol * scale * (1 + 1e-9) + 1e-15 * scale
        assert result.norm_sq - ref.value <= tol * scale + 1e-15 * scale


@pytest.mark.parametrize(
    ("T", "seed"),
    [(3, 23), (3, 28), (5, 14), (5, 28)],
    ids=[
        "unit_norms-T3-seed23",
        "unit_norms-T3-seed28",
        "unit_norms-T5-seed14",
        "unit_norms-T5-seed28",
    ],
)
def test_frank_wolfe_error_is_within_tol_when_it_stops(T: int, seed: int) -> None:
    """Unit-norm problems on which a stop on a small step (||Δα||∞ < tol) left f − f* > tol."""
    grads = audit_problem("unit_norms", T, 4, seed)
    result = min_norm(grads, "frank_wolfe", max_iter=1000, tol=1e-3)
    ref = reference_value(gram_matrix(grads))
    assert result.iterations == 1000 or result.norm_sq - ref <= 1e-3, result


def test_reference_is_certified_where_the_optimum_is_not_zero() -> None:
    """The enumeration's best face passes the KKT test in exact rationals (reference check)."""
    for family, T, d in AUDIT:
        grads, ref = audit_reference(family, T, d)
        scale = float(grads.norm(dim=1).max()) ** 2
        assert ref.certified or ref.value <= ABS * scale, (family, T, d, ref.value)


def test_projection_takes_few_steps_on_every_family() -> None:
    """`iterations` counts projected-gradient steps plus face solves; both stay small."""
    steps = [min_norm(audit_reference(f, T, d)[0]).iterations for f, T, d in AUDIT]
    assert max(steps) <= 60 and float(np.mean(steps)) <= 20, (max(steps), np.mean(steps))


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


@pytest.mark.parametrize(
    "v",
    [[1e17, 0.0], [3e300, -3e300, 1.0], [1e-300, 0.0, -1e-300], [1e16, 1e16 + 2.0, -5.0]],
    ids=["1e17", "3e300", "1e-300", "1e16-close"],
)
def test_project_simplex_never_fails_on_finite_input(v: list[float]) -> None:
    """The shift to max(v) = 0 keeps ρ ≥ 1 in floating point (it used to find no index)."""
    p = project_simplex(torch.tensor(v, dtype=torch.float64))
    assert bool(torch.isfinite(p).all()) and float(p.min()) >= 0.0
    assert abs(float(p.sum()) - 1.0) <= 1e-12
    x = np.array(v)
    assert float(p[int(np.argmax(x))]) >= 1.0 / len(v)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_project_simplex_refuses_non_finite_input(bad: float) -> None:
    with pytest.raises(ValueError, match="NaN or inf"):
        project_simplex(torch.tensor([0.5, bad, 0.2], dtype=torch.float64))


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


def test_squared_norms_beyond_float64_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="overflows float64"):
        min_norm(torch.full((2, 3), 1e200, dtype=torch.float64))


def test_pareto_stationarity() -> None:
    """Seed 001 def. 4.3: a convex combination of the gradients vanishes."""
    g = torch.tensor([[1.0, 2.0], [-1.0, -2.0]])
    assert is_pareto_stationary(min_norm(g), grads_norm_sq_max=5.0)
    orthogonal = torch.eye(2)
    assert not is_pareto_stationary(min_norm(orthogonal), grads_norm_sq_max=1.0)
    assert is_pareto_stationary(min_norm(torch.zeros(2, 3)), grads_norm_sq_max=0.0)
