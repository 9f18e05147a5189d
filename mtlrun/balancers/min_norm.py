"""The min-norm point of the convex hull of task gradients, the inner problem of MGDA.

Given T task gradients g_1..g_T (rows of a (T, d) tensor) find α on the probability simplex
Δ_T = {α ≥ 0, Σ_t α_t = 1} minimising ||Σ_t α_t g_t||², i.e. min_{α ∈ Δ_T} αᵀ G α with the
(T, T) Gram matrix G = g gᵀ (seed 001 eq. 4.5 and 4.7; Sener & Koltun 2018, eq. 3).
The min value is 0 exactly when the parameters are Pareto-stationary (seed 001 def. 4.3).

Solvers (METHODS §5): ``exact`` (two tasks, closed form), ``frank_wolfe`` (Sener & Koltun 2018,
Alg. 2, stopped on its duality gap) and ``projection`` (accelerated projected gradient on the
simplex with the sort-based Euclidean projection of Duchi et al. 2008 / Wang & Carreira-Perpiñán
2013, seed 001 Fig. 3, then an active-set refinement that makes it exact up to rounding).
All work on the small Gram matrix in float64 on the CPU; only G = g gᵀ touches the gradients.
The problem is invariant to scaling every gradient by one constant, so the solvers see
Ĝ = G / max_t ||g_t||² (diagonal at most 1) and the value is scaled back at the end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

SOLVERS = ("exact", "frank_wolfe", "projection")

_EPS = torch.finfo(torch.float64).eps
# Face solves: a KKT matrix whose smallest singular value is under _DEPENDENT·σ_max counts as
# singular (affinely dependent gradients); a solution whose backward error
# ||K z − r|| / (||K|| ||z|| + ||r||) exceeds _BACKWARD is refused.
_DEPENDENT = 1e-12
_BACKWARD = 1e-10
# The active set takes in g_t only when it lies beyond the supporting hyperplane of the current
# point x by a cosine of at least _ANGLE: what is left out costs at most ~T·_ANGLE² relative.
_ANGLE = 1e-9
# The projected-gradient phase of `projection` hands over once its support is this many steps old.
_STABLE = 1


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
    The projection commutes with adding a constant to v, so v is first shifted to max(v) = 0:
    then u_1 + λ_1 = 1 holds in floating point too and any finite v has a projection.
    Raises ValueError on a wrong shape or NaN/inf.
    """
    if v.dim() != 1 or v.numel() == 0:
        raise ValueError(f"v should be a non-empty vector; found shape {tuple(v.shape)}.")
    if not bool(torch.isfinite(v).all()):
        raise ValueError("project_simplex: v holds NaN or inf; its projection is undefined.")
    v = v - v.max()
    u, _ = torch.sort(v, descending=True)
    j = torch.arange(1, v.numel() + 1, dtype=v.dtype, device=v.device)
    shifts = (1.0 - torch.cumsum(u, dim=0)) / j
    rho = int(torch.nonzero(u + shifts > 0).max())  # u_1 + shift_1 = 1 > 0 exactly: never empty
    return torch.clamp(v + shifts[rho], min=0.0)


def min_norm(
    grads_or_gram: Tensor,
    solver: str = "projection",
    gram: bool = False,
    max_iter: int = 250,
    tol: float = 1e-12,
) -> MinNormResult:
    """Solve min_{α ∈ Δ_T} ||Σ_t α_t g_t||² (seed 001 eq. 4.5/4.7; Sener & Koltun 2018, eq. 3).

    ``grads_or_gram``: the (T, d) task gradients (rows), or with ``gram=True`` their (T, T)
    Gram matrix. A square input is never guessed to be a Gram matrix. ``solver``: one of
    ``exact`` (T = 2 only), ``frank_wolfe``, ``projection``. ``max_iter``: iteration cap of the
    iterative solvers. ``tol``: duality-gap tolerance relative to s = max_t ||g_t||²: Frank–Wolfe
    stops once its gap 2(αᵀGα − min_t (Gα)_t) ≤ tol·s, which certifies αᵀGα − min ≤ tol·s;
    ``projection`` ends its projected-gradient phase there (or once its support settles) and then
    refines by active sets to rounding accuracy, whatever ``tol``.

    Everything is solved on G / s, so scaling all gradients by a constant c scales ``norm_sq`` by
    c² and leaves α unchanged. Degenerate inputs: T = 1 gives α = [1] for every solver; all-zero
    gradients give uniform α and norm 0.
    Colinear or duplicated gradients are fine (α may not be unique; the value is).
    Raises ValueError on NaN/inf (also squared norms beyond float64), a wrong shape, an unknown
    solver, or ``exact`` with T > 2.
    """
    if solver not in SOLVERS:
        raise ValueError(f"Unknown min-norm solver {solver!r}; expected one of {list(SOLVERS)}.")
    if gram:
        _check_finite(grads_or_gram, "Gram matrix")
        G = _checked_gram(grads_or_gram)
    else:
        # NaN or inf in a row makes its squared norm non-finite, so the small (T, T) matrix is
        # checked and the (T, d) gradients are scanned only to name the problem.
        G = gram_matrix(grads_or_gram).cpu()
    if not bool(torch.isfinite(G).all()):
        _check_finite(grads_or_gram, "Gram matrix" if gram else "gradients")
        raise ValueError("min_norm: ||g_t||² overflows float64; scale the gradients down.")
    T = G.shape[0]
    if solver == "exact" and T > 2:
        raise ValueError(f"The `exact` min-norm solver handles two tasks; found T = {T}.")
    device = grads_or_gram.device
    scale = float(G.diagonal().max())
    if T == 1 or scale <= 0.0:  # one task, or every gradient is zero
        alpha = torch.full((T,), 1.0 / T, dtype=torch.float64)
        return _result(alpha, G, 1.0, 0, solver, device)
    G = G / scale
    if solver == "exact":
        alpha, steps = _two_task_exact(G), 0
    elif solver == "frank_wolfe":
        alpha, steps = _frank_wolfe(G, max_iter, tol)
    else:
        alpha, steps = _projection(G, max_iter, tol)
    return _result(alpha, G, scale, steps, solver, device)


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
    alpha: Tensor, G: Tensor, scale: float, steps: int, solver: str, device: torch.device
) -> MinNormResult:
    """Pack α (T,) with its value scale · αᵀ G α (clamped at 0 against rounding)."""
    norm_sq = scale * max(float(alpha @ G @ alpha), 0.0)
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
    """α for T = 2 in closed form: α_1 = clip((g2 − g1)·g2 / ||g1 − g2||², 0, 1) (S&K Alg. 1).

    G is the normalised Gram matrix (largest diagonal entry 1), so nothing over- or underflows.
    """
    g11, g12, g22 = float(G[0, 0]), float(G[0, 1]), float(G[1, 1])
    a1 = 0.5 if g11 - 2.0 * g12 + g22 <= 0.0 else _segment_step(g22, g12, g11)
    return torch.tensor([a1, 1.0 - a1], dtype=torch.float64)


def _fw_gap(G: Tensor, alpha: Tensor) -> float:
    """Frank–Wolfe duality gap 2(αᵀGα − min_t (Gα)_t) ≥ αᵀGα − min_Δ (Jaggi 2013, eq. 2)."""
    g_alpha = G @ alpha
    return 2.0 * float(alpha @ g_alpha - g_alpha.min())


def _frank_wolfe(G: Tensor, max_iter: int, tol: float) -> tuple[Tensor, int]:
    """Frank–Wolfe on min αᵀ G α over Δ_T (Sener & Koltun 2018, Alg. 2), from uniform α.

    Each step moves towards the vertex e_t with t = argmin_t (G α)_t (the linear minimiser of
    the gradient 2 G α) by the exact two-point line search. Stops before a step once the duality
    gap 2(αᵀGα − (Gα)_t) ≤ tol (Jaggi 2013, §2), which bounds αᵀGα − min from above; returns
    α and the number of steps taken (``max_iter`` when the gap was never met).
    """
    T = G.shape[0]
    alpha = torch.full((T,), 1.0 / T, dtype=torch.float64)
    g_alpha = G @ alpha  # (T,), kept up to date instead of recomputed
    for step in range(max_iter):
        t = int(torch.argmin(g_alpha))
        value, toward = float(alpha @ g_alpha), float(g_alpha[t])
        if 2.0 * (value - toward) <= tol:
            return alpha, step
        gamma = _segment_step(value, toward, float(G[t, t]))
        alpha = (1.0 - gamma) * alpha
        alpha[t] += gamma
        g_alpha = (1.0 - gamma) * g_alpha + gamma * G[:, t]
    return alpha, max_iter


def _projection(G: Tensor, max_iter: int, tol: float) -> tuple[Tensor, int]:
    """The ``projection`` solver: projected gradient to find the face, active sets to solve it.

    At most half of ``max_iter`` goes to projected gradient; the active-set phase gets the rest.
    The step count is the sum: projected steps plus face (KKT) solves.
    """
    alpha, steps = _projected_gradient(G, max(1, max_iter // 2), tol)
    alpha, refine = _active_set(G, alpha, max_iter - steps)
    return alpha, steps + refine


def _projected_gradient(G: Tensor, max_iter: int, tol: float) -> tuple[Tensor, int]:
    """Accelerated projected gradient (FISTA, Beck & Teboulle 2009) on min αᵀ G α over Δ_T.

    Step 1/L with L = 2 λ_max(G), the Lipschitz constant of the gradient 2 G α; momentum is
    restarted whenever it points uphill (O'Donoghue & Candès 2015, gradient scheme). Stops once
    the Frank–Wolfe gap is ≤ tol or the support {t : α_t > 0} has not changed for _STABLE
    steps: its job is to find the optimal face, which the active-set phase then solves exactly.
    """
    T = G.shape[0]
    step = 1.0 / (2.0 * float(torch.linalg.eigvalsh(G)[-1]))
    alpha = torch.full((T,), 1.0 / T, dtype=torch.float64)
    y, theta, stable = alpha, 1.0, 0
    for k in range(1, max_iter + 1):
        new = project_simplex(y - step * 2.0 * (G @ y))
        stable = stable + 1 if torch.equal(new > 0, alpha > 0) else 0
        if stable >= _STABLE or _fw_gap(G, new) <= tol:
            return new, k
        if float((y - new) @ (new - alpha)) > 0.0:  # momentum went uphill: restart
            theta_next, y = 1.0, new
        else:
            theta_next = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * theta * theta))
            y = new + ((theta - 1.0) / theta_next) * (new - alpha)
        alpha, theta = new, theta_next
    return alpha, max_iter


def _active_set(G: Tensor, alpha: Tensor, max_iter: int) -> tuple[Tensor, int]:
    """Primal active-set method (Nocedal & Wright 2006, Alg. 16.3; Wolfe 1976) from α ∈ Δ_T.

    The working set S starts as the support of α; each step solves the KKT system of its face
    (_face). If the face minimiser a is ≥ 0 it becomes α and the multipliers are checked
    (_entering): a task that can still lower the value joins S, else α is optimal. If a has
    negative entries, α moves towards a until an entry hits 0, which leaves S. If the g_S are
    affinely dependent, α moves along a direction that keeps Σ α_t g_t, not uphill to first
    order, until an entry hits 0 (Carathéodory), so no singular system is ever solved. A step
    that raises the value beyond rounding (only rounding can: N&W Thm 16.5), a face optimum no
    lower than the previous one (exactly, each is lower), or a refused face solve ends the
    refinement. Returns the best α met and the number of face solves.
    """
    best, support, entered, k, face_value = alpha, alpha > 0, -1, 0, math.inf
    for k in range(1, max_iter + 1):
        a, null = _face(G, support)
        if null is not None:  # the sign that does not go uphill: (Gα)·p ≤ 0
            direction = -null if float((G @ alpha) @ null) > 0.0 else null
            new, theta = _ray(alpha, direction, support, math.inf)
            if theta <= 0.0 and torch.equal(new > 0, support):
                break  # no entry blocks: p ≈ 0, only rounding gets here
            alpha, support = new, new > 0
        elif a is None:
            break
        elif bool((a[support] < 0).any()):
            new, theta = _ray(alpha, a - alpha, support, 1.0)
            stalled = theta <= 0.0 and entered >= 0 and not bool(new[entered] > 0)
            if stalled or _worse(G, new, alpha):
                break
            alpha, support = new, new > 0
        elif _worse(G, a, alpha):
            break
        else:
            value = float(a @ G @ a)
            if value >= face_value - _noise(G, a):  # no progress since the last face optimum
                return _better(G, a, best), k
            alpha, entered, face_value = a, _entering(G, a, support), value
            if entered < 0:
                return _better(G, alpha, best), k
            support = support.clone()
            support[entered] = True
        best = _better(G, alpha, best)
    return best, k


def _better(G: Tensor, new: Tensor, old: Tensor) -> Tensor:
    """Whichever of two α has the smaller αᵀGα (``new`` on a tie)."""
    return new if float(new @ G @ new) <= float(old @ G @ old) else old


def _noise(G: Tensor, alpha: Tensor) -> float:
    """A bound on the rounding of αᵀGα: 8 T ε (Σ_t α_t ||g_t||)² (Higham 2002, §3.1)."""
    return 8.0 * G.shape[0] * _EPS * float(alpha @ G.diagonal().clamp_min(0.0).sqrt()) ** 2


def _worse(G: Tensor, new: Tensor, old: Tensor) -> bool:
    """newᵀGnew > oldᵀGold by more than the rounding of either."""
    noise = max(_noise(G, new), _noise(G, old))
    return float(new @ G @ new) > float(old @ G @ old) + noise


def _ray(alpha: Tensor, direction: Tensor, support: Tensor, cap: float) -> tuple[Tensor, float]:
    """α + θ d with the largest θ ≤ cap keeping α_S ≥ 0 (the blocking entries set to 0)."""
    shrinking = support & (direction < 0)
    if not bool(shrinking.any()):
        return alpha, 0.0
    ratios = alpha[shrinking] / -direction[shrinking]
    theta = min(float(ratios.min()), cap)
    new = torch.clamp(alpha + theta * direction, min=0.0)
    new[torch.nonzero(shrinking).flatten()[ratios <= theta]] = 0.0
    return new / new.sum(), theta


def _face(G: Tensor, support: Tensor) -> tuple[Tensor | None, Tensor | None]:
    """The KKT solution of the face of S: (a, None), (None, p) or (None, None) if refused.

    a = argmin αᵀGα on the affine hull {Σ_{t∈S} α_t = 1, α_t = 0 off S}: G_SS a = λ1, 1ᵀa = 1.
    With D = diag(||g_t||) it is solved in the equilibrated form [C, w; wᵀ, 0] [x; −λ'] = [0; 1]
    with the cosine matrix C = D⁻¹ G_SS D⁻¹ and w = D⁻¹1 / max(D⁻¹1), a = D⁻¹x / Σ D⁻¹x, so
    that tasks whose norms differ by orders of magnitude stay accurate (a zero gradient keeps
    D_tt = 1). The matrix is singular exactly when the g_S are affinely dependent: below
    _DEPENDENT · σ_max its null vector gives p (Σ p = 0, Σ p_t g_t ≈ 0) instead of a solve.
    """
    index = torch.nonzero(support).flatten()
    n = index.numel()
    diagonal = G.diagonal()[index]
    inv_norm = torch.where(diagonal > 0, diagonal, torch.ones_like(diagonal)).rsqrt()
    kkt = torch.zeros((n + 1, n + 1), dtype=torch.float64)
    kkt[:n, :n] = G[index][:, index] * inv_norm[:, None] * inv_norm[None, :]
    kkt[:n, n] = kkt[n, :n] = inv_norm / inv_norm.max()
    U, sv, Vh = torch.linalg.svd(kkt)
    full = torch.zeros(G.shape[0], dtype=torch.float64)
    if float(sv[-1]) < _DEPENDENT * float(sv[0]):
        full[index] = Vh[-1, :n] * inv_norm
        return None, full
    z = Vh.T @ (U[n] / sv)  # the solution for the right side e_n
    residual = float((kkt @ z)[:n].norm()) + abs(float((kkt @ z)[n]) - 1.0)
    beta = z[:n] * inv_norm
    total = float(beta.sum())  # = max(D⁻¹1) ≥ 1 when the solve is accurate
    if residual > _BACKWARD * float(sv[0]) * float(z.norm()) + _BACKWARD or not (
        math.isfinite(total) and total >= 0.5 * float(inv_norm.max())
    ):
        return None, None  # never divide by a garbage total
    full[index] = beta / total
    return full, None


def _entering(G: Tensor, alpha: Tensor, support: Tensor) -> int:
    """The task to add to the working set, or −1 when α is optimal (KKT multipliers ≥ 0).

    With x = Σ α_t g_t, moving towards g_t lowers ||x||² iff gain_t = ||x||² − ⟨x, g_t⟩ > 0
    (the multiplier of α_t ≥ 0 is −2 gain_t; Wolfe 1976, major cycle). A task qualifies when
    gain_t exceeds both its rounding (≈ T ε ||g_t|| Σ α_s ||g_s||) and _ANGLE ||x|| ||x − g_t||;
    the best decrease gain_t² / ||x − g_t||² is chosen.
    """
    g_alpha = G @ alpha
    value = float(alpha @ g_alpha)
    norms = G.diagonal().clamp_min(0.0).sqrt()
    gain = value - g_alpha
    dist_sq = (value - 2.0 * g_alpha + G.diagonal()).clamp_min(1e-300)
    noise = 8.0 * G.shape[0] * _EPS * norms * float(alpha @ norms)
    ok = ~support & (gain > noise) & (gain**2 > _ANGLE**2 * max(value, 0.0) * dist_sq)
    if not bool(ok.any()):
        return -1
    score = torch.where(ok, gain**2 / dist_sq, torch.full_like(gain, -1.0))
    return int(torch.argmax(score))
