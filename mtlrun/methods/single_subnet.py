"""Single (subnet): one sparse sub-network per task, nothing shared (seed 000 Table 4.2, 811k).

Every task gets its own copy of the encoder and its own IMP mask (Sun et al.'s procedure on that
copy); the tasks then train their masked copies side by side.
"""

from __future__ import annotations

from collections.abc import Sequence

from mtlrun.backbones.base import Backbone
from mtlrun.data.base import Task
from mtlrun.methods.base import private_copies
from mtlrun.methods.sparse_imp import SparseIMP
from mtlrun.model.masked import MaskedModel
from mtlrun.model.masks import maskable_parameters


class SingleSubnet(SparseIMP):
    """``method=single_subnet``: :class:`SparseIMP`'s search on per-task copies of the encoder."""

    update = "joint"  # the tasks share no parameter: one joint step is k independent steps

    def __init__(self, *args: object, name: str = "single_subnet", **kwargs: object) -> None:
        super().__init__(*args, name=name, **kwargs)  # type: ignore[arg-type,misc]

    def build(self, backbone: Backbone, tasks: Sequence[Task]) -> MaskedModel:
        blocks, paths = private_copies(backbone, tasks)
        trunk = [b for p in paths.values() for b in p[:-1]]
        return MaskedModel(blocks, paths, maskable_parameters(blocks, trunk, weights_only=True))
