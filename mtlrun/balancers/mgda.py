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
from mtlrun.balancers.base import ArgumentErrors, BlockBalancer
from mtlrun.balancers.min_norm import SOLVERS, gram_matrix, min_norm
from mtlrun.model.paths import MultiTaskModel

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


class MGDA(BlockBalancer):
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
    ) -> None:
        errors = ArgumentErrors()
        check_mgda(errors, len(tasks), solver, normalize, at, max_iter)
        errors.choice("on", on, B.GRADIENT_SPACES)
        super().__init__(tasks, name, kkt_every, kkt_tol, errors)
        self.solver, self.normalize, self.on, self.at = solver, normalize, on, at
        self.max_iter = max_iter
        self.uses_taps = on == "z"
        # Seed 001 Fig. 3: also solve every problem met in training with both iterative solvers
        # and log their iteration counts (the update still uses ``solver``).
        self.compare_solvers = compare_solvers
        self._compared: dict[str, list[int]] = {}

    def _scaler(self, losses: Tensor):
        """Gradient normalisation of Sener & Koltun, rows of the block matrix being tasks."""

        def scale(grads: Tensor) -> Tensor:
            norms = grads.norm(dim=1).clamp_min(1e-12)
            loss = losses.to(grads.device).clamp_min(1e-12)
            if self.normalize == "l2":
                return grads / norms[:, None]
            if self.normalize == "loss":
                return grads / loss[:, None]
            if self.normalize == "loss+":
                return grads / (loss * norms)[:, None]
            return grads

        return scale

    def _solve(self, rows: Tensor, users: list[str], losses: dict[str, Tensor]) -> B.BlockSolution:
        values = torch.stack([losses[t].detach().double() for t in users])
        scale = self._scaler(values)
        if self.compare_solvers and len(users) > 1:
            gram = gram_matrix(scale(rows.double()))
            for solver in ("frank_wolfe", "projection"):
                result = min_norm(gram, solver=solver, gram=True, max_iter=self.max_iter)
                self._compared.setdefault(solver, []).append(result.iterations)
        return B.solve_block(rows, users, self.solver, self.max_iter, self.monitor.tol, scale)

    def backward(self, losses: dict[str, Tensor], model: MultiTaskModel) -> dict[str, float]:
        if self.on == "z":
            solutions = self._backward_z(losses, model)
        else:
            solutions = self._backward_params(losses, model)
        if self.monitor.due():
            self.monitor.record(solutions)
        return self._log(losses, solutions)

    def _backward_params(
        self, losses: dict[str, Tensor], model: MultiTaskModel
    ) -> list[B.BlockSolution]:
        tasks = list(losses)
        params = B.trainable(model)
        per_task = B.task_param_grads(losses, params)
        done: set[int] = set()
        solutions = []
        for blk in B.param_blocks(model, params, tasks):
            done.update(blk.ks)
            rows = torch.stack([B.flat(per_task[t], blk.ks, params) for t in blk.users])
            sol = self._solve(rows, blk.users, losses)
            if sol.result is not None:
                solutions.append(sol)
            combined = (sol.alpha.to(rows.device, rows.dtype)[:, None] * rows).sum(0)
            B.assign(combined, blk.ks, params)
        B.add_outside_blocks(per_task, params, done)
        return solutions

    def _backward_z(
        self, losses: dict[str, Tensor], model: MultiTaskModel
    ) -> list[B.BlockSolution]:
        tasks = list(losses)
        ends = B.representation_ends(model, tasks, self.at)
        zs = B.shared_outputs(model, ends, tasks, self.name)
        grads = B.task_representation_grads(losses, model, zs)
        replacements, solutions = {}, []
        for b in ends:
            users = [t for t in tasks if b in grads[t]]
            rows = torch.stack([grads[t][b].flatten() for t in users])
            sol = self._solve(rows, users, losses)
            solutions.append(sol)
            alpha = sol.alpha.to(rows.device, rows.dtype)
            direction = sum(a * grads[t][b] for a, t in zip(alpha, users, strict=True))
            replacements[b] = (zs[b], direction)
        B.backward_replacing(torch.stack(list(losses.values())).sum(), replacements)
        return solutions

    def _log(self, losses: dict[str, Tensor], solutions: list[B.BlockSolution]) -> dict[str, float]:
        weights: dict[str, list[float]] = {t: [] for t in losses}
        iterations = 0
        for sol in solutions:
            iterations += sol.result.iterations if sol.result is not None else 0
            for t, a in zip(sol.users, sol.alpha.tolist(), strict=True):
                weights[t].append(a)
        log = {f"weight/{t}": (sum(w) / len(w) if w else 1.0) for t, w in weights.items()}
        log["mgda/iterations"] = iterations / len(solutions) if solutions else 0.0
        for solver, counts in self._compared.items():
            log[f"mgda/iterations/{solver}"] = sum(counts) / len(counts)
        self._compared = {}
        return log
