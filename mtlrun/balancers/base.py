"""The balancer protocol: turn per-task losses into gradients on the model's parameters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from torch import Tensor

from mtlrun.balancers.blocks import StationarityMonitor
from mtlrun.model.paths import MultiTaskModel


class Balancer(Protocol):
    """Combines the task gradients of one step (METHODS §5).

    ``backward`` fills ``.grad`` of the model's parameters (the trainer clips and steps) and
    returns a log dict of floats (e.g. ``weight/<task>``) written to history.csv.
    """

    def backward(self, losses: dict[str, Tensor], model: MultiTaskModel) -> dict[str, float]: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class BlockBalancer:
    """What every balancer shares: its tasks, the KKT monitor and the per-epoch hook.

    Subclasses implement ``backward``. ``uses_taps``: the trainer records block outputs during
    the forward pass (representation-gradient balancers). ``epoch_end`` returns the epoch's
    entries for history.csv (the KKT share); ``summary`` the ``balancer`` entry of metrics.json.
    """

    uses_taps = False

    def __init__(self, tasks: Sequence[str], name: str, kkt_every: int, kkt_tol: float) -> None:
        self.tasks, self.name = list(tasks), name
        self.monitor = StationarityMonitor(kkt_every, kkt_tol)

    def epoch_end(self, epoch: int, train_losses: dict[str, float]) -> dict[str, float]:
        return self.monitor.epoch_log()

    def summary(self) -> dict[str, Any]:
        return {"name": self.name}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        return None
