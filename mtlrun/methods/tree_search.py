"""Greedy minimum-stress tree search (seed 001 §5, Algorithms 2-5): ``method=tree_search``.

Start from hard sharing (a tree whose root chain is the whole trunk) trained with the run's
balancer (the thesis: hybrid, Algorithm 1) towards Pareto stationarity; then ``n_splits`` times:
peel every task and fine-tune the peels (``peel_epochs``, the thesis's 10), measure each
splittable block's stress (Alg. 2) and task affinity (Alg. 3) from the importance-weighted JS
divergence of BN-normalised activations (eq. 5.1-5.8, :mod:`mtlrun.methods.stress`), split the
most stressed block into two groups of children by spectral clustering of the children
affinity (Alg. 4-5), and retrain. BN scales carry the network-slimming L1 penalty (eq. 5.6)
throughout, since the importances (eq. 5.7) are read from them. ``random_splits``: the same
number of splits at random blocks into random groups (the thesis's Table 1 baselines).

The main phase (``trainer.max_epochs``) fine-tunes the final tree from the searched weights
(the search's last split is not retrained inside the search: the main phase is that training).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from mtlrun.backbones.base import Backbone
from mtlrun.backbones.lenet_bn import LeNetBN
from mtlrun.backbones.resnet import ResNet
from mtlrun.data.base import Task
from mtlrun.errors import ArgumentErrors, ConfigError
from mtlrun.methods import stress as S
from mtlrun.methods.base import SearchContext, SharingMethod, shared_trunk
from mtlrun.methods.tree_artefacts import write_step_artefacts, write_tree_json, write_tree_png
from mtlrun.model.paths import MultiTaskModel

log = logging.getLogger(__name__)

BACKBONES = {"lenet_bn": LeNetBN, "resnet": ResNet}  # blocks that end in BatchNorm
PROBE_BATCH = 100  # validation images per probe batch (method.similarity_batches of them)


class SlimmedTree(MultiTaskModel):
    """A tree network whose loss adds λ·Σ_{γ ∈ Γ} ‖γ‖₁ over all BN scales (eq. 5.6)."""

    def __init__(
        self,
        blocks: Mapping[str, nn.Module],
        paths: Mapping[str, Sequence[str]],
        l1: float = 0.0,
    ) -> None:
        super().__init__(blocks, paths)
        self.l1 = float(l1)

    def regularizer(self) -> Tensor | None:
        scales = [m.weight for m in self.modules() if isinstance(m, _BatchNorm) and m.affine]
        if self.l1 <= 0 or not scales:
            return None
        return self.l1 * torch.stack([g.abs().sum() for g in scales]).sum()

    def peel(self, task: str) -> SlimmedTree:
        p = super().peel(task)
        return SlimmedTree(dict(p.blocks), p.paths, self.l1)


def last_bn(block: nn.Module) -> _BatchNorm:
    """The BatchNorm that ends the block's main branch (a residual shortcut's BN excluded)."""
    found = [
        m
        for name, m in block.named_modules()
        if isinstance(m, _BatchNorm) and "downsample" not in name.split(".")
    ]
    if not found:
        raise ValueError(f"block {type(block).__name__} has no BatchNorm layer")
    return found[-1]


@torch.no_grad()
def capture(model: MultiTaskModel, blocks: Sequence[str], inputs: Any) -> dict[str, Tensor]:
    """Z̃_i = (Z_in − running mean) / sqrt(running var + ε) (eq. 5.5) at each block's last BN,
    in eval mode, for one input batch: {block: (N, c, h, w)}."""
    out: dict[str, Tensor] = {}
    handles = []
    for b in blocks:
        bn = last_bn(model.blocks[b])

        def hook(
            _m: nn.Module, args: tuple[Tensor, ...], _y: Tensor, b: str = b, bn: _BatchNorm = bn
        ) -> None:
            x = args[0]
            assert bn.running_mean is not None and bn.running_var is not None
            shape = [1, -1] + [1] * (x.dim() - 2)
            mean, var = bn.running_mean.view(shape), bn.running_var.view(shape)
            out[b] = (x - mean) / torch.sqrt(var + bn.eps)

        handles.append(bn.register_forward_hook(hook))
    tasks = [t for t in model.tasks if any(b in model.paths[t] for b in blocks)]
    was_training = model.training
    model.eval()
    try:
        model(inputs, tasks=tasks)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return out


def probe_batches(data: Any, tasks: Sequence[str], n: int, batch: int = PROBE_BATCH) -> list[Any]:
    """The first ``n`` validation batches of each task in ``tasks`` (their inputs only)."""
    counts = dict.fromkeys(tasks, 0)
    out = []
    for inputs, targets in data.eval_groups("valid", batch):
        hit = [t for t in targets if t in counts and counts[t] < n]
        if hit:
            out.append(inputs)
            for t in hit:
                counts[t] += 1
        if all(c >= n for c in counts.values()):
            break
    return out


def _to(inputs: Any, device: torch.device) -> Any:
    return inputs.to(device) if isinstance(inputs, Tensor) else inputs


class TreeSearch(SharingMethod):
    """Greedy minimum-stress tree search (``method=tree_search``; seed 001 Algorithm 5)."""

    searches = True

    def __init__(
        self,
        n_splits: int = 2,
        peel_epochs: int = 10,
        l1: float = 1e-4,
        max_stationary_epochs: int = 10,
        stationary_share: float = 0.5,
        similarity_batches: int = 10,
        random_splits: bool = False,
        random_seed: int = 0,
        name: str = "tree_search",
    ) -> None:
        errors = ArgumentErrors("method")
        errors.require(n_splits >= 1, "n_splits", "an integer >= 1", n_splits)
        errors.require(peel_epochs >= 1, "peel_epochs", "an integer >= 1", peel_epochs)
        errors.require(l1 >= 0, "l1", ">= 0", l1)
        errors.require(
            max_stationary_epochs >= 1,
            "max_stationary_epochs",
            "an integer >= 1",
            max_stationary_epochs,
        )
        errors.require(
            0 <= stationary_share <= 1, "stationary_share", "in [0, 1]", stationary_share
        )
        errors.require(
            similarity_batches >= 1, "similarity_batches", "an integer >= 1", similarity_batches
        )
        errors.raise_if_any()
        self.name, self.n_splits, self.peel_epochs, self.l1 = name, n_splits, peel_epochs, l1
        self.max_stationary_epochs, self.stationary_share = max_stationary_epochs, stationary_share
        self.similarity_batches = similarity_batches
        self.random_splits, self.random_seed = random_splits, random_seed

    # ------------------------------------------------------------------ structure

    def build(self, backbone: Backbone, tasks: Sequence[Task]) -> SlimmedTree:
        if not isinstance(backbone, tuple(BACKBONES.values())):
            raise ConfigError(
                f"`backbone` should be one of {', '.join(BACKBONES)} for method=tree_search (its "
                "channel similarity reads the BatchNorm that ends each block, seed 001 §5.2). "
                f"Found a {type(backbone).__name__} backbone."
            )
        return SlimmedTree(*shared_trunk(backbone, tasks), l1=self.l1)

    def rebuild(self, model: MultiTaskModel, search: dict[str, Any]) -> MultiTaskModel:
        """Re-apply the recorded splits, in order, to a freshly built model."""
        for step in search["tree"]["steps"]:
            if step.get("split"):
                model.split(step["split"]["block"], step["split"]["groups"])
        return model

    # ------------------------------------------------------------------ search

    def train_to_stationarity(self, ctx: SearchContext, name: str) -> dict[str, Any]:
        """Epochs of the run's balancer until the epoch's KKT share ``kkt/stationary`` reaches
        ``stationary_share`` (at most ``max_stationary_epochs``); one phase per epoch."""
        share = None
        for e in range(1, self.max_stationary_epochs + 1):
            ctx.fit(f"{name}/e{e}", 1)
            share = ctx.history[-1].get("kkt/stationary") if ctx.history else None
            if share is not None and share >= self.stationary_share:
                return {"phase": name, "epochs": e, "kkt_stationary": share, "stationary": True}
        return {
            "phase": name,
            "epochs": self.max_stationary_epochs,
            "kkt_stationary": share,
            "stationary": False,
        }

    def measure(self, ctx: SearchContext, model: MultiTaskModel, step: int) -> dict[str, Any]:
        """Stress (Alg. 2) and task affinity (Alg. 3) of every splittable block."""
        splittable = [b for b in model.blocks if len(model.child_blocks(b)) >= 2]
        users = [t for t in model.tasks if any(t in model.users(b) for b in splittable)]
        by_name = {t.name: t for t in ctx.tasks}
        peels: dict[str, MultiTaskModel] = {}
        for t in users:  # peel(F, t) is the same for every block of t: fine-tune it once
            peels[t] = model.peel(t)
            ctx.fit(f"peel/step{step}/{t}", self.peel_epochs, tasks=[by_name[t]], model=peels[t])
        stresses: dict[str, float] = {}
        against_joint: dict[str, dict[str, float]] = {}
        affinity: dict[str, dict[str, Any]] = {}
        for b in splittable:
            tasks = model.users(b)
            joint, pairs = self._divergences(ctx, model, peels, b, tasks)
            weight = {t: S.importance(last_bn(peels[t].blocks[b]).weight) for t in tasks}
            own = S.importance(last_bn(model.blocks[b]).weight)
            against_joint[b] = {t: S.compatibility(joint[t], (weight[t] + own) / 2) for t in tasks}
            stresses[b] = S.stress(against_joint[b])
            matrix = np.zeros((len(tasks), len(tasks)))
            for (i, j), div in pairs.items():
                c = S.compatibility(div, (weight[tasks[i]] + weight[tasks[j]]) / 2)
                matrix[i, j] = matrix[j, i] = c
            affinity[b] = {"tasks": tasks, "matrix": matrix.tolist()}
        return {"stress": stresses, "compatibility": against_joint, "task_affinity": affinity}

    def _divergences(
        self,
        ctx: SearchContext,
        model: MultiTaskModel,
        peels: Mapping[str, MultiTaskModel],
        block: str,
        tasks: Sequence[str],
    ) -> tuple[dict[str, Tensor], dict[tuple[int, int], Tensor]]:
        """Per-channel divergences at ``block`` on the validation inputs of O(block): each
        fine-tuned peel against the joint network, and every pair of peels."""
        joint: dict[str, Tensor] = {}
        pairs: dict[tuple[int, int], Tensor] = {}
        seen = 0
        for inputs in probe_batches(ctx.data, tasks, self.similarity_batches):
            x = _to(inputs, ctx.device)
            z_joint = capture(model, [block], x)[block]
            z = {t: capture(peels[t], [block], x)[block] for t in tasks}
            n = z_joint.shape[0]
            for t in tasks:
                joint[t] = joint.get(t, 0) + n * S.channel_divergence(z[t], z_joint)
            for i in range(len(tasks)):
                for j in range(i + 1, len(tasks)):
                    d = n * S.channel_divergence(z[tasks[i]], z[tasks[j]])
                    pairs[i, j] = pairs.get((i, j), 0) + d
            seen += n
        if seen == 0:
            raise ConfigError(f"tree_search: no validation inputs for the tasks {list(tasks)}")
        return {t: v / seen for t, v in joint.items()}, {k: v / seen for k, v in pairs.items()}

    def choose(
        self, model: MultiTaskModel, measured: dict[str, Any], seed: int
    ) -> tuple[str, list[list[str]], dict[str, Any]]:
        """The most stressed block and its spectral two-way partition of children (Alg. 4-5)."""
        stresses = measured["stress"]
        block = max(stresses, key=lambda b: stresses[b])
        kids = model.child_blocks(block)
        aff = measured["task_affinity"][block]
        children = S.children_affinity(
            np.asarray(aff["matrix"]), aff["tasks"], [model.users(c) for c in kids]
        )
        groups = [[kids[k] for k in g] for g in S.spectral_split(children, seed)]
        return block, groups, {"children": kids, "children_affinity": children.tolist()}

    def choose_randomly(
        self, model: MultiTaskModel, rng: random.Random
    ) -> tuple[str, list[list[str]]]:
        """A uniform splittable block and a uniform split of its children into two groups."""
        splittable = [b for b in model.blocks if len(model.child_blocks(b)) >= 2]
        block = rng.choice(splittable)
        kids = model.child_blocks(block)
        while True:
            labels = [rng.randrange(2) for _ in kids]
            if 0 < sum(labels) < len(kids):
                break
        groups = [[c for c, lab in zip(kids, labels, strict=True) if lab == g] for g in (0, 1)]
        return block, sorted(groups, key=lambda g: kids.index(g[0]))

    def search(self, ctx: SearchContext) -> dict[str, Any]:
        started = time.perf_counter()
        model = ctx.model
        rng = random.Random(self.random_seed)
        steps: list[dict[str, Any]] = [
            {"step": 0, "training": self.train_to_stationarity(ctx, "train/step0")}
        ]
        steps[0].update(blocks=list(model.blocks), paths=_paths(model))
        write_tree_json(ctx.run_dir, steps, self.random_splits)
        for k in range(1, self.n_splits + 1):
            if not any(len(model.child_blocks(b)) >= 2 for b in model.blocks):
                log.info("tree_search: no block left to split after %d splits", k - 1)
                break
            entry: dict[str, Any] = {"step": k}
            if self.random_splits:
                block, groups = self.choose_randomly(model, rng)
            else:
                measured = self.measure(ctx, model, k)
                block, groups, extra = self.choose(model, measured, ctx.seed)
                entry.update(measured, **extra)
            log.info("tree_search step %d: split %s into %s", k, block, groups)
            copies = model.split(block, groups)
            entry["split"] = {"block": block, "groups": groups, "copies": copies}
            entry.update(blocks=list(model.blocks), paths=_paths(model))
            if k < self.n_splits:
                entry["training"] = self.train_to_stationarity(ctx, f"train/step{k}")
            steps.append(entry)
            write_tree_json(ctx.run_dir, steps, self.random_splits)
            write_step_artefacts(ctx.run_dir, entry)
        write_tree_png(ctx.run_dir / "tree.png", model)
        first = next((s for s in steps if s.get("task_affinity")), None)
        affinity = first["task_affinity"][first["split"]["block"]] if first else None
        return {
            "search_s": time.perf_counter() - started,
            "tree": {
                "steps": steps,
                "blocks": list(model.blocks),
                "paths": _paths(model),
                "random": self.random_splits,
            },
            "task_affinity": affinity,
        }


def _paths(model: MultiTaskModel) -> dict[str, list[str]]:
    return {t: list(p) for t, p in model.paths.items()}
