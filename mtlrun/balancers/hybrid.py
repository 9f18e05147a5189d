"""The hybrid balancer of seed 001 Algorithm 1 ("MGDA-Norm"), as a switch between two balancers.

One configured balancer (``first``, GradNorm eq. 4.11 by default) while every task's training
loss still drops by more than ε per epoch, then another (``then``, MGDA eq. 4.7 by default) for
the remaining epochs: cheap heuristic steps early, when hardly any mini-batch is
Pareto-stationary (seed 001 Fig. 4), and min-norm steps near convergence. Each phase is any
``conf/balancer`` choice, composed into ``balancer.first`` / ``balancer.then`` and built here
with the run's tasks; e.g. ``balancer@balancer.then=upgrad`` switches from GradNorm to UPGrad.

``ub`` picks the gradient space of every phase that has an ``on`` key: ``z`` (representation
gradients: GradNorm on z and MGDA-UB, as in the thesis), ``params`` (parameter gradients, per
block), ``auto`` (default): z when every shared block's output is one tensor that all its tasks
read (a shared input, as CoNLL), parameter gradients otherwise (mnist3's one input stream per
task; per-task masks), decided at the first step and logged; ``each``: every phase keeps its own.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from mtlrun.balancers import blocks as B
from mtlrun.balancers.base import ArgumentErrors, Balancer
from mtlrun.errors import ConfigError
from mtlrun.model.paths import MultiTaskModel

log = logging.getLogger(__name__)

UB_CHOICES = ("auto", "z", "params", "each")
PHASES = ("first", "then")
DEFAULT_PHASES = {
    "first": {"_target_": "mtlrun.balancers.gradnorm.GradNorm", "name": "gradnorm"},
    "then": {"_target_": "mtlrun.balancers.mgda.MGDA", "name": "mgda"},
}


def _problems(error: ConfigError, key: str) -> list[str]:
    """A phase's ConfigError as lines that name ``balancer.<key>.<its key>``."""
    text = str(error)
    head = "invalid configuration:\n  - "
    lines = text[len(head) :].split("\n  - ") if text.startswith(head) else [text]
    return [line.replace("`balancer.", f"`balancer.{key}.") for line in lines]


class Hybrid:
    """Logs ``hybrid/phase`` per epoch (0 first, 1 then); metrics.json gets the switch epoch."""

    deviations: Sequence[str] = ()

    def __init__(
        self,
        tasks: Sequence[str],
        first: Mapping[str, Any] | None = None,
        then: Mapping[str, Any] | None = None,
        eps: float = 0.01,
        ub: str = "auto",
        name: str = "hybrid",
    ) -> None:
        errors = ArgumentErrors()
        errors.require(eps >= 0, "eps", ">= 0", eps)
        errors.choice("ub", ub, UB_CHOICES)
        self.tasks, self.name = list(tasks), name
        self.specs = {
            k: self._spec(k, node, errors) for k, node in zip(PHASES, (first, then), strict=True)
        }
        self.eps, self.ub = float(eps), ub
        self.phase: int = 0
        self.switch_epoch: int | None = None
        self.previous: dict[str, float] | None = None
        self.space: str | None = None if ub == "auto" else ub
        # Every argument of both phases is checked now (with ub=auto in parameter space): a bad
        # key must stop the run before training, not at the first step.
        self.phases: dict[str, Balancer] = {}
        for key in PHASES:
            try:
                self.phases[key] = self._build(key, ub if ub == "z" else "params")
            except ConfigError as e:
                for line in _problems(e, key):
                    errors.add(line)
        errors.raise_if_any()
        self.uses_taps = ub == "auto" or any(p.uses_taps for p in self.phases.values())
        self._pending: dict[str, Any] = {}

    @staticmethod
    def _spec(key: str, node: Any, errors: ArgumentErrors) -> dict[str, Any]:
        if node is None:
            return dict(DEFAULT_PHASES[key])
        spec = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
        if not isinstance(spec, Mapping) or "_target_" not in spec:
            errors.add(
                f"`balancer.{key}` should be a balancer config (e.g. balancer@balancer.{key}="
                f"mgda). Found `balancer.{key} = {node}`."
            )
            return dict(DEFAULT_PHASES[key])
        return dict(spec)

    def _build(self, key: str, space: str) -> Balancer:
        """Phase ``key`` with the run's tasks, the hybrid's name and, unless ub=each, ``on``."""
        spec = dict(self.specs[key])
        spec.pop("name", None)
        target = spec["_target_"]
        try:
            params = inspect.signature(get_class(target)).parameters
        except Exception as e:  # noqa: BLE001 - any import failure is the config's fault
            raise ConfigError(f"`balancer._target_` {target!r} cannot be imported: {e}") from None
        if self.ub != "each" and "on" in params:
            spec["on"] = space
        try:
            built: Balancer = instantiate(spec, _convert_="all", tasks=self.tasks, name=self.name)
        except InstantiationException as e:
            cause = e.__cause__
            if isinstance(cause, ConfigError):
                raise cause from None
            raise ConfigError(f"{target}: {cause or e}") from None
        return built

    def _resolve(self, losses: dict[str, Tensor], model: MultiTaskModel) -> None:
        tasks = list(losses)
        try:
            B.shared_outputs(model, B.representation_ends(model, tasks, "segment"), tasks,
                             self.name)  # fmt: skip
            space = "z"
        except ConfigError:
            space = "params"
        log.info(
            "balancer=hybrid: %s gradients (balancer.ub=auto)",
            "representation" if space == "z" else "parameter",
        )
        self.space = space
        if space != "params":
            self.phases = {k: self._build(k, space) for k in PHASES}
        self.uses_taps = any(p.uses_taps for p in self.phases.values())
        self._restore_pending()

    def _restore_pending(self) -> None:
        for key, state in self._pending.items():
            self.phases[key].load_state_dict(state)
        self._pending = {}

    @property
    def active(self) -> Balancer:
        return self.phases[PHASES[self.phase]]

    def backward(self, losses: dict[str, Tensor], model: MultiTaskModel) -> dict[str, float]:
        if self.space is None:
            self._resolve(losses, model)
        return self.active.backward(losses, model)

    def after_step(self, recompute: Callable[[], dict[str, Tensor]]) -> None:
        self.active.after_step(recompute)

    def epoch_end(self, epoch: int, train_losses: dict[str, float]) -> dict[str, float]:
        out = self.active.epoch_end(epoch, train_losses)
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
                    "%s from epoch %d",
                    ", ".join(slow),
                    self.eps,
                    epoch + 1,
                    self.label("then"),
                    self.switch_epoch,
                )
        self.previous = dict(train_losses)
        return out

    def label(self, key: str) -> str:
        """Phase ``key``'s balancer name (its conf/balancer choice), else its class name."""
        spec = self.specs[key]
        return str(spec.get("name") or spec["_target_"].rsplit(".", 1)[-1])

    def summary(self) -> dict[str, Any]:
        phases = {k: self.label(k) for k in PHASES}
        return {"name": self.name, "switch_epoch": self.switch_epoch, "ub": self.space, **phases}

    def state_dict(self) -> dict:
        return {
            "phase": self.phase,
            "switch_epoch": self.switch_epoch,
            "previous": self.previous,
            "space": self.space,
            **{k: p.state_dict() for k, p in self.phases.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        if not state:
            return
        self.phase, self.switch_epoch = state["phase"], state["switch_epoch"]
        self.previous = state["previous"]
        # Checkpoints written before the phases were configurable saved GradNorm's as "gradnorm".
        first = state.get("first", state.get("gradnorm", {}))
        self._pending = {"first": first, "then": state.get("then", {})}
        if state["space"] is not None:
            if state["space"] != self.space:
                self.space = state["space"]
                self.phases = {k: self._build(k, self.space) for k in PHASES}
                self.uses_taps = any(p.uses_taps for p in self.phases.values())
            self._restore_pending()
