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

# sparse_imp's deviations about sharing one trunk in the multi-task phase (not this method's).
_MULTI_TASK_ONLY = ("The multi-task phase keeps", "Per-task updates reshuffle", "Warm-up:")


class SingleSubnet(SparseIMP):
    """``method=single_subnet``: :class:`SparseIMP`'s search on per-task copies of the encoder."""

    update = "joint"  # the tasks share no parameter: one joint step is k independent steps

    def __init__(self, *args: object, name: str = "single_subnet", **kwargs: object) -> None:
        super().__init__(*args, name=name, **kwargs)  # type: ignore[arg-type,misc]

    def _deviations(self) -> list[str]:
        """The sparse_imp list, with the multi-task phase's entries replaced by this one's."""
        shared = [d for d in super()._deviations() if not d.startswith(_MULTI_TASK_ONLY)]
        if self.warmup_epochs:
            shared.append(
                f"Warm-up: {self.warmup_epochs} epochs of each task's copy on its own task; the "
                "authors warm up from a multi-task run's checkpoint."
            )
        return [
            "The subnets are retrained from θ0 side by side in one run: one epoch is kept for "
            "all tasks on the mean validation score and one gradient-norm clip spans every "
            "copy; in the authors' code a task's subnet result is its own kept pruning round "
            "(train_single.py: its best validation epoch).",
            *shared,
        ]

    def build(self, backbone: Backbone, tasks: Sequence[Task]) -> MaskedModel:
        blocks, paths = private_copies(backbone, tasks)
        trunk = [b for p in paths.values() for b in p[:-1]]
        return MaskedModel(blocks, paths, maskable_parameters(blocks, trunk, weights_only=True))
