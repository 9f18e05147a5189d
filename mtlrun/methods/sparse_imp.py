"""Sparse sharing by iterative magnitude pruning (Sun et al., AAAI 2020; their code
``choosewhatulike/sparse-sharing``: train_single.py, src/prune.py, train_mtl.py).

Per task, from θ0 (the initial or warm-up weights): train on that task alone, keep the best
validation epoch, prune ``rate = 1 − final_density^(1/rounds)`` of the still-kept char-CNN and
LSTM weight-matrix entries by global magnitude (biases kept; ~10.9 % per round with 20 rounds down
to 0.1), rewind every weight to θ0 and repeat. The kept mask is the round whose scheduled density
``final_density^(r/rounds)`` is nearest ``keep_ratio`` (their prepare-masks.sh takes a fixed round,
10 ≈ 31.6 %, the default here), or with ``select=valid`` the best-validation one among the
``candidates`` nearest. Then all tasks train from θ0 with their masks fixed, one update per task
batch, tasks in random order.
"""

from __future__ import annotations

import copy
import logging
import random
import time
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mtlrun.backbones.base import Backbone
from mtlrun.data.base import Task
from mtlrun.errors import ConfigError
from mtlrun.methods.base import SearchContext, SharingMethod
from mtlrun.methods.sparse import check_ratio, masked_supernet, save_masks
from mtlrun.model.masked import MaskedModel
from mtlrun.model.masks import MaskSet, prune_fraction

log = logging.getLogger(__name__)

SELECT = ("nearest", "valid")
MAIN_PHASE = "<main phase>"  # seed_task name of the phase after the pruning
# Their run_conll03.sh: --pruning_iter 20 --final_rate 0.1; prepare-masks.sh: MASK_LIST 10 10 10.
AUTHORS_ROUNDS, AUTHORS_FINAL, AUTHORS_ROUND_KEPT = 20, 0.1, 10


class SparseIMP(SharingMethod):
    """``method=sparse_imp``: per-task IMP masks, then multi-task training with fixed masks."""

    update = "per_task"  # Sun et al.: one optimiser step per task batch, tasks in random order
    searches = True

    def __init__(
        self,
        keep_ratio: float = AUTHORS_FINAL ** (AUTHORS_ROUND_KEPT / AUTHORS_ROUNDS),
        warmup_epochs: int = 0,
        per_layer: bool = False,
        rounds: int = AUTHORS_ROUNDS,
        final_density: float = AUTHORS_FINAL,
        prune_epochs: int | None = None,
        select: str = "nearest",
        stop_after_target: bool = True,
        candidates: int = 3,
        name: str = "sparse_imp",
    ) -> None:
        check_ratio("method.keep_ratio", keep_ratio)
        check_ratio("method.final_density", final_density)
        if select not in SELECT:
            raise ConfigError(
                f"`method.select` should be one of {', '.join(SELECT)}. "
                f"Found `method.select = {select}`."
            )
        for key, value in (
            ("rounds", rounds),
            ("prune_epochs", 1 if prune_epochs is None else prune_epochs),
            ("candidates", candidates),
            ("warmup_epochs", warmup_epochs + 1),
        ):
            if value < 1:
                shown = value - 1 if key == "warmup_epochs" else value
                bound = ">= 0" if key == "warmup_epochs" else ">= 1"
                raise ConfigError(
                    f"`method.{key}` should be {bound}. Found `method.{key} = {shown}`."
                )
        self.name, self.keep_ratio, self.warmup_epochs = name, keep_ratio, warmup_epochs
        self.per_layer, self.select = per_layer, select
        self.rounds, self.final_density, self.prune_epochs = rounds, final_density, prune_epochs
        self.stop_after_target, self.candidates = stop_after_target, candidates
        self.deviations = self._deviations()

    # ---------------------------------------------------------------- schedule

    @property
    def rate(self) -> float:
        """Share of the still-kept entries pruned per round (their ``Pruning.one_rate``)."""
        return 1 - self.final_density ** (1 / self.rounds)

    def density(self, r: int) -> float:
        """Scheduled density after r pruning rounds: (1 − rate)^r = final_density^(r/rounds)."""
        return self.final_density ** (r / self.rounds)

    def kept_counts(self, total: int) -> list[int]:
        """Entries kept after 0..rounds rounds on ``total`` distinct magnitudes: each round drops
        round(rate · kept) (their cutoff index), so the counts compound their roundings."""
        counts = [total]
        for _ in range(self.rounds):
            counts.append(counts[-1] - min(counts[-1], round(self.rate * counts[-1])))
        return counts

    def nearest_round(self) -> int:
        """The round whose scheduled density is nearest ``keep_ratio`` (earlier on a tie)."""
        return min(range(self.rounds + 1), key=lambda r: abs(self.density(r) - self.keep_ratio))

    # ---------------------------------------------------------------- hooks

    def build(self, backbone: Backbone, tasks: Sequence[Task]) -> MaskedModel:
        return masked_supernet(backbone, tasks, weights_only=True)

    def main_epochs(self, trainer_epochs: int) -> int:
        return trainer_epochs

    def search_free_keys(self) -> tuple[str, ...]:
        """Keys the pruning never reads: which round is kept (the keep ratio and the way it is
        chosen) acts after the rounds, and a shallower search's rounds are the first rounds of a
        deeper one, so runs that differ only in these share their rounds
        (``trainer.search_cache``); ``trainer.max_epochs`` too when ``prune_epochs`` is set."""
        free = (
            "method.keep_ratio",
            "method.select",
            "method.candidates",
            "method.stop_after_target",
        )
        return (*free, "trainer.max_epochs") if self.prune_epochs is not None else free

    def search(self, ctx: SearchContext) -> dict[str, Any]:
        model = ctx.model
        if not isinstance(model, MaskedModel):
            raise TypeError("sparse_imp needs the MaskedModel its method built")
        if self.warmup_epochs:
            # Their "Multi-Task Warmup": θ0 from unmasked multi-task training (train_mtl.py
            # without masks: one update per task batch).
            model.mode = "dense"
            ctx.fit("warmup", self.warmup_epochs, update=self.update)
        theta0 = copy.deepcopy(model.state_dict())
        epochs = self.prune_epochs or _trainer_epochs(ctx)
        start = time.perf_counter()
        masks: MaskSet = {}
        rounds_log: dict[str, list[dict[str, Any]]] = {}
        for task in ctx.tasks:
            masks[task.name], rounds_log[task.name] = self.prune_task(
                ctx, model, task, theta0, epochs
            )
        search_s = time.perf_counter() - start
        model.load_state_dict(theta0, strict=False)  # rewind: multi-task training starts from θ0
        model.set_masks(masks)
        seed_task(ctx.seed, MAIN_PHASE)  # the main phase's draws do not depend on the rounds run
        stats = save_masks(ctx.run_dir, masks, {"rounds": rounds_log})
        log.info("sparse_imp: search %.1fs; density %s", search_s, stats["density"])
        return {"search_s": search_s, "masks": stats}

    def prune_task(
        self,
        ctx: SearchContext,
        model: MaskedModel,
        task: Task,
        theta0: dict[str, Tensor],
        epochs: int,
    ) -> tuple[dict[str, Tensor], list[dict[str, Any]]]:
        """IMP for one task: train (best validation epoch), prune, rewind; pick the mask.

        Each task's rounds start from their own seed (the run's seed and the task's name), as
        the authors' per-task train_single.py processes do, so a task's rounds do not depend on
        how many rounds the tasks before it ran (a search for another keep ratio shares them).
        """
        seed_task(ctx.seed, task.name)
        params = dict(model.blocks.named_parameters())
        own = set(model.paths[task.name])  # shared supernet: every key; private copies: its own
        keys = [k for k in model.maskable if k.split(".", 1)[0] in own]
        total = sum(params[k].numel() for k in keys)
        mask = {k: torch.ones_like(params[k]) for k in keys}
        last = self.nearest_round() if self.select == "nearest" else self.rounds
        tried: list[tuple[int, dict[str, Tensor], float | None]] = []
        for r in range(last + 1):
            if self.select == "nearest" and r == last:
                tried.append((r, mask, None))  # kept as is: training it would change nothing
                break
            model.load_state_dict(theta0, strict=False)
            model.set_masks({task.name: mask})
            score = ctx.fit(f"imp/{task.name}/round{r}", epochs, tasks=[task])
            tried.append((r, mask, score))
            log.info(
                "sparse_imp %s round %d: density %.3f, valid %.4f",
                task.name, r, _kept(mask) / total, score,
            )  # fmt: skip
            if r == self.rounds or (
                self.select == "valid"
                and self.stop_after_target
                and self._candidates_known(r, [self.density(c[0]) for c in tried])
            ):
                break
            trained = {k: params[k].detach() for k in keys}  # the best validation epoch's
            mask = prune_fraction(trained, mask, self.rate, self.per_layer)
        chosen = tried[-1] if self.select == "nearest" else self._best_valid(tried)
        log.info(
            "sparse_imp %s: keeping round %d (density %.3f)",
            task.name, chosen[0], _kept(chosen[1]) / total,
        )  # fmt: skip
        history = [
            {
                "round": r,
                "density": _kept(m) / total,
                "scheduled_density": self.density(r),
                "valid_score": s,
                "chosen": r == chosen[0],
            }
            for r, m, s in tried
        ]
        return chosen[1], history

    def _best_valid(
        self, tried: list[tuple[int, dict[str, Tensor], float | None]]
    ) -> tuple[int, dict[str, Tensor], float | None]:
        """Among the ``candidates`` rounds nearest ``keep_ratio``, the best validation score."""
        by_gap = sorted(tried, key=lambda c: abs(self.density(c[0]) - self.keep_ratio))
        return max(by_gap[: self.candidates], key=lambda c: float("-inf") if c[2] is None else c[2])

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

    # ---------------------------------------------------------------- fidelity

    def _deviations(self) -> list[str]:
        """How a run with these options departs from the authors' code (metrics.json)."""
        out = [
            "The multi-task phase keeps the epoch with the best mean validation score; the "
            "authors' trainer (src/trainer.py) keeps the epoch with the best mean test score.",
            "Per-task updates reshuffle the task order at every step and give every task the same "
            "sentence batch; the authors draw one task order per epoch and shuffle each task's "
            "batches independently.",
            "Pruning rounds and the main phase use the run's optimiser, trainer.grad_clip "
            "(gradient norm) and trainer.patience; the authors' rounds decay the learning rate as "
            "1/(1 + 0.05·epoch) with gradient-norm clipping at 5, their multi-task phase keeps "
            "the rate fixed and clips gradient values at 5, and neither stops early.",
            "Pruned weights get no gradient in the pruning rounds (θ ⊙ M); the authors' rounds "
            "let them take the step and zero them after it, so their gradient-norm clip also "
            "counts those gradients.",
        ]
        if (self.rounds, self.final_density) != (AUTHORS_ROUNDS, AUTHORS_FINAL):
            out.append(
                f"Schedule of {self.rounds} rounds down to density {self.final_density}; the "
                f"authors' run_conll03.sh prunes {AUTHORS_ROUNDS} rounds down to {AUTHORS_FINAL}."
            )
        if self.select == "valid":
            out.append(
                f"Each task keeps the best-validation round among the {self.candidates} rounds "
                f"nearest density {self.keep_ratio:g} (mtlrun's automatic choice); the authors "
                "pick one round per task by hand (prepare-masks.sh)."
            )
        elif self.nearest_round() != AUTHORS_ROUND_KEPT or self.rounds != AUTHORS_ROUNDS:
            out.append(
                f"Each task keeps pruning round {self.nearest_round()} (scheduled density "
                f"{self.density(self.nearest_round()):.3f}); the authors' prepare-masks.sh keeps "
                f"round {AUTHORS_ROUND_KEPT} of {AUTHORS_ROUNDS} (density "
                f"{AUTHORS_FINAL ** (AUTHORS_ROUND_KEPT / AUTHORS_ROUNDS):.3f})."
            )
        if self.per_layer:
            out.append(
                "Per-layer pruning (the authors' unused `prune`, which also drops entries equal "
                "to the cutoff) instead of their global pruning (`prune_global`)."
            )
        if self.prune_epochs is not None:
            out.append(
                f"Pruning rounds train method.prune_epochs={self.prune_epochs} epochs each, set "
                "apart from the multi-task phase's; the authors use one --epochs (100) for both."
            )
        if self.warmup_epochs:
            out.append(
                f"Warm-up: {self.warmup_epochs} epochs of unmasked multi-task training inside the "
                "run; the authors load a separate multi-task run's checkpoint (README "
                "'Multi-Task Warmup'; its length is not in their code, and that run's best.th is "
                "picked on test scores)."
            )
        return out


def seed_task(seed: int, task: str) -> None:
    """Seed Python, NumPy and torch from the run's seed and a task's name."""
    derived = (seed * 1_000_003 + zlib.crc32(task.encode())) % 2**31
    random.seed(derived)
    np.random.seed(derived)
    torch.manual_seed(derived)


def _kept(mask: dict[str, Tensor]) -> int:
    return int(sum(int(m.sum()) for m in mask.values()))


def _trainer_epochs(ctx: SearchContext) -> int:
    """``trainer.max_epochs`` of the run: the epochs of every pruning round by default."""
    settings = getattr(ctx, "settings", None)
    if settings is None:
        raise ConfigError("`method.prune_epochs` is null and the run has no trainer.max_epochs")
    return int(settings.max_epochs)
