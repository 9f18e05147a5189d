"""Single (subnet): one sparse sub-network per task, nothing shared (seed 000 Table 4.2, 811k).

Every task gets its own copy of the encoder and its own IMP mask (Sun et al.'s procedure on that
copy); the tasks then train their masked copies side by side.

The copies start from one initialisation, the one ``sparse_imp`` gives its shared encoder with
the same seed (the blocks are drawn in the same order, then copied per task), and each task's
rounds are seeded on their own, so a task's pruning here is the same computation as that task's
pruning in a ``sparse_imp`` run without warm-up. ``masks_from=RUN_DIR`` therefore takes the
masks of such a finished run (its ``masks.pt``) instead of pruning again; the run's config must
agree with this one in everything the pruning reads, or the run is refused naming the keys.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mtlrun.backbones.base import Backbone
from mtlrun.config.saved import RUN_ONLY, flatten, saved_config
from mtlrun.data.base import Task
from mtlrun.errors import ConfigError
from mtlrun.methods.base import SearchContext, head_name, shared_trunk
from mtlrun.methods.sparse import save_masks
from mtlrun.methods.sparse_imp import MAIN_PHASE, SparseIMP, seed_task
from mtlrun.model.masked import MaskedModel
from mtlrun.model.masks import maskable_parameters

# sparse_imp's deviations about sharing one trunk in the multi-task phase (not this method's).
_MULTI_TASK_ONLY = ("The multi-task phase keeps", "Per-task updates reshuffle", "Warm-up:")


class SingleSubnet(SparseIMP):
    """``method=single_subnet``: :class:`SparseIMP`'s search on per-task copies of the encoder."""

    update = "joint"  # the tasks share no parameter: one joint step is k independent steps

    def __init__(
        self,
        *args: object,
        name: str = "single_subnet",
        masks_from: str | None = None,
        **kwargs: object,
    ) -> None:
        super().__init__(*args, name=name, **kwargs)  # type: ignore[arg-type,misc]
        self.masks_from = masks_from
        if masks_from is not None and self.warmup_epochs:
            raise ConfigError(
                "`method.masks_from` takes the masks of a sparse_imp run without warm-up (its "
                "pruning starts from the initial weights, as this method's copies do); it cannot "
                f"be combined with `method.warmup_epochs = {self.warmup_epochs}`."
            )

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
        """Per-task copies (``<block>:<task>``) of one encoder initialisation, drawn as
        ``sparse_imp`` draws its shared encoder; each task's own head."""
        shared, _ = shared_trunk(backbone, tasks)
        blocks: dict[str, torch.nn.Module] = {}
        paths: dict[str, list[str]] = {}
        for task in tasks:
            own = [f"{b}:{task.name}" for b in backbone.block_names]
            for name, b in zip(own, backbone.block_names, strict=True):
                blocks[name] = copy.deepcopy(shared[b])
            blocks[head_name(task.name)] = shared[head_name(task.name)]
            paths[task.name] = [*own, head_name(task.name)]
        trunk = [b for p in paths.values() for b in p[:-1]]
        return MaskedModel(blocks, paths, maskable_parameters(blocks, trunk, weights_only=True))

    def search_free_keys(self) -> tuple[str, ...]:
        return (*super().search_free_keys(), "method.masks_from")

    def search(self, ctx: SearchContext) -> dict[str, Any]:
        if self.masks_from is None:
            return super().search(ctx)
        model = ctx.model
        if not isinstance(model, MaskedModel):
            raise TypeError("single_subnet needs the MaskedModel its method built")
        source = Path(self.masks_from).expanduser()
        _check_source(source, ctx.run_dir)
        saved = torch.load(source / "masks.pt", map_location="cpu")
        masks = {}
        for task in ctx.tasks:
            if task.name not in saved:
                raise ConfigError(
                    f"`method.masks_from`: {source}/masks.pt has no mask for task {task.name}"
                )
            mine = {k.split(".", 1)[0].split(":")[0] + "." + k.split(".", 1)[1]: k
                    for k in model.maskable if k.split(".", 1)[0].endswith(f":{task.name}")}  # fmt: skip
            if set(saved[task.name]) != set(mine):
                raise ConfigError(
                    f"`method.masks_from`: the masks in {source}/masks.pt are not of this "
                    "encoder's weight matrices (another backbone or size?)"
                )
            masks[task.name] = {
                mine[k]: m.float().to(ctx.device) for k, m in saved[task.name].items()
            }
        model.set_masks(masks)
        seed_task(ctx.seed, MAIN_PHASE)  # as after a pruning of its own
        stats = save_masks(ctx.run_dir, masks, {"masks_from": str(source)})
        return {"search_s": 0.0, "masks": stats, "masks_from": str(source)}


# Keys a masks_from source may differ in: what it is, how it ran, its multi-task phase.
_SOURCE_FREE = (
    "method._target_",
    "method.name",
    "method.masks_from",
    "method.candidates",
    "method.stop_after_target",
    "name",
    "notes",
)


def _check_source(source: Path, run_dir: Path) -> None:
    """Refuse a ``masks_from`` run that is not a finished sparse_imp run whose pruning read the
    same inputs as this run's would (the keys that differ are named)."""
    if not (source / "masks.pt").is_file() or not (source / "metrics.json").is_file():
        raise ConfigError(
            f"`method.masks_from`: {source} is not a finished run with masks (masks.pt and "
            "metrics.json)"
        )
    theirs, mine = saved_config(source), saved_config(run_dir)
    if theirs is None or mine is None:
        raise ConfigError(f"`method.masks_from`: cannot read {source}/.hydra/config.yaml")
    target = str(theirs.get("method", {}).get("_target_", ""))
    if not target.endswith("SparseIMP"):
        raise ConfigError(f"`method.masks_from`: {source} is a {target} run, not sparse_imp")
    a, b = flatten(theirs), flatten(mine)
    free: tuple[str, ...] = (*RUN_ONLY, *_SOURCE_FREE)
    if a.get("method.prune_epochs") is not None:
        free = (*free, "trainer.max_epochs")  # the multi-task phase only
    differ = sorted(
        k for k in set(a) | set(b)
        if a.get(k) != b.get(k) and not any(k == f or k.startswith(f"{f}.") for f in free)
    )  # fmt: skip
    if differ:
        shown = ", ".join(f"{k} (there {a.get(k)}, here {b.get(k)})" for k in differ[:6])
        raise ConfigError(
            f"`method.masks_from`: {source} pruned with other inputs than this run would: "
            f"{shown}{' and more' if len(differ) > 6 else ''}"
        )
