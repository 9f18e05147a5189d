"""MGDA per block (Désidéri 2012; Sener & Koltun 2018; seed 001 §4, METHODS §5).

For every block i, the tasks of O(i) each have a gradient g_t^i; the block's update direction
is Σ_t α_t^i g_t^i with α^i the min-norm point of the convex hull of the (optionally
normalised) task gradients (seed 001 eq. 4.5). A block used by one task gets that task's
gradient. ``on="params"`` solves on ∇_{θ_i} L^t (any architecture and data); ``on="z"`` is
MGDA-UB, solving on ∇_{Z_i} L^t at the block outputs (eq. 4.6–4.7, one backward pass for the
update; only when every task of O(i) reads the same Z_i, see :mod:`mtlrun.balancers.blocks`).
Parameters outside the blocks (cross-stitch units) get the plain sum.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from mtlrun.balancers import blocks as B
from mtlrun.balancers.base import ArgumentErrors
from mtlrun.balancers.min_norm import SOLVERS, min_norm
from mtlrun.balancers.per_block import PerBlock
from mtlrun.balancers.weighting import BlockStat, Weighting

NORMALIZATIONS = ("none", "l2", "loss", "loss+")


def check_mgda(
    errors: ArgumentErrors, n_tasks: int, solver: str, normalize: str, at: str, max_iter: int
) -> None:
    """MGDA's own arguments (shared with the hybrid's MGDA phase)."""
    errors.choice("solver", solver, SOLVERS)
    if solver == "exact" and n_tasks > 2:
        errors.add(
            f"`balancer.solver=exact` is the two-task closed form; this run has {n_tasks} "
            "tasks (use frank_wolfe or projection)."
        )
    errors.choice("normalize", normalize, NORMALIZATIONS)
    errors.choice("at", at, B.REPRESENTATION_AT)
    errors.require(max_iter >= 1, "max_iter", "an integer >= 1", max_iter)


class MinNorm(Weighting):
    """The min-norm point of the convex hull of a block's (optionally normalised) task
    gradients (seed 001 eq. 4.5), from the block's Gram matrix: MGDA's weighting.

    Normalisation (Sener & Koltun) divides row t by s_t (its norm, its loss, or both), i.e. G by
    s sᵀ; the weights α then multiply the unnormalised gradients, as in their code.
    """

    def __init__(
        self, solver: str = "projection", max_iter: int = 250, normalize: str = "none",
        compare_solvers: bool = False,
    ) -> None:  # fmt: skip
        self.solver, self.max_iter, self.normalize = solver, max_iter, normalize
        self.compare_solvers = compare_solvers
        self._solution: B.BlockSolution | None = None
        self._logs: dict[str, float] = {}

    def scaled(self, s: BlockStat) -> Tensor:
        """G with row t divided by s_t (module docstring)."""
        gram = s.gram()
        norms = gram.diagonal().clamp_min(0).sqrt().clamp_min(1e-12)
        loss = s.losses.to(gram.device).clamp_min(1e-12)
        scale = {"l2": norms, "loss": loss, "loss+": loss * norms}.get(self.normalize)
        return gram if scale is None else gram / (scale[:, None] * scale[None, :])

    def __call__(self, s: BlockStat) -> Tensor:
        gram = self.scaled(s)
        self._logs = {}
        if self.compare_solvers:
            for solver in ("frank_wolfe", "projection"):
                result = min_norm(gram, solver=solver, gram=True, max_iter=self.max_iter)
                self._logs[f"mgda/iterations/{solver}"] = float(result.iterations)
        self._solution = None
        sol = B.solve_gram_block(gram, s.users, self.solver, self.max_iter, self._tol)
        self._solution = sol
        self._logs["mgda/iterations"] = float(sol.result.iterations if sol.result else 0)
        return sol.alpha.to(torch.float64)

    _tol = 0.05  # the run's kkt_tol, set by MGDA

    def logs(self) -> dict[str, float]:
        return self._logs

    def stationarity(self, s: BlockStat, tol: float) -> B.BlockSolution | None:
        return self._solution


class MGDA(PerBlock):
    """Multiple-gradient descent, one min-norm problem per shared block.

    Logs ``weight/<task>`` (mean α over the shared blocks the task uses) and
    ``mgda/iterations`` (mean solver iterations per solved block) per step, and per epoch
    ``kkt/stationary``: the share of mini-batches whose min-norm point is ≈ 0 in every shared
    block (Pareto-stationarity, seed 001 def. 4.3). Every mini-batch is checked.
    """

    def __init__(
        self,
        tasks: Sequence[str],
        solver: str = "projection",
        normalize: str = "none",
        on: str = "params",
        at: str = "segment",
        max_iter: int = 250,
        kkt_every: int = 1,
        kkt_tol: float = 0.05,
        compare_solvers: bool = False,
        name: str = "mgda",
        group: str = "block",
    ) -> None:
        errors = ArgumentErrors()
        check_mgda(errors, len(tasks), solver, normalize, at, max_iter)

        def weighting() -> MinNorm:
            w = MinNorm(solver, max_iter, normalize, compare_solvers)
            w._tol = kkt_tol
            return w

        super().__init__(
            tasks, weighting, "gram", on, at, kkt_every, kkt_tol, name, errors=errors, group=group
        )
        self.solver, self.normalize, self.max_iter = solver, normalize, max_iter

    def _log(self, losses: dict[str, Tensor], weights) -> dict[str, float]:
        log = super()._log(losses, weights)
        log.setdefault("mgda/iterations", 0.0)  # no shared block: nothing to solve
        return log
