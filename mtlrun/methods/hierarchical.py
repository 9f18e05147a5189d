"""Hierarchical sharing (Søgaard & Goldberg 2016): low-level tasks are supervised at a lower
BiLSTM layer, higher-level tasks at a stacked second layer (seed 000 Table 4.2, 1497k params)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from mtlrun.backbones.base import Backbone
from mtlrun.data.base import Task
from mtlrun.errors import ConfigError
from mtlrun.methods.base import SharingMethod, head_name
from mtlrun.model.paths import MultiTaskModel

LAYERS = ("bilstm", "bilstm2")  # layer 1 and layer 2 of the stacked encoder


class Hierarchical(SharingMethod):
    """Shared ``embed`` → ``bilstm`` (layer 1) → ``bilstm2`` (layer 2, input 2·hidden).

    ``task_layers[t]`` is the layer whose output task t's head reads (default: pos at 1,
    chunk and ner at 2). Tasks missing from ``task_layers`` read the top layer.
    """

    def __init__(
        self,
        task_layers: Mapping[str, int] | None = {"pos": 1, "chunk": 2, "ner": 2},
        name: str = "hierarchical",
    ) -> None:
        self.name = name
        self.task_layers = dict(task_layers or {"pos": 1, "chunk": 2, "ner": 2})
        bad = {t: k for t, k in self.task_layers.items() if k not in (1, 2)}
        if bad:
            raise ConfigError(f"`method.task_layers` values should be 1 or 2. Found {bad}.")

    def build(self, backbone: Backbone, tasks: Sequence[Task]) -> MultiTaskModel:
        if "bilstm" not in getattr(backbone, "block_names", ()):
            raise ConfigError(
                "method=hierarchical stacks BiLSTM layers: it needs backbone=cnn_bilstm."
            )
        layer = {t.name: self.task_layers.get(t.name, 2) for t in tasks}
        top = max(layer.values())
        blocks = {"embed": backbone.make_block("embed"), "bilstm": backbone.make_block("bilstm")}
        if top == 2:
            blocks["bilstm2"] = backbone.make_block("bilstm2")
        paths = {}
        for task in tasks:
            blocks[head_name(task.name)] = backbone.make_head(task, LAYERS[layer[task.name] - 1])
            paths[task.name] = ["embed", *LAYERS[: layer[task.name]], head_name(task.name)]
        return MultiTaskModel(blocks, paths)
