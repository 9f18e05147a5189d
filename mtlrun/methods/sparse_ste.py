"""Differentiable Modular Learning (seed 000, Algorithm 1): per-task Bernoulli weight masks
learned jointly with the supernet by the straight-through estimator.

Each step, for every task τ: M_τ ~ Bernoulli(π_τ) over all encoder parameters, forward with
θ ⊙ M_τ; the STE sets ∂L/∂π_τ := ∂L/∂M_τ (implemented as M + π − stopgrad(π)). θ accumulates
the tasks' gradients (each task only moves the weights its mask keeps) and takes one step of the
run's optimiser (seed 000 Table 4.1: SGD, lr 0.1); π_τ takes an Adam step (lr 3e-3, weight decay
1e-5) and is clipped to [0, 1]. After the search each π_τ is discretised to the target keep ratio
(global top-k, or per parameter tensor), optionally followed by fine-tuning θ with fixed masks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from mtlrun.backbones.base import Backbone
from mtlrun.data.base import Task
from mtlrun.errors import ConfigError
from mtlrun.methods.base import SearchContext, SharingMethod
from mtlrun.methods.sparse import check_ratio, masked_supernet, save_masks, warm_up
from mtlrun.model.masked import MaskedModel
from mtlrun.model.masks import topk_mask

log = logging.getLogger(__name__)

SEARCH_SELECT = ("last", "best")


class BernoulliMasks(nn.Module):
    """π_τ ∈ [0, 1]^{|θ|} for every task τ and maskable parameter; samples straight-through masks.

    Each task's π is one flat parameter (viewed per maskable tensor), so a step draws one
    Bernoulli tensor per task rather than one per weight tensor: fewer kernel launches.
    """

    def __init__(
        self,
        shapes: Mapping[str, Mapping[str, torch.Size]],
        init: str = "uniform",
        value: float = 0.5,
    ) -> None:
        super().__init__()
        self.shapes = {t: dict(per) for t, per in shapes.items()}
        self.pi = nn.ParameterDict()
        for t, per in shapes.items():
            n = sum(torch.Size(s).numel() for s in per.values())
            self.pi[self._name(t)] = nn.Parameter(
                torch.rand(n) if init == "uniform" else torch.full((n,), value)
            )

    @staticmethod
    def _name(task: str) -> str:
        return task.replace(".", "__")

    def views(self, task: str, flat: Tensor) -> dict[str, Tensor]:
        """Split a flat per-task vector into the task's parameter shapes."""
        sizes = [torch.Size(s).numel() for s in self.shapes[task].values()]
        return {
            k: part.view(s)
            for (k, s), part in zip(self.shapes[task].items(), flat.split(sizes), strict=True)
        }

    def flat(self, task: str) -> nn.Parameter:
        """π_τ as one vector (all maskable entries of the task, in key order)."""
        return self.pi[self._name(task)]

    def probabilities(self, task: str) -> dict[str, Tensor]:
        return self.views(task, self.flat(task))

    def sample(self, task: str) -> dict[str, Tensor]:
        """M + (π − stopgrad(π)): the value of a Bernoulli(π) draw, the gradient of π."""
        pi = self.flat(task)
        m = torch.bernoulli(pi.detach())
        return self.views(
            task, m + (pi - pi.detach())
        )  # exactly m in value (float rounding of (m+π)−π is not)

    @torch.no_grad()
    def clamp_(self) -> None:
        for p in self.pi.values():
            p.clamp_(0.0, 1.0)


class SparseSTE(SharingMethod):
    """Sparse sharing by straight-through-estimated masks (``method=sparse_ste``)."""

    searches = True

    def __init__(
        self,
        keep_ratio: float = 0.5,
        warmup_epochs: int = 0,
        per_layer: bool = False,
        search_epochs: int = 10,
        pi_lr: float = 3e-3,
        pi_weight_decay: float = 1e-5,
        pi_init: str = "uniform",
        pi_init_value: float = 0.5,
        finetune_epochs: int = 0,
        search_select: str = "last",
        name: str = "sparse_ste",
    ) -> None:
        check_ratio("method.keep_ratio", keep_ratio)
        if pi_init not in ("uniform", "constant"):
            raise ConfigError(
                f"`method.pi_init` should be one of uniform, constant. Found `method.pi_init = {pi_init}`."
            )
        if search_select not in SEARCH_SELECT:
            raise ConfigError(
                f"`method.search_select` should be one of {', '.join(SEARCH_SELECT)}. "
                f"Found `method.search_select = {search_select}`."
            )
        if search_epochs < 1:
            raise ConfigError(
                f"`method.search_epochs` should be >= 1. Found `method.search_epochs = {search_epochs}`."
            )
        self.name, self.keep_ratio, self.warmup_epochs, self.per_layer = (
            name,
            keep_ratio,
            warmup_epochs,
            per_layer,
        )
        self.search_epochs, self.pi_lr, self.pi_weight_decay = search_epochs, pi_lr, pi_weight_decay
        self.pi_init, self.pi_init_value, self.finetune_epochs = (
            pi_init,
            pi_init_value,
            finetune_epochs,
        )
        self.search_select = search_select
        if search_select == "best":
            self.deviations = (
                "The search keeps the epoch with the best validation score of the masks "
                "discretised at method.keep_ratio and stops early by trainer.patience "
                "(method.search_select=best); Algorithm 1 returns θ and π after all N iterations.",
            )

    def search_free_keys(self) -> tuple[str, ...]:
        """Config keys the search (warm-up and mask search) never reads, so runs that differ only
        in them share one search (``trainer.search_cache``). With ``search_select=last`` the
        keep ratio and the discretisation rule act only after the search; with ``best`` the
        search picks its epoch by validation at the keep ratio, so they stay in its key."""
        free: tuple[str, ...] = ("method.finetune_epochs", "trainer.max_epochs")
        if self.search_select == "last":
            free += ("method.keep_ratio", "method.per_layer")
        return free

    def build(self, backbone: Backbone, tasks: Sequence[Task]) -> MaskedModel:
        return masked_supernet(
            backbone, tasks, weights_only=False
        )  # masks cover all encoder parameters

    def main_epochs(self, trainer_epochs: int) -> int:
        """Epochs of the main phase: fine-tuning with the fixed masks."""
        return self.finetune_epochs

    def discretise(self, sampler: BernoulliMasks, task: str) -> dict[str, Tensor]:
        return topk_mask(sampler.probabilities(task), self.keep_ratio, self.per_layer)

    def search(self, ctx: SearchContext) -> dict[str, Any]:
        model = warm_up(ctx, self.warmup_epochs)
        shapes = {t.name: {k: p.shape for k, p in _maskable(model).items()} for t in ctx.tasks}
        sampler = BernoulliMasks(shapes, self.pi_init, self.pi_init_value).to(ctx.device)
        model.set_source(sampler.sample, lambda t: self.discretise(sampler, t), sampler)
        pi_optimizer = torch.optim.Adam(
            sampler.parameters(), lr=self.pi_lr, weight_decay=self.pi_weight_decay
        )
        start = time.perf_counter()
        last = self.search_select == "last"
        ctx.fit(
            "search",
            self.search_epochs,
            extra_optimizers=[pi_optimizer],
            after_step=sampler.clamp_,
            restore_best=not last,  # Algorithm 1: θ and π after the N-th iteration
            early_stop=not last,
        )
        search_s = time.perf_counter() - start
        masks = {t.name: self.discretise(sampler, t.name) for t in ctx.tasks}
        model.set_masks(masks)
        before = {"valid": ctx.evaluate("valid"), "test": ctx.evaluate("test")}
        stats = save_masks(ctx.run_dir, masks)
        log.info(
            "sparse_ste: search %.1fs; density %s; overlap %.3f",
            search_s,
            stats["density"],
            stats["overlap_ratio"],
        )
        return {
            "search_s": search_s,
            "masks": stats,
            "before_finetune": before if self.finetune_epochs else None,
        }


def _maskable(model: MaskedModel) -> dict[str, Tensor]:
    params = dict(model.blocks.named_parameters())
    return {key: params[key] for key in model.maskable}
