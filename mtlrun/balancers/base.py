"""The balancer protocol: turn per-task losses into gradients on the model's parameters."""

from __future__ import annotations

from typing import Protocol

from torch import Tensor

from mtlrun.model.paths import MultiTaskModel


class Balancer(Protocol):
    """Combines the task gradients of one step (METHODS §5).

    ``backward`` fills ``.grad`` of the model's parameters (the trainer clips and steps) and
    returns a log dict of floats (e.g. ``weight/<task>``) written to history.csv.
    """

    def backward(self, losses: dict[str, Tensor], model: MultiTaskModel) -> dict[str, float]: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...
