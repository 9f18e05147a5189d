"""MGDA per block (Désidéri 2012; Sener & Koltun 2018; seed 001 §4, METHODS §5).

For every block i, the tasks of O(i) each have a gradient g_t^i w.r.t. θ_i; the block's update
direction is Σ_t α_t^i g_t^i with α^i the min-norm point of the convex hull of the (optionally
normalised) task gradients. A block used by one task gets that task's gradient. Parameters
outside the blocks (e.g. cross-stitch units, search parameters) get the plain sum.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from mtlrun.balancers.min_norm import SOLVERS, is_pareto_stationary, min_norm
from mtlrun.errors import ConfigError
from mtlrun.model.paths import MultiTaskModel

NORMALIZATIONS = ("none", "l2", "loss", "loss+")


class MGDA:
    """Multiple-gradient descent on parameter gradients, one min-norm problem per shared block.

    Logs ``weight/<task>`` (mean α over the shared blocks the task uses), ``mgda/iterations``
    (mean solver iterations) and ``kkt/stationary`` (share of shared blocks whose min-norm
    point is ≈ 0, the Pareto-stationarity condition 4.3 of seed 001).
    """

    def __init__(
        self,
        tasks: Sequence[str],
        solver: str = "projection",
        normalize: str = "none",
        max_iter: int = 250,
        kkt_tol: float = 1e-3,
        name: str = "mgda",
    ) -> None:
        if solver not in SOLVERS:
            raise ConfigError(
                f"`balancer.solver` should be one of {', '.join(SOLVERS)}. Found `balancer.solver = {solver}`."
            )
        if solver == "exact" and len(tasks) > 2:
            raise ConfigError(
                f"`balancer.solver=exact` is the two-task closed form; this run has {len(tasks)} tasks "
                "(use frank_wolfe or projection)."
            )
        if normalize not in NORMALIZATIONS:
            raise ConfigError(
                f"`balancer.normalize` should be one of {', '.join(NORMALIZATIONS)}. "
                f"Found `balancer.normalize = {normalize}`."
            )
        self.name, self.tasks, self.solver, self.normalize = name, list(tasks), solver, normalize
        self.max_iter, self.kkt_tol = max_iter, kkt_tol

    def _scale(self, grads: Tensor, losses: Tensor) -> Tensor:
        """Gradient normalisation of Sener & Koltun (rows of ``grads`` are tasks)."""
        norms = grads.norm(dim=1).clamp_min(1e-12)
        if self.normalize == "l2":
            return grads / norms[:, None]
        if self.normalize == "loss":
            return grads / losses.clamp_min(1e-12)[:, None]
        if self.normalize == "loss+":
            return grads / (losses.clamp_min(1e-12) * norms)[:, None]
        return grads

    def backward(self, losses: dict[str, Tensor], model: MultiTaskModel) -> dict[str, float]:
        tasks = list(losses)
        params = [p for p in model.weight_parameters() if p.requires_grad]
        per_task = {
            t: torch.autograd.grad(losses[t], params, retain_graph=True, allow_unused=True)
            for t in tasks
        }
        index = {id(p): k for k, p in enumerate(params)}
        done: set[int] = set()
        weights: dict[str, list[float]] = {t: [] for t in tasks}
        iterations, stationary, shared = 0, 0, 0
        loss_values = torch.stack([losses[t].detach().double() for t in tasks])
        for name, block in model.blocks.items():
            ks = [index[id(p)] for p in block.parameters() if id(p) in index]
            users = [t for t in tasks if name in model.paths[t]]
            if not ks or not users:
                continue
            done.update(ks)
            flat = torch.stack([_flat(per_task[t], ks, params) for t in users])  # (|O(i)|, d_i)
            if len(users) == 1:
                alpha = torch.ones(1, dtype=torch.float64)
            else:
                shared += 1
                scaled = self._scale(flat.double(), loss_values[[tasks.index(t) for t in users]])
                result = min_norm(scaled, solver=self.solver, max_iter=self.max_iter)
                alpha, iterations = result.weights.cpu(), iterations + result.iterations
                biggest = float((scaled.norm(dim=1) ** 2).max())
                stationary += int(is_pareto_stationary(result, biggest, self.kkt_tol))
                for t, a in zip(users, alpha.tolist(), strict=True):
                    weights[t].append(a)
            combined = (alpha.to(flat.dtype).to(flat.device)[:, None] * flat).sum(0)
            _assign(combined, ks, params)
        for k, p in enumerate(params):  # parameters outside every block: the plain sum
            if k not in done:
                gs = [per_task[t][k] for t in tasks if per_task[t][k] is not None]
                if gs:
                    _add_grad(p, torch.stack(gs).sum(0))
        log = {f"weight/{t}": (sum(w) / len(w) if w else 1.0) for t, w in weights.items()}
        log["mgda/iterations"] = iterations / shared if shared else 0.0
        log["kkt/stationary"] = stationary / shared if shared else 0.0
        return log

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        return None


def _flat(grads: Sequence[Tensor | None], ks: list[int], params: list[Tensor]) -> Tensor:
    return torch.cat(
        [(grads[k] if grads[k] is not None else torch.zeros_like(params[k])).flatten() for k in ks]
    )


def _assign(vector: Tensor, ks: list[int], params: list[Tensor]) -> None:
    start = 0
    for k in ks:
        n = params[k].numel()
        _add_grad(params[k], vector[start : start + n].view_as(params[k]))
        start += n


def _add_grad(p: Tensor, g: Tensor) -> None:
    """Accumulate: a regulariser may already have written its gradient this step."""
    p.grad = g.clone() if p.grad is None else p.grad + g
