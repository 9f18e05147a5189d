"""The min-norm point of the convex hull of task gradients, the inner problem of MGDA.

Given T task gradients g_1..g_T (rows of a (T, d) tensor) find α on the probability simplex
Δ_T = {α ≥ 0, Σ_t α_t = 1} minimising ||Σ_t α_t g_t||², i.e. min_{α ∈ Δ_T} αᵀ G α with the
(T, T) Gram matrix G = g gᵀ (seed 001 eq. 4.5 and 4.7; Sener & Koltun 2018, eq. 3).
The min value is 0 exactly when the parameters are Pareto-stationary (seed 001 def. 4.3).

Solvers (METHODS §5): ``exact`` (two tasks, closed form), ``frank_wolfe`` (Sener & Koltun 2018,
Alg. 2) and ``projection`` (accelerated projected gradient on the simplex with the sort-based
Euclidean projection of Duchi et al. 2008 / Wang & Carreira-Perpiñán 2013; seed 001 Fig. 3).
All work on the small Gram matrix in float64 on the CPU; only G = g gᵀ touches the gradients.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

SOLVERS = ("exact", "frank_wolfe", "projection")


@dataclass
class MinNormResult:
    """The solution of the min-norm problem.

    ``weights``: α, shape (T,), float64, on the input's device, on the simplex.
    ``norm_sq``: the min value αᵀ G α = ||Σ_t α_t g_t||².
    ``iterations``: solver steps taken (0 for closed forms and degenerate inputs).
    ``solver``: the solver's name.
    """

    weights: Tensor
    norm_sq: float
    iterations: int
    solver: str


def gram_matrix(grads: Tensor) -> Tensor:
    """G = g gᵀ in float64 (seed 001 eq. 4.5 expanded): (T, d) gradients -> (T, T) Gram matrix."""
    if grads.dim() != 2 or grads.shape[0] == 0:
        raise ValueError(f"grads should be a (T, d) matrix, T >= 1; found {tuple(grads.shape)}.")
    g = grads.detach().to(torch.float64)
    gram = g @ g.T
    return 0.5 * (gram + gram.T)


def project_simplex(v: Tensor) -> Tensor:
    """Euclidean projection of v, shape (T,), onto the probability simplex Δ_T (exact).

    Sort-based algorithm (Duchi et al. 2008, Fig. 1; Wang & Carreira-Perpiñán 2013, Alg. 1):
    with u = sort(v) descending, ρ = max{j : u_j + (1 − Σ_{i≤j} u_i) / j > 0} and
    λ = (1 − Σ_{i≤ρ} u_i) / ρ, the projection is max(v + λ, 0). Cost O(T log T).
    """
    if v.dim() != 1 or v.numel() == 0:
        raise ValueError(f"v should be a non-empty vector; found shape {tuple(v.shape)}.")
    u, _ = torch.sort(v, descending=True)
    j = torch.arange(1, v.numel() + 1, dtype=v.dtype, device=v.device)
    shifts = (1.0 - torch.cumsum(u, dim=0)) / j
    rho = int(torch.nonzero(u + shifts > 0).max())  # u_1 + shift_1 = 1 > 0: never empty
    return torch.clamp(v + shifts[rho], min=0.0)


def min_norm(
    grads_or_gram: Tensor,
    solver: str = "projection",
    gram: bool = False,
    max_iter: int = 250,
    tol: float = 1e-10,
) -> MinNormResult:
    """Solve min_{α ∈ Δ_T} ||Σ_t α_t g_t||² (seed 001 eq. 4.5/4.7; Sener & Koltun 2018, eq. 3).

    ``grads_or_gram``: the (T, d) task gradients (rows), or with ``gram=True`` their (T, T)
    Gram matrix. A square input is never guessed to be a Gram matrix. ``solver``: one of
    ``exact`` (T = 2 only), ``frank_wolfe``, ``projection``. ``max_iter``/``tol``: iteration
    cap and stopping threshold on the step of α (iterative solvers only).

    Degenerate inputs: T = 1 gives α = [1] for every solver; all-zero gradients give uniform α
    and norm 0. Colinear or duplicated gradients are fine (α may not be unique; the value is).
    Raises ValueError on NaN/inf, a wrong shape, an unknown solver, or ``exact`` with T > 2.
    """
    if solver not in SOLVERS:
        raise ValueError(f"Unknown min-norm solver {solver!r}; expected one of {list(SOLVERS)}.")
    _check_finite(grads_or_gram, "Gram matrix" if gram else "gradients")
    G = _checked_gram(grads_or_gram) if gram else gram_matrix(grads_or_gram).cpu()
    T = G.shape[0]
    if solver == "exact" and T > 2:
        raise ValueError(f"The `exact` min-norm solver handles two tasks; found T = {T}.")
    device = grads_or_gram.device
    if T == 1 or float(G.diagonal().max()) <= 0.0:  # one task, or every gradient is zero
        alpha = torch.full((T,), 1.0 / T, dtype=torch.float64)
        return _result(alpha, G, 0, solver, device)
    if solver == "exact":
        alpha, steps = _two_task_exact(G), 0
    elif solver == "frank_wolfe":
        alpha, steps = _frank_wolfe(G, max_iter, tol)
    else:
        alpha, steps = _projected_gradient(G, max_iter, tol)
    return _result(alpha, G, steps, solver, device)


def is_pareto_stationary(
    result: MinNormResult, grads_norm_sq_max: float, rel_tol: float = 1e-3
) -> bool:
    """KKT test of seed 001 def. 4.3 (Désidéri 2012): Σ_t α_t g_t ≈ 0 for some α ∈ Δ_T.

    True when the min norm is small relative to the largest task gradient norm:
    ||Σ_t α_t g_t|| ≤ rel_tol · max_t ||g_t||, i.e. norm_sq ≤ rel_tol² · grads_norm_sq_max.
    All-zero gradients (both sides 0) count as stationary.
    """
    return result.norm_sq <= rel_tol**2 * grads_norm_sq_max


def _check_finite(x: Tensor, what: str) -> None:
    """Raise a ValueError naming NaN or inf in the input (checked before any arithmetic)."""
    if bool(torch.isfinite(x).all()):
        return
    problem = "NaN" if bool(torch.isnan(x).any()) else "inf"
    raise ValueError(f"min_norm: found {problem} in the {what}; the min-norm point is undefined.")


def _checked_gram(G: Tensor) -> Tensor:
    """Validate a user-given (T, T) Gram matrix: square, symmetric, PSD (up to rounding)."""
    if G.dim() != 2 or G.shape[0] != G.shape[1] or G.shape[0] == 0:
        raise ValueError(f"A Gram matrix should be square (T, T), T >= 1; found {tuple(G.shape)}.")
    G = G.detach().to(torch.float64).cpu()
    scale = float(G.abs().max())
    if float((G - G.T).abs().max()) > 1e-8 * scale:
        raise ValueError("min_norm: the Gram matrix is not symmetric.")
    G = 0.5 * (G + G.T)
    if float(torch.linalg.eigvalsh(G)[0]) < -1e-8 * scale:
        raise ValueError("min_norm: the Gram matrix is not positive semi-definite.")
    return G


def _result(
    alpha: Tensor, G: Tensor, steps: int, solver: str, device: torch.device
) -> MinNormResult:
    """Pack α (T,) with its value αᵀ G α (clamped at 0 against rounding)."""
    norm_sq = max(float(alpha @ G @ alpha), 0.0)
    return MinNormResult(alpha.to(device), norm_sq, steps, solver)


def _segment_step(xx: float, xy: float, yy: float) -> float:
    """argmin_{γ ∈ [0, 1]} ||(1 − γ) x + γ y||² from the three inner products.

    The two-point closed form of Sener & Koltun 2018, Alg. 1: γ = clip((x − y)·x / ||x − y||²).
    """
    denom = xx - 2.0 * xy + yy
    if denom <= 0.0:  # x == y: every γ is optimal
        return 0.0
    return min(max((xx - xy) / denom, 0.0), 1.0)


def _two_task_exact(G: Tensor) -> Tensor:
    """α for T = 2 in closed form: α_1 = clip((g2 − g1)·g2 / ||g1 − g2||², 0, 1) (S&K Alg. 1)."""
    g11, g12, g22 = float(G[0, 0]), float(G[0, 1]), float(G[1, 1])
    a1 = 0.5 if g11 - 2.0 * g12 + g22 <= 0.0 else _segment_step(g22, g12, g11)
    return torch.tensor([a1, 1.0 - a1], dtype=torch.float64)


def _frank_wolfe(G: Tensor, max_iter: int, tol: float) -> tuple[Tensor, int]:
    """Frank–Wolfe on min αᵀ G α over Δ_T (Sener & Koltun 2018, Alg. 2), from uniform α.

    Each step moves towards the vertex e_t with t = argmin_t (G α)_t (the linear minimiser of
    the gradient 2 G α) by the exact two-point line search; stops when ||Δα||_∞ < tol.
    """
    T = G.shape[0]
    alpha = torch.full((T,), 1.0 / T, dtype=torch.float64)
    g_alpha = G @ alpha  # (T,), kept up to date instead of recomputed
    for step in range(1, max_iter + 1):
        t = int(torch.argmin(g_alpha))
        gamma = _segment_step(float(alpha @ g_alpha), float(g_alpha[t]), float(G[t, t]))
        new = (1.0 - gamma) * alpha
        new[t] += gamma
        delta = float((new - alpha).abs().max())
        alpha, g_alpha = new, (1.0 - gamma) * g_alpha + gamma * G[:, t]
        if delta < tol:
            return alpha, step
    return alpha, max_iter


def _projected_gradient(G: Tensor, max_iter: int, tol: float) -> tuple[Tensor, int]:
    """Accelerated projected gradient (FISTA, Beck & Teboulle 2009) on min αᵀ G α over Δ_T.

    Step 1/L with L = 2 λ_max(G), the Lipschitz constant of the gradient 2 G α; momentum is
    restarted whenever it points uphill (O'Donoghue & Candès 2015, gradient scheme). After each
    projected step α moves towards the minimiser on its face until it meets the simplex's
    boundary (subspace step, Moré & Toraldo 1991), so the method ends in a few steps. Stops when ||α_{k+1} − α_k||_∞ < tol.
    """
    T = G.shape[0]
    step = 1.0 / (2.0 * float(torch.linalg.eigvalsh(G)[-1]))
    alpha = torch.full((T,), 1.0 / T, dtype=torch.float64)
    y, theta = alpha, 1.0
    for k in range(1, max_iter + 1):
        new = project_simplex(y - step * 2.0 * (G @ y))
        if float((new - alpha).abs().max()) < tol:
            return new, k
        face = _face_step(G, new)
        if face is not None:  # momentum is meaningless after the jump
            new, theta_next, y = face, 1.0, face
        elif float((y - new) @ (new - alpha)) > 0.0:  # momentum went uphill: restart
            theta_next, y = 1.0, new
        else:
            theta_next = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * theta * theta))
            y = new + ((theta - 1.0) / theta_next) * (new - alpha)
        alpha, theta = new, theta_next
    return alpha, max_iter


def _face_step(G: Tensor, alpha: Tensor) -> Tensor | None:
    """Move α towards argmin αᵀ G α on the affine hull of its face, stopping at α ≥ 0.

    The face minimiser a solves the KKT system [2 G_SS, 1; 1ᵀ, 0] [a_S; −μ] = [0; 1] on the
    support S of α (least squares: it is consistent as G is PSD, singular for colinear
    gradients). The objective is convex along α → a with its minimum at a, so any step in
    [0, 1] improves; the longest one that keeps α ≥ 0 is taken. None if it does not help.
    """
    support = torch.nonzero(alpha > 0).flatten()
    n = support.numel()
    kkt = torch.zeros((n + 1, n + 1), dtype=torch.float64)
    kkt[:n, :n] = 2.0 * G[support][:, support]
    kkt[:n, n] = 1.0
    kkt[n, :n] = 1.0
    rhs = torch.zeros((n + 1, 1), dtype=torch.float64)
    rhs[n] = 1.0
    a_s = torch.linalg.lstsq(kkt, rhs, driver="gelsd").solution[:n, 0]
    if not bool(torch.isfinite(a_s).all()):
        return None
    direction = a_s - alpha[support]
    shrinking = direction < 0
    tau = 1.0
    if bool(shrinking.any()):
        tau = min(1.0, float((alpha[support][shrinking] / -direction[shrinking]).min()))
    candidate = torch.zeros_like(alpha)
    candidate[support] = torch.clamp(alpha[support] + tau * direction, min=0.0)
    candidate = candidate / candidate.sum()
    if tau <= 0.0 or float(candidate @ G @ candidate) > float(alpha @ G @ alpha):
        return None
    return candidate
