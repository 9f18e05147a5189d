"""Equal weighting: the gradient of Σ_t w_t L_t, with w_t = 1 unless given statically."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from mtlrun.balancers.base import ArgumentErrors, BlockBalancer
from mtlrun.model.paths import MultiTaskModel


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
        errors = ArgumentErrors()
        weights = dict(weights or {})
        unknown = sorted(set(weights) - set(tasks))
        if unknown:
            errors.add(
                f"`balancer.weights` has keys {unknown} that are not tasks of this run; "
                f"allowed keys: {list(tasks)}."
            )
        negative = {t: w for t, w in weights.items() if not (math.isfinite(w) and w >= 0)}
        if negative:
            errors.add(f"`balancer.weights` should be finite and >= 0. Found {negative}.")
        super().__init__(tasks, name, kkt_every, kkt_tol, errors)
        self.weights = {t: float(weights.get(t, 1.0)) for t in tasks}

    def backward(self, losses: dict[str, Tensor], model: MultiTaskModel) -> dict[str, float]:
        checked = self.monitor_params(losses, model)
        if checked is not None:  # the monitor's per-task gradients make the update
            self.assign_weighted(*checked, {t: self.weights[t] for t in losses})
        else:
            total = torch.stack([self.weights[t] * loss for t, loss in losses.items()]).sum()
            total.backward()
        return {f"weight/{t}": self.weights[t] for t in losses}
