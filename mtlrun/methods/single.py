"""Single-task learning: one full network per task, nothing shared (the baseline row)."""

from __future__ import annotations

from collections.abc import Sequence

from mtlrun.backbones.base import Backbone
from mtlrun.data.base import Task
from mtlrun.methods.base import SharingMethod, private_copies
from mtlrun.model.paths import MultiTaskModel


class SingleTask(SharingMethod):
    """Each task gets its own copy of every trunk block (seed 000 Table 4.2 "Single", 1602k)."""

    def __init__(self, name: str = "single") -> None:
        self.name = name

    def build(self, backbone: Backbone, tasks: Sequence[Task]) -> MultiTaskModel:
        return MultiTaskModel(*private_copies(backbone, tasks))
