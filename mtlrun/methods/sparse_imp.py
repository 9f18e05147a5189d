"""Sparse sharing by iterative magnitude pruning (Sun et al., AAAI 2020).

Per task, from θ0 (the initial or warm-up weights): train on that task alone, prune globally the
lowest-magnitude entries of the char-CNN and LSTM weight matrices (biases kept) to the next
density of a geometric schedule (``rounds`` rounds from 1 down to ``final_density``: density_r =
final_density^(r/rounds), i.e. ~10.9 % of the remaining weights per round with the defaults),
rewind the survivors to θ0 and repeat. Among the ``candidates`` rounds whose density is nearest
``keep_ratio`` the mask with the best validation score is kept. Then all tasks train from θ0
with their masks fixed; each step visits the tasks in random order, one update each.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from mtlrun.backbones.base import Backbone
from mtlrun.data.base import Task
from mtlrun.errors import ConfigError
from mtlrun.methods.base import SearchContext, SharingMethod
from mtlrun.methods.sparse import check_ratio, masked_supernet, save_masks, warm_up
from mtlrun.model.masked import MaskedModel
from mtlrun.model.masks import MaskSet, magnitude_prune

log = logging.getLogger(__name__)


class SparseIMP(SharingMethod):
    """``method=sparse_imp``: per-task IMP masks, then multi-task training with fixed masks."""

    update = "per_task"  # Sun et al.: one optimiser step per task batch, tasks in random order
    searches = True

    def __init__(
        self,
        keep_ratio: float = 0.5,
        warmup_epochs: int = 0,
        per_layer: bool = False,
        rounds: int = 20,
        final_density: float = 0.1,
        prune_epochs: int = 2,
        stop_after_target: bool = True,
        candidates: int = 3,
        name: str = "sparse_imp",
    ) -> None:
        check_ratio("method.keep_ratio", keep_ratio)
        check_ratio("method.final_density", final_density)
        if per_layer:
            raise ConfigError(
                "`method.per_layer=true` is not part of Sun et al.'s global pruning; "
                "use method=sparse_ste for per-layer masks."
            )
        for key, value in (
            ("rounds", rounds),
            ("prune_epochs", prune_epochs),
            ("candidates", candidates),
        ):
            if value < 1:
                raise ConfigError(f"`method.{key}` should be >= 1. Found `method.{key} = {value}`.")
        self.name, self.keep_ratio, self.warmup_epochs = name, keep_ratio, warmup_epochs
        self.rounds, self.final_density, self.prune_epochs = rounds, final_density, prune_epochs
        self.stop_after_target, self.candidates = stop_after_target, candidates

    def build(self, backbone: Backbone, tasks: Sequence[Task]) -> MaskedModel:
        return masked_supernet(backbone, tasks, weights_only=True)

    def main_epochs(self, trainer_epochs: int) -> int:
        return trainer_epochs

    def density(self, r: int) -> float:
        """Geometric schedule: density after r pruning rounds."""
        return self.final_density ** (r / self.rounds)

    def search(self, ctx: SearchContext) -> dict[str, Any]:
        model = warm_up(ctx, self.warmup_epochs)
        theta0 = copy.deepcopy(model.state_dict())
        start = time.perf_counter()
        masks: MaskSet = {}
        rounds_log: dict[str, list[dict[str, float]]] = {}
        for task in ctx.tasks:
            masks[task.name], rounds_log[task.name] = self.prune_task(ctx, model, task, theta0)
        search_s = time.perf_counter() - start
        model.load_state_dict(theta0, strict=False)  # rewind: multi-task training starts from θ0
        model.set_masks(masks)
        stats = save_masks(ctx.run_dir, masks, {"rounds": rounds_log})
        log.info("sparse_imp: search %.1fs; density %s", search_s, stats["density"])
        return {"search_s": search_s, "masks": stats}

    def prune_task(
        self, ctx: SearchContext, model: MaskedModel, task: Task, theta0: dict[str, Tensor]
    ) -> tuple[dict[str, Tensor], list[dict[str, float]]]:
        """IMP for one task: train, record, prune, rewind; pick the mask (see module doc)."""
        params = dict(model.blocks.named_parameters())
        own = set(
            model.paths[task.name]
        )  # shared supernet: every key; private copies: the task's own
        keys = [k for k in model.maskable if k.split(".", 1)[0] in own]
        mask = {k: torch.ones_like(params[k]) for k in keys}
        tried: list[tuple[int, float, dict[str, Tensor], float]] = []
        for r in range(self.rounds + 1):
            model.load_state_dict(theta0, strict=False)
            model.set_masks({task.name: mask})
            score = ctx.fit(f"imp/{task.name}/round{r}", self.prune_epochs, tasks=[task])
            tried.append((r, self.density(r), mask, score))
            log.info(
                "sparse_imp %s round %d: density %.3f, valid %.4f",
                task.name,
                r,
                self.density(r),
                score,
            )
            if r == self.rounds or (
                self.stop_after_target and self._candidates_known(r, [c[1] for c in tried])
            ):
                break
            trained = {k: params[k].detach() for k in keys}
            mask = magnitude_prune(trained, mask, self.density(r + 1))
        nearest = sorted(tried, key=lambda c: abs(c[1] - self.keep_ratio))[: self.candidates]
        chosen = max(nearest, key=lambda c: c[3])
        log.info("sparse_imp %s: keeping round %d (density %.3f)", task.name, chosen[0], chosen[1])
        history = [
            {"round": r, "density": d, "valid_score": s, "chosen": r == chosen[0]}
            for r, d, _, s in tried
        ]
        return chosen[2], history

    def _candidates_known(self, r: int, tried: list[float]) -> bool:
        """True once the ``candidates`` rounds nearest the target density have all been tried.

        Densities fall with every round, so once the next round is below the target the untried
        rounds only get farther from it: the search stops when the ``candidates``-th nearest
        tried density is at least as near as the next round's.
        """
        if self.density(r + 1) > self.keep_ratio:
            return False
        gaps = sorted(abs(d - self.keep_ratio) for d in tried)
        following = abs(self.density(r + 1) - self.keep_ratio)
        return len(gaps) >= self.candidates and gaps[self.candidates - 1] <= following
