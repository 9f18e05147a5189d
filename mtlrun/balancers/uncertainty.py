"""Uncertainty weighting (Kendall, Gal & Cipolla 2018; METHODS §5).

Each task t has a learned log-variance s_t = log σ_t², minimised jointly with θ. Kendall et al.
derive one term per task from its likelihood (their multi-task likelihoods, Gaussian and softmax):

* ``classification`` (softmax cross-entropy; a softmax of the logits scaled by 1/σ², whose
  negative log-likelihood they approximate by (1/σ²) L + log σ): e^{−s} L + ½ s;
* ``regression`` (Gaussian likelihood): (1/(2σ²)) L + log σ = ½ e^{−s} L + ½ s.

So the objective is Σ_t c_t e^{−s_t} L_t + ½ s_t with c_t = 1 (classification) or ½ (regression),
and the task weight is c_t e^{−s_t}, the same for every block (the weights are global, so
per-block action changes nothing here). ``loss_type`` sets every task's form (default
``classification``: every mtlrun task is a softmax classifier); ``task_types`` overrides it per
task, e.g. ``{ner: regression}``. s has its own Adam optimiser (``lr``) so the weights move at the
same pace whatever the run's optimiser for θ is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from mtlrun.balancers.base import ArgumentErrors, to_device
from mtlrun.balancers.loss_based import LossBalancer, LossWeighting

# c_t of c_t e^{−s_t} L_t + ½ s_t for each likelihood (Kendall et al. 2018, module docstring).
LOSS_SCALE = {"classification": 1.0, "regression": 0.5}
LOSS_TYPES = tuple(LOSS_SCALE)


class KendallWeighting(LossWeighting):
    """The loss-based weighting: learned s_t, objective Σ_t c_t e^{−s_t} L_t + ½ s_t, one Adam
    step on s after every backward pass (module docstring)."""

    def __init__(
        self, tasks: Sequence[str], lr: float, init_log_var: float, scale: Sequence[float]
    ) -> None:
        super().__init__(tasks)
        self.lr = lr
        self.scale = torch.tensor(list(scale))
        self.log_var = torch.full((len(self.tasks),), float(init_log_var), requires_grad=True)
        self.optimizer = torch.optim.Adam([self.log_var], lr=lr)

    def _to(self, device: torch.device) -> None:
        self.log_var, self.optimizer = to_device(
            self.log_var, self.optimizer, device, lambda p: torch.optim.Adam([p], lr=self.lr)
        )

    def objective(self, losses: Tensor) -> tuple[Tensor, Tensor]:
        self._to(losses.device)
        s = self.log_var
        weights = self.scale.to(s.device) * torch.exp(-s)
        self.optimizer.zero_grad(set_to_none=True)
        return (weights * losses + 0.5 * s).sum(), weights.detach()

    def after_backward(self, losses: Tensor) -> None:
        self.optimizer.step()

    def state_dict(self) -> dict:
        return {"log_var": self.log_var.detach().cpu(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if not state:
            return
        with torch.no_grad():
            self.log_var = state["log_var"].clone().requires_grad_(True)
        self.optimizer = torch.optim.Adam([self.log_var], lr=self.lr)
        self.optimizer.load_state_dict(state["optimizer"])


class Uncertainty(LossBalancer):
    """Learned homoscedastic-uncertainty weights; logs ``weight/<task>`` = c_t e^{−s_t}, the
    weight that multiplied the task's loss in this step's gradient."""

    def __init__(
        self,
        tasks: Sequence[str],
        lr: float = 1e-2,
        init_log_var: float = 0.0,
        loss_type: str = "classification",
        task_types: Mapping[str, str] | None = None,
        kkt_every: int = 10,
        kkt_tol: float = 0.05,
        name: str = "uncertainty",
    ) -> None:
        errors = ArgumentErrors()
        errors.require(lr > 0, "lr", "> 0", lr)
        errors.require(math.isfinite(init_log_var), "init_log_var", "finite", init_log_var)
        errors.choice("loss_type", loss_type, LOSS_TYPES)
        types = _task_types(errors, task_types, tasks)
        self.loss_types = {t: types.get(t, loss_type) for t in tasks}

        def weighting(tasks: Sequence[str]) -> KendallWeighting:  # built once errors are none
            scale = [LOSS_SCALE[self.loss_types[t]] for t in tasks]
            return KendallWeighting(tasks, lr, init_log_var, scale)

        super().__init__(tasks, weighting, kkt_every, kkt_tol, name, errors=errors)
        self.lr = lr

    @property
    def log_var(self) -> Tensor:
        """s_t, in the order of the run's tasks."""
        assert isinstance(self.weighting, KendallWeighting)
        return self.weighting.log_var

    def state_dict(self) -> dict:
        return self.weighting.state_dict()  # the layout of runs before the loss seam

    def load_state_dict(self, state: dict) -> None:
        self.weighting.load_state_dict(state)


def _task_types(
    errors: ArgumentErrors, task_types: Mapping[str, str] | None, tasks: Sequence[str]
) -> dict[str, str]:
    """``balancer.task_types`` checked against the run's tasks and the likelihoods."""
    if task_types is None:
        return {}
    if not isinstance(task_types, Mapping):
        errors.add(
            "`balancer.task_types` should map task names to classification or regression, "
            f"e.g. {{ner: regression}}. Found `balancer.task_types = {task_types}`."
        )
        return {}
    types = dict(task_types)
    unknown = sorted(set(types) - set(tasks))
    if unknown:
        errors.add(
            f"`balancer.task_types` has keys {unknown} that are not tasks of this run; "
            f"allowed keys: {list(tasks)}."
        )
    bad = {t: v for t, v in types.items() if v not in LOSS_TYPES}
    if bad:
        errors.add(
            f"`balancer.task_types` values should be one of {', '.join(LOSS_TYPES)}. Found {bad}."
        )
    return types
