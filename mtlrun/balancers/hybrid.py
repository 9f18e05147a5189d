"""The hybrid balancer of seed 001 Algorithm 1 ("MGDA-Norm").

GradNorm (eq. 4.11) while every task's training loss still drops by more than ε per epoch,
then MGDA (eq. 4.7) for the remaining epochs: cheap heuristic steps early, when hardly any
mini-batch is Pareto-stationary (seed 001 Fig. 4), and min-norm steps near convergence.

``ub`` picks the gradient space of both phases: ``z`` (representation gradients: GradNorm on z
and MGDA-UB, as in the thesis), ``params`` (parameter gradients, per block) or ``auto``
(default): z when every shared block's output is one tensor that all its tasks read (a shared
input, as CoNLL), parameter gradients otherwise (mnist3's one input stream per task; per-task
masks), decided at the first step and logged.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from torch import Tensor

from mtlrun.balancers import blocks as B
from mtlrun.balancers.base import ArgumentErrors, BlockBalancer
from mtlrun.balancers.gradnorm import GradNorm, check_gradnorm
from mtlrun.balancers.mgda import MGDA, check_mgda
from mtlrun.errors import ConfigError
from mtlrun.model.paths import MultiTaskModel

log = logging.getLogger(__name__)

UB_CHOICES = ("auto", "z", "params")


class Hybrid(BlockBalancer):
    """Logs ``hybrid/phase`` per epoch (0 GradNorm, 1 MGDA); metrics.json gets the switch epoch."""

    def __init__(
        self,
        tasks: Sequence[str],
        eps: float = 0.01,
        ub: str = "auto",
        alpha: float = 1.5,
        lr: float = 0.025,
        solver: str = "projection",
        normalize: str = "none",
        at: str = "segment",
        max_iter: int = 250,
        kkt_every: int = 10,
        kkt_tol: float = 0.05,
        name: str = "hybrid",
    ) -> None:
        # Every argument of both phases is checked now: with ub=auto the phases are built only
        # at the first step, and a bad key must stop the run before training.
        errors = ArgumentErrors()
        errors.require(eps >= 0, "eps", ">= 0", eps)
        errors.choice("ub", ub, UB_CHOICES)
        check_gradnorm(errors, alpha, lr, at)
        check_mgda(errors, len(tasks), solver, normalize, at, max_iter)
        super().__init__(tasks, name, kkt_every, kkt_tol, errors)
        self.eps, self.ub = float(eps), ub
        self.alpha, self.lr, self.solver, self.normalize = alpha, lr, solver, normalize
        self.at, self.max_iter = at, max_iter
        self.kkt = (kkt_every, kkt_tol)
        self.phase: int = 0
        self.switch_epoch: int | None = None
        self.previous: dict[str, float] | None = None
        self.space: str | None = None if ub == "auto" else ub
        self.gradnorm: GradNorm | None = None
        self.mgda: MGDA | None = None
        self._pending: dict[str, Any] = {}
        if self.space is not None:
            self._build(self.space)
        self.uses_taps = ub in ("auto", "z")

    def _build(self, space: str) -> None:
        self.space = space
        self.gradnorm = GradNorm(
            self.tasks, on=space, alpha=self.alpha, lr=self.lr, at=self.at,
            kkt_every=self.kkt[0], kkt_tol=self.kkt[1], name=self.name,
        )  # fmt: skip
        self.mgda = MGDA(
            self.tasks, solver=self.solver, normalize=self.normalize, on=space, at=self.at,
            max_iter=self.max_iter, kkt_every=self.kkt[0], kkt_tol=self.kkt[1], name=self.name,
        )  # fmt: skip
        self.uses_taps = space == "z"
        if self._pending:
            self.gradnorm.load_state_dict(self._pending.get("gradnorm", {}))
            self._pending = {}

    def _resolve(self, losses: dict[str, Tensor], model: MultiTaskModel) -> None:
        tasks = list(losses)
        try:
            B.shared_outputs(model, B.representation_ends(model, tasks, self.at), tasks,
                             self.name)  # fmt: skip
            space = "z"
        except ConfigError:
            space = "params"
        log.info(
            "balancer=hybrid: %s gradients (balancer.ub=auto)",
            "representation" if space == "z" else "parameter",
        )
        self._build(space)

    def backward(self, losses: dict[str, Tensor], model: MultiTaskModel) -> dict[str, float]:
        if self.space is None:
            self._resolve(losses, model)
        active = self.gradnorm if self.phase == 0 else self.mgda
        assert active is not None
        return active.backward(losses, model)

    def epoch_end(self, epoch: int, train_losses: dict[str, float]) -> dict[str, float]:
        out: dict[str, float] = {}
        for sub in (self.gradnorm, self.mgda):
            if sub is not None:
                out.update(sub.monitor.epoch_log())
        out["hybrid/phase"] = float(self.phase)
        if self.phase == 0 and self.previous is not None:
            slow = [
                t
                for t, v in train_losses.items()
                if t in self.previous and self.previous[t] - v <= self.eps
            ]
            if slow:
                self.phase, self.switch_epoch = 1, epoch + 2
                log.info(
                    "balancer=hybrid: training loss of %s improved by <= %g in epoch %d; "
                    "MGDA from epoch %d",
                    ", ".join(slow),
                    self.eps,
                    epoch + 1,
                    self.switch_epoch,
                )
        self.previous = dict(train_losses)
        return out

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "switch_epoch": self.switch_epoch, "ub": self.space}

    def state_dict(self) -> dict:
        return {
            "phase": self.phase,
            "switch_epoch": self.switch_epoch,
            "previous": self.previous,
            "space": self.space,
            "gradnorm": self.gradnorm.state_dict() if self.gradnorm else {},
        }

    def load_state_dict(self, state: dict) -> None:
        if not state:
            return
        self.phase, self.switch_epoch = state["phase"], state["switch_epoch"]
        self.previous = state["previous"]
        self._pending = {"gradnorm": state["gradnorm"]}
        if state["space"] is not None:
            self._build(state["space"])
