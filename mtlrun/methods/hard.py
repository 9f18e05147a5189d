"""Hard parameter sharing: one encoder shared by every task, one head per task."""

from __future__ import annotations

from collections.abc import Sequence

from mtlrun.backbones.base import Backbone
from mtlrun.data.base import Task
from mtlrun.methods.base import head_name
from mtlrun.model.paths import MultiTaskModel


class HardSharing:
    """Every trunk block is in every task's path (seed 000 Table 4.2 "Hard", 534k params)."""

    def __init__(self, name: str = "hard") -> None:
        self.name = name

    def build(self, backbone: Backbone, tasks: Sequence[Task]) -> MultiTaskModel:
        trunk = list(backbone.block_names)
        blocks = {b: backbone.make_block(b) for b in trunk}
        for task in tasks:
            blocks[head_name(task.name)] = backbone.make_head(task)
        return MultiTaskModel(blocks, {t.name: [*trunk, head_name(t.name)] for t in tasks})
