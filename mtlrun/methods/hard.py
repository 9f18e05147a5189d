"""Hard parameter sharing: one encoder shared by every task, one head per task."""

from __future__ import annotations

from collections.abc import Sequence

from mtlrun.backbones.base import Backbone
from mtlrun.data.base import Task
from mtlrun.methods.base import SharingMethod, shared_trunk
from mtlrun.model.paths import MultiTaskModel


class HardSharing(SharingMethod):
    """Every trunk block is in every task's path (seed 000 Table 4.2 "Hard", 534k params)."""

    def __init__(self, name: str = "hard") -> None:
        self.name = name

    def build(self, backbone: Backbone, tasks: Sequence[Task]) -> MultiTaskModel:
        return MultiTaskModel(*shared_trunk(backbone, tasks))
