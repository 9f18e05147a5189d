"""The multi-task network F = (B, P, θ) of seed 001 §3: blocks, and one path per task.

``blocks`` maps a block name to its module (parameters θ_i); ``paths[t]`` lists the block
names that compute task t's output, the last one being t's head. ``users(i)`` is O(i), the
tasks whose path runs through block i. Hard sharing, single-task networks, branching trees,
skipped blocks (AdaShare) and per-task weight masks are all instances of this structure.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from mtlrun.backbones.accounting import count_parameters, counted_parameters


class MultiTaskModel(nn.Module):
    """Blocks shared along per-task paths; a shared path prefix is computed once per batch."""

    def __init__(self, blocks: Mapping[str, nn.Module], paths: Mapping[str, Sequence[str]]) -> None:
        super().__init__()
        for task, path in paths.items():
            missing = [b for b in path if b not in blocks]
            if missing or not path:
                raise ValueError(f"path of task {task!r} names unknown blocks {missing}")
        self.blocks = nn.ModuleDict(dict(blocks))
        self.paths: dict[str, tuple[str, ...]] = {t: tuple(p) for t, p in paths.items()}
        # When a dict, forward records every block output per task: taps[block][task] (the
        # representation-gradient balancers read Z_i from it; seed 001 eq. 4.6-4.7).
        self.taps: dict[str, dict[str, Any]] | None = None

    # ------------------------------------------------------------------ structure

    @property
    def tasks(self) -> list[str]:
        return list(self.paths)

    def users(self, block: str) -> list[str]:
        """O(i): the tasks whose path contains ``block``."""
        return [t for t, p in self.paths.items() if block in p]

    def loss_users(self, block: str) -> list[str]:
        """The tasks whose loss depends on ``block``'s parameters: O(i) for the balancers.

        Equal to :meth:`users` unless a method mixes blocks outside the paths (cross-stitch).
        """
        return self.users(block)

    def head(self, task: str) -> str:
        return self.paths[task][-1]

    def trunk_blocks(self) -> list[str]:
        """Blocks that are no task's head, in first-use order: the encoder of METHODS §3."""
        heads = {p[-1] for p in self.paths.values()}
        seen: dict[str, None] = {}
        for p in self.paths.values():
            for b in p[:-1]:
                if b not in heads:
                    seen[b] = None
        return list(seen)

    def shared_blocks(self) -> list[str]:
        """Blocks used by more than one task."""
        return [b for b in self.blocks if len(self.users(b)) > 1]

    def weight_parameters(self) -> list[nn.Parameter]:
        """θ, the parameters the main optimiser trains (methods may hold search parameters)."""
        return list(self.parameters())

    def fixed_masks(self) -> dict[str, dict[str, Tensor]]:
        """Per-task weight masks fixed by a search (saved in checkpoints); none here."""
        return {}

    def set_masks(self, masks: dict[str, dict[str, Tensor]]) -> None:
        """Fix per-task weight masks (sparse sharing); a model without masks takes none."""
        if masks:
            raise TypeError(f"{type(self).__name__} takes no weight masks")

    def epoch_log(self) -> dict[str, float]:
        """Entries for the epoch's row of history.csv (e.g. mask densities); none here."""
        return {}

    def regularizer(self) -> Tensor | None:
        """An extra loss term added to every step (e.g. soft sharing's L2 coupling), or None."""
        return None

    # ------------------------------------------------------------------ forward

    def run_block(self, name: str, x: Any, task: str) -> Any:
        """Apply one block for one task; methods with per-task masks or skips override this."""
        return self.blocks[name](x)

    def cache_key(self, task: str, prefix: tuple[str, ...]) -> Any:
        """Outputs with equal keys are computed once; the default shares equal path prefixes."""
        return prefix

    def forward(self, inputs: Any, tasks: Iterable[str] | None = None) -> dict[str, Tensor]:
        """Outputs of the given tasks (default: all) on one input batch that they all read."""
        cache: dict[Any, Any] = {}
        out: dict[str, Tensor] = {}
        for task in tasks if tasks is not None else self.paths:
            x: Any = inputs
            prefix: tuple[str, ...] = ()
            for name in self.paths[task]:
                prefix = (*prefix, name)
                key = self.cache_key(task, prefix)
                if key not in cache:
                    cache[key] = self.run_block(name, x, task)
                x = cache[key]
                self.tap(name, task, x)
            out[task] = x
        return out

    def tap(self, block: str, task: str, output: Any) -> None:
        """Record ``block``'s output as seen by ``task`` while ``taps`` is a dict."""
        if self.taps is not None:
            self.taps.setdefault(block, {})[task] = output

    # ------------------------------------------------------------------ tree operations

    def peel(self, task: str) -> MultiTaskModel:
        """peel(F, t): an independent copy of task t's sub-network alone (seed 001 §3)."""
        path = self.paths[task]
        blocks = {b: copy.deepcopy(self.blocks[b]) for b in path}
        return MultiTaskModel(blocks, {task: path})

    def child_blocks(self, block: str) -> list[str]:
        """C_F(i): the blocks that directly follow ``block`` on some task's path (first-use order).

        A task's head is the last block of its path, so a head has no children.
        """
        seen: dict[str, None] = {}
        for path in self.paths.values():
            if block in path[:-1]:
                seen[path[path.index(block) + 1]] = None
        return list(seen)

    def split(self, block: str, groups: Sequence[Sequence[str]]) -> list[str]:
        """split(F, i, π) of seed 001 §3, in place: block i becomes one copy per group of children.

        ``groups`` is a partition of :meth:`child_blocks` (``block``); copy k (1-based) is named
        ``<block>-<k>``, starts from a deep copy of block i's current weights (so every output
        is unchanged right after the split) and replaces i on the paths of the tasks whose child
        lies in group k; from then on each copy receives only its group's gradients. Returns the
        copies' names. The optimiser must be rebuilt afterwards (the parameters are new objects).
        """
        kids = self.child_blocks(block)
        flat = [c for g in groups for c in g]
        if not groups or any(not g for g in groups) or sorted(flat) != sorted(kids):
            raise ValueError(
                f"split of {block!r}: groups {[list(g) for g in groups]} should be a partition "
                f"of its children {kids} into non-empty groups"
            )
        names = [f"{block}-{k}" for k in range(1, len(groups) + 1)]
        clash = [n for n in names if n in self.blocks]
        if clash:
            raise ValueError(f"split of {block!r}: blocks {clash} exist already")
        group_of = {c: k for k, g in enumerate(groups) for c in g}
        for task, path in self.paths.items():
            if block in path:
                at = path.index(block)
                copy_name = names[group_of[path[at + 1]]]
                self.paths[task] = (*path[:at], copy_name, *path[at + 1 :])
        blocks: dict[str, nn.Module] = {}
        for name, module in self.blocks.items():
            if name == block:
                blocks.update({n: copy.deepcopy(module) for n in names})
            else:
                blocks[name] = module
        self.blocks = nn.ModuleDict(blocks)
        return names

    # ------------------------------------------------------------------ accounting

    def param_counts(self) -> dict[str, Any]:
        """Encoder parameters (METHODS §4): supernet, used (active for ≥1 task), per task.

        Heads and ``uncounted`` submodules (embedding tables) are outside this unit.
        """
        trunk = self.trunk_blocks()
        sizes = {b: count_parameters(self.blocks[b]) for b in trunk}
        heads = {p[-1] for p in self.paths.values()}
        supernet = sum(count_parameters(m) for b, m in self.blocks.items() if b not in heads)
        per_task = {t: sum(sizes[b] for b in p[:-1] if b in sizes) for t, p in self.paths.items()}
        return {"supernet": supernet, "used": sum(sizes.values()), "per_task": per_task}

    def counted_named_parameters(self, block: str) -> list[tuple[str, nn.Parameter]]:
        return counted_parameters(self.blocks[block])
