"""Single-task learning: one full network per task, nothing shared (the baseline row)."""

from __future__ import annotations

from collections.abc import Sequence

from mtlrun.backbones.base import Backbone
from mtlrun.data.base import Task
from mtlrun.methods.base import head_name
from mtlrun.model.paths import MultiTaskModel


class SingleTask:
    """Each task gets its own copy of every trunk block (seed 000 Table 4.2 "Single", 1602k)."""

    def __init__(self, name: str = "single") -> None:
        self.name = name

    def build(self, backbone: Backbone, tasks: Sequence[Task]) -> MultiTaskModel:
        blocks, paths = {}, {}
        for task in tasks:
            own = [f"{b}:{task.name}" for b in backbone.block_names]
            for name, b in zip(own, backbone.block_names, strict=True):
                blocks[name] = backbone.make_block(b)
            blocks[head_name(task.name)] = backbone.make_head(task)
            paths[task.name] = [*own, head_name(task.name)]
        return MultiTaskModel(blocks, paths)
