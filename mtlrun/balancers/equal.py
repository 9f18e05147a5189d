"""Equal weighting: the gradient of Σ_t w_t L_t, with w_t = 1 unless given statically."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from mtlrun.balancers import blocks as B
from mtlrun.balancers.base import BlockBalancer
from mtlrun.errors import ConfigError
from mtlrun.model.paths import MultiTaskModel


def monitor_params(
    balancer: BlockBalancer, losses: dict[str, Tensor], model: MultiTaskModel
) -> None:
    """The KKT check on parameter gradients for balancers that do not solve min-norm problems.

    Costs one extra backward pass per task, so it runs on one mini-batch in ``kkt_every``.
    """
    if not balancer.monitor.due() or len(losses) < 2:
        return
    params = B.trainable(model)
    per_task = B.task_param_grads(losses, params)
    blocks = B.param_blocks(model, params, list(losses))
    balancer.monitor.record(
        B.check_param_stationarity(per_task, blocks, params, balancer.monitor.tol)
    )


class Equal(BlockBalancer):
    """Sum of task losses with fixed weights (default 1 each)."""

    def __init__(
        self,
        tasks: Sequence[str],
        weights: Mapping[str, float] | None = None,
        kkt_every: int = 10,
        kkt_tol: float = 0.05,
        name: str = "equal",
    ) -> None:
        super().__init__(tasks, name, kkt_every, kkt_tol)
        weights = dict(weights or {})
        unknown = sorted(set(weights) - set(tasks))
        if unknown:
            raise ConfigError(
                f"`balancer.weights` has keys {unknown} that are not tasks of this run; "
                f"allowed keys: {list(tasks)}."
            )
        negative = {t: w for t, w in weights.items() if not (math.isfinite(w) and w >= 0)}
        if negative:
            raise ConfigError(f"`balancer.weights` should be finite and >= 0. Found {negative}.")
        self.weights = {t: float(weights.get(t, 1.0)) for t in tasks}

    def backward(self, losses: dict[str, Tensor], model: MultiTaskModel) -> dict[str, float]:
        monitor_params(self, losses, model)
        total = torch.stack([self.weights[t] * loss for t, loss in losses.items()]).sum()
        total.backward()
        return {f"weight/{t}": self.weights[t] for t in losses}
