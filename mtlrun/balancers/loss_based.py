"""The loss-based seam: weightings that read the task losses only (DWA, GLS, RLW, FAMO, STCH).

Such a weighting gives every task one weight for the whole network, so "per block" changes
nothing and one backward pass of its objective suffices: the driver asks the weighting for the
step's objective (usually Σ_t w_t L_t with weights from the loss history; GLS's geometric mean;
anything differentiable in the losses) and back-propagates it. The Pareto-stationarity monitor
costs one backward pass per task on one step in ``kkt_every``, as for ``balancer=equal``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from mtlrun.balancers.base import ArgumentErrors, BlockBalancer
from mtlrun.errors import ConfigError
from mtlrun.model.paths import MultiTaskModel


class LossWeighting:
    """A loss-based weighting for :class:`LossBalancer`; built with ``tasks`` (the run's tasks).

    ``objective(losses)``: ``losses`` is the step's (T,) tensor of task losses in the order of
    ``tasks`` (attached to the graph); returns the scalar to back-propagate and the (T,)
    detached weights to log (the weight each task's loss had in the gradient). Hooks:
    ``after_backward(losses)`` (detached losses of the step, e.g. FAMO's update),
    ``epoch_end(epoch, train_losses)`` (mean training loss per task: DWA's history), and
    ``state_dict``/``load_state_dict``. Random weightings draw from torch's global generator,
    which the run seeds and its checkpoints restore.
    """

    def __init__(self, tasks: Sequence[str]) -> None:
        self.tasks = list(tasks)

    def objective(self, losses: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def after_backward(self, losses: Tensor) -> None:
        return None

    def after_step(self, recompute: Callable[[], Tensor]) -> None:
        """After the optimiser step; ``recompute()`` forwards the step's mini-batch again (no
        gradient) and returns the (T,) losses (FAMO's update)."""
        return None

    def epoch_end(self, epoch: int, train_losses: dict[str, float]) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None


class LossBalancer(BlockBalancer):
    """Back-propagates a :class:`LossWeighting`'s objective; logs ``weight/<task>``."""

    def __init__(
        self,
        tasks: Sequence[str],
        weighting: Callable[..., LossWeighting],
        kkt_every: int = 10,
        kkt_tol: float = 0.05,
        name: str = "loss_based",
        paper: str = "",
        deviations: Sequence[str] = (),
        errors: ArgumentErrors | None = None,
    ) -> None:
        """``errors``: a subclass's argument problems, raised with the monitor's in one error."""
        super().__init__(tasks, name, kkt_every, kkt_tol, errors)
        self.paper = paper
        self._all_tasks = False  # the last step weighed every task (after_step acts then only)
        self.deviations = [*type(self).deviations, *deviations]  # a subclass's own, then the YAML's
        try:
            self.weighting = weighting(tasks=list(tasks))
        except (TypeError, ValueError) as e:
            raise ConfigError(f"`balancer={name}`: {e}") from None

    def backward(self, losses: dict[str, Tensor], model: MultiTaskModel) -> dict[str, float]:
        self._all_tasks = False
        if len(losses) == 1:  # a phase that trains one task (a peel, an IMP round)
            next(iter(losses.values())).backward()
            return {f"weight/{t}": 1.0 for t in losses}
        if set(losses) != set(self.tasks):
            raise ValueError(
                f"balancer={self.name} weighs the tasks {self.tasks} together; this step has "
                f"losses of {list(losses)} only"
            )
        self._all_tasks = True
        self.monitor_params(losses, model)
        values = torch.stack([losses[t] for t in self.tasks])
        total, weights = self.weighting.objective(values)
        total.backward()
        self.weighting.after_backward(values.detach())
        return {f"weight/{t}": float(w) for t, w in zip(self.tasks, weights.tolist(), strict=True)}

    def after_step(self, recompute: Callable[[], dict[str, Tensor]]) -> None:
        def losses() -> Tensor:
            again = recompute()
            return torch.stack([again[t].detach() for t in self.tasks])

        if self._all_tasks:
            self.weighting.after_step(losses)

    def epoch_end(self, epoch: int, train_losses: dict[str, float]) -> dict[str, float]:
        out = self.monitor.epoch_log()
        out.update(self.weighting.epoch_end(epoch, train_losses))
        return out

    def state_dict(self) -> dict:
        return {"weighting": self.weighting.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if state:
            self.weighting.load_state_dict(state.get("weighting", {}))
