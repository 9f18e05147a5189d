"""The balancer protocol: turn per-task losses into gradients on the model's parameters."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

import torch
from torch import Tensor, nn

from mtlrun.balancers import blocks as B
from mtlrun.balancers.blocks import StationarityMonitor
from mtlrun.errors import ArgumentErrors
from mtlrun.model.paths import MultiTaskModel


class Balancer(Protocol):
    """Combines the task gradients of one step (METHODS §5).

    ``backward`` fills ``.grad`` of the model's parameters (the trainer clips and steps) and
    returns a log dict of floats (e.g. ``weight/<task>``) written to history.csv.
    """

    uses_taps: bool  # the trainer records block outputs in the forward pass (MGDA-UB)
    deviations: Sequence[str]  # departures from the authors' code (metrics.json ``fidelity``)

    def backward(self, losses: dict[str, Tensor], model: MultiTaskModel) -> dict[str, float]: ...

    def after_step(self, recompute: Callable[[], dict[str, Tensor]]) -> None:
        """After the optimiser step. ``recompute()`` forwards the step's mini-batch again without
        gradient and returns the task losses (FAMO updates its weights from them); a balancer
        that does not call it costs nothing."""
        return None

    def epoch_end(self, epoch: int, train_losses: dict[str, float]) -> dict[str, float]:
        """Entries for the epoch's row of history.csv (e.g. the KKT share); a hybrid switches."""
        return {}

    def summary(self) -> dict[str, Any]:
        """The ``balancer`` entry of metrics.json."""
        return {}

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class BlockBalancer:
    """What every balancer shares: its tasks, the KKT monitor and the per-epoch hook.

    Subclasses implement ``backward``. ``uses_taps``: the trainer records block outputs during
    the forward pass (representation-gradient balancers). ``epoch_end`` returns the epoch's
    entries for history.csv (the KKT share); ``summary`` the ``balancer`` entry of metrics.json.
    """

    uses_taps = False
    deviations: Sequence[str] = ()

    def __init__(
        self,
        tasks: Sequence[str],
        name: str,
        kkt_every: int,
        kkt_tol: float,
        errors: ArgumentErrors | None = None,
    ) -> None:
        """``errors``: the subclass's argument problems; raised here with the KKT ones."""
        errors = errors if errors is not None else ArgumentErrors()
        errors.require(kkt_every >= 0, "kkt_every", "an integer >= 0", kkt_every)
        errors.require(kkt_tol > 0, "kkt_tol", "> 0", kkt_tol)
        errors.raise_if_any()
        self.tasks, self.name = list(tasks), name
        self.monitor = StationarityMonitor(kkt_every, kkt_tol)

    def monitor_params(
        self, losses: dict[str, Tensor], model: MultiTaskModel
    ) -> tuple[list[nn.Parameter], dict[str, tuple[Tensor | None, ...]]] | None:
        """The KKT check on parameter gradients, for balancers that solve no min-norm problem.

        Costs one backward pass per task, so it runs on one mini-batch in ``kkt_every``.
        Returns the trainable parameters and each task's gradients on them when it ran (a
        balancer whose update is a fixed combination of them can skip its own backward pass
        then: see :meth:`assign_weighted`), else None.
        """
        if not self.monitor.due() or len(losses) < 2:
            return None
        params = B.trainable(model)
        per_task = B.task_param_grads(losses, params)
        blocks = B.param_blocks(model, params, list(losses))
        self.monitor.record(B.check_param_stationarity(per_task, blocks, params, self.monitor.tol))
        return params, per_task

    @staticmethod
    def assign_weighted(
        params: Sequence[Tensor],
        per_task: dict[str, tuple[Tensor | None, ...]],
        weights: dict[str, float],
    ) -> None:
        """``.grad`` += Σ_t w_t ∇L_t from gradients already computed: the gradient of
        Σ_t w_t L_t (up to float rounding) without another backward pass."""
        for k, p in enumerate(params):
            terms = [weights[t] * g for t, gs in per_task.items() if (g := gs[k]) is not None]
            if terms:
                B.add_grad(p, torch.stack(terms).sum(0) if len(terms) > 1 else terms[0])

    def after_step(self, recompute: Callable[[], dict[str, Tensor]]) -> None:
        return None

    def epoch_end(self, epoch: int, train_losses: dict[str, float]) -> dict[str, float]:
        return self.monitor.epoch_log()

    def summary(self) -> dict[str, Any]:
        return {"name": self.name}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        return None


Opt = TypeVar("Opt", bound=torch.optim.Optimizer)


def to_device(
    param: Tensor, optimizer: Opt, device: torch.device, make: Callable[[Tensor], Opt]
) -> tuple[Tensor, Opt]:
    """A balancer's own learned tensor (loss weights, log-variances, logits) and its optimiser,
    on ``device``: the values move, and ``make(moved)`` builds the optimiser again, loading the
    old one's state (which moves its moments to the parameter's device). Unchanged when already
    there."""
    if param.device == device:
        return param, optimizer
    state = optimizer.state_dict()
    moved = param.detach().to(device).requires_grad_(True)
    rebuilt = make(moved)
    rebuilt.load_state_dict(state)
    return moved, rebuilt
