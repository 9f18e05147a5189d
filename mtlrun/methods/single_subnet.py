"""Single (subnet): one sparse sub-network per task, nothing shared (seed 000 Table 4.2, 811k).

Every task gets its own copy of the encoder and its own IMP mask (Sun et al.'s procedure on that
copy); the tasks then train their masked copies side by side.
"""

from __future__ import annotations

from collections.abc import Sequence

from mtlrun.backbones.base import Backbone
from mtlrun.data.base import Task
from mtlrun.methods.base import head_name
from mtlrun.methods.sparse_imp import SparseIMP
from mtlrun.model.masked import MaskedModel
from mtlrun.model.masks import maskable_parameters


class SingleSubnet(SparseIMP):
    """``method=single_subnet``: :class:`SparseIMP`'s search on per-task copies of the encoder."""

    update = "joint"  # the tasks share no parameter: one joint step is k independent steps

    def __init__(self, *args: object, name: str = "single_subnet", **kwargs: object) -> None:
        super().__init__(*args, name=name, **kwargs)  # type: ignore[arg-type]

    def build(self, backbone: Backbone, tasks: Sequence[Task]) -> MaskedModel:
        blocks, paths, maskable = {}, {}, {}
        for task in tasks:
            own = [f"{b}:{task.name}" for b in backbone.block_names]
            for name, b in zip(own, backbone.block_names, strict=True):
                blocks[name] = backbone.make_block(b)
            blocks[head_name(task.name)] = backbone.make_head(task)
            paths[task.name] = [*own, head_name(task.name)]
            maskable.update(maskable_parameters(blocks, own, weights_only=True))
        return MaskedModel(blocks, paths, maskable)
