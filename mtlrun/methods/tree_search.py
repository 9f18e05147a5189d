"""Greedy minimum-stress tree search (seed 001 §5, Algorithms 2-5): ``method=tree_search``.

Start from hard sharing (a tree whose root chain is the whole trunk) trained with the run's
balancer (the thesis: hybrid, Algorithm 1) towards Pareto stationarity; then ``n_splits`` times:
peel every task and fine-tune the peels (``peel_epochs``: the authors' ``split_tuning`` 3,
Table 1(a)'s 10), measure each splittable block's stress (Alg. 2) and task affinity (Alg. 3)
from the importance-weighted JS divergence of BN-normalised activations (eq. 5.1-5.8,
:mod:`mtlrun.methods.stress`, :mod:`mtlrun.methods.tree_measure`), split the most stressed
block into two groups of children by spectral clustering of the children affinity (Alg. 4-5),
and retrain. BN scales carry the network-slimming penalty (eq. 5.6; the authors' smooth-L1
form, λ = ``l1`` 0.001 on the joint network as their ``configs/trinist/averaging.yaml``,
``peel_l1`` 0.0045 on the peels as ``split_tuning``), since the importances (eq. 5.7) are read
from them. ``random_splits``: the same number of splits at random blocks into random groups
(the thesis's Table 1 baselines). ``deviations`` lists what still departs from the authors'
code (:func:`tree_deviations`).

The main phase (``trainer.max_epochs``) fine-tunes the final tree from the searched weights
(the search's last split is not retrained inside the search: the main phase is that training).
"""

from __future__ import annotations

import importlib.util
import logging
import random
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
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
from mtlrun.methods.tree_measure import block_divergences, capture, last_bn, probe_batches
from mtlrun.model.paths import MultiTaskModel

log = logging.getLogger(__name__)

BACKBONES = {"lenet_bn": LeNetBN, "resnet": ResNet}  # blocks that end in BatchNorm
L1_FORMS = ("smooth_l1", "l1")
PROBE_SPLITS = ("train", "valid")
__all__ = ["SlimmedTree", "TreeSearch", "capture", "last_bn"]


class SlimmedTree(MultiTaskModel):
    """A tree network whose loss adds the network-slimming penalty on all BN scales Γ.

    ``form="smooth_l1"`` (the authors' ``utils/regularizers.py`` ``slimming_loss``):
    λ · Σ_{BN} mean_k smooth_l1(γ_k) (Huber with β = 1: ½γ² for |γ| < 1, |γ| − ½ otherwise);
    ``form="l1"`` (seed 001 eq. 5.6): λ · Σ_{γ ∈ Γ} ‖γ‖₁.
    """

    def __init__(
        self,
        blocks: Mapping[str, nn.Module],
        paths: Mapping[str, Sequence[str]],
        l1: float = 0.0,
        form: str = "smooth_l1",
    ) -> None:
        super().__init__(blocks, paths)
        self.l1, self.form = float(l1), form

    def regularizer(self) -> Tensor | None:
        scales = [m.weight for m in self.modules() if isinstance(m, _BatchNorm) and m.affine]
        if self.l1 <= 0 or not scales:
            return None
        if self.form == "smooth_l1":
            terms = [F.smooth_l1_loss(g, torch.zeros_like(g)) for g in scales]
        else:
            terms = [g.abs().sum() for g in scales]
        return self.l1 * torch.stack(terms).sum()

    def peel(self, task: str, l1: float | None = None) -> SlimmedTree:
        """peel(F, t) carrying the penalty (``l1``: its own λ, e.g. the peels' 0.0045)."""
        p = super().peel(task)
        return SlimmedTree(dict(p.blocks), p.paths, self.l1 if l1 is None else l1, self.form)


class TreeSearch(SharingMethod):
    """Greedy minimum-stress tree search (``method=tree_search``; seed 001 Algorithm 5)."""

    searches = True

    def __init__(
        self,
        n_splits: int = 2,
        peel_epochs: int = 3,
        l1: float = 0.001,
        peel_l1: float = 0.0045,
        l1_form: str = "smooth_l1",
        max_stationary_epochs: int = 10,
        stationary_share: float = 0.5,
        similarity_batches: int | None = None,
        probe_split: str = "train",
        positions: str = "random",
        importance: str = "sum",
        random_splits: bool = False,
        random_seed: int = 0,
        name: str = "tree_search",
    ) -> None:
        errors = ArgumentErrors("method")
        errors.require(n_splits >= 1, "n_splits", "an integer >= 1", n_splits)
        errors.require(peel_epochs >= 1, "peel_epochs", "an integer >= 1", peel_epochs)
        errors.require(l1 >= 0, "l1", ">= 0", l1)
        errors.require(peel_l1 >= 0, "peel_l1", ">= 0", peel_l1)
        errors.choice("l1_form", l1_form, L1_FORMS)
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
            similarity_batches is None or similarity_batches >= 1,
            "similarity_batches",
            "an integer >= 1 or null (every batch)",
            similarity_batches,
        )
        errors.choice("probe_split", probe_split, PROBE_SPLITS)
        errors.choice("positions", positions, S.POSITIONS)
        errors.choice("importance", importance, S.IMPORTANCE)
        if not random_splits and importlib.util.find_spec("sklearn") is None:
            errors.add(
                "method=tree_search groups tasks by scikit-learn's spectral clustering, which is "
                "not installed: pip install 'mtlrun[tree]' (method.random_splits=true needs none)"
            )
        errors.raise_if_any()
        self.name, self.n_splits, self.peel_epochs = name, n_splits, peel_epochs
        self.l1, self.peel_l1, self.l1_form = l1, peel_l1, l1_form
        self.max_stationary_epochs, self.stationary_share = max_stationary_epochs, stationary_share
        self.similarity_batches, self.probe_split = similarity_batches, probe_split
        self.positions, self.importance = positions, importance
        self.random_splits, self.random_seed = random_splits, random_seed
        self.deviations = tree_deviations(self)

    # ------------------------------------------------------------------ structure

    def build(self, backbone: Backbone, tasks: Sequence[Task]) -> SlimmedTree:
        if not isinstance(backbone, tuple(BACKBONES.values())):
            raise ConfigError(
                f"`backbone` should be one of {', '.join(BACKBONES)} for method=tree_search (its "
                "channel similarity reads the BatchNorm that ends each block, seed 001 §5.2). "
                f"Found a {type(backbone).__name__} backbone."
            )
        return SlimmedTree(*shared_trunk(backbone, tasks), l1=self.l1, form=self.l1_form)

    def rebuild(self, model: MultiTaskModel, search: dict[str, Any]) -> MultiTaskModel:
        """Re-apply the recorded splits, in order, to a freshly built model."""
        for step in search["tree"]["steps"]:
            if step.get("split"):
                model.split(step["split"]["block"], step["split"]["groups"])
        return model

    # ------------------------------------------------------------------ search

    def train_to_stationarity(self, ctx: SearchContext, name: str) -> dict[str, Any]:
        """Epochs of the run's balancer until the epoch's KKT share ``kkt/stationary`` reaches
        ``stationary_share`` (at most ``max_stationary_epochs``); one phase per epoch, one
        optimiser (and its momentum) across them, as one uninterrupted training would have."""
        optimizer = ctx.make_optimizer(ctx.model.weight_parameters())
        share = None
        for e in range(1, self.max_stationary_epochs + 1):
            ctx.fit(f"{name}/e{e}", 1, make_optimizer=lambda _params: optimizer)
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
        """Stress (Alg. 2) and task affinity (Alg. 3) of every splittable block: fine-tune
        peel(F, t) of every task t (``split_tuning``: ``peel_epochs`` epochs on t alone with the
        slimming penalty ``peel_l1``, last weights kept), then compare Z̃ on the probe images."""
        splittable = [b for b in model.blocks if len(model.child_blocks(b)) >= 2]
        users = [t for t in model.tasks if any(t in model.users(b) for b in splittable)]
        by_name = {t.name: t for t in ctx.tasks}
        peels: dict[str, MultiTaskModel] = {}
        assert isinstance(model, SlimmedTree)
        for t in users:  # peel(F, t) is the same for every block of t: fine-tune it once
            peels[t] = model.peel(t, l1=self.peel_l1)
            ctx.fit(f"peel/step{step}/{t}", self.peel_epochs, tasks=[by_name[t]],
                    model=peels[t], restore_best=False)  # fmt: skip
        probes = {}
        for t in model.tasks:
            probes[t] = probe_batches(ctx.data, t, self.similarity_batches, self.probe_split)
            if not probes[t]:
                raise ConfigError(
                    f"tree_search: no {self.probe_split} images of task {t!r} to compare "
                    "the networks on (`method.probe_split`)"
                )
        generator = torch.Generator().manual_seed(ctx.seed * 1_000 + step)
        inner, pairs = block_divergences(
            model, peels, splittable, probes, self.positions, generator, ctx.device
        )
        return self.score(model, peels, inner, pairs)

    def score(
        self,
        model: MultiTaskModel,
        peels: Mapping[str, MultiTaskModel],
        inner: Mapping[str, Mapping[str, Tensor]],
        pairs: Mapping[str, Mapping[tuple[str, str], Tensor]],
    ) -> dict[str, Any]:
        """Compatibilities C (eq. 5.8) from the per-channel divergences of
        :func:`~mtlrun.methods.tree_measure.block_divergences`: per block, C of every peel
        against the joint network and the stress S_i = Σ_t C^t (Alg. 2, ``inter_stress``), and
        the task affinity A^i of the peels' pairs (Alg. 3)."""
        stresses: dict[str, float] = {}
        against_joint: dict[str, dict[str, float]] = {}
        affinity: dict[str, dict[str, Any]] = {}
        for b in inner:
            tasks = model.users(b)
            gamma = {t: last_bn(peels[t].blocks[b]).weight for t in tasks}
            own = last_bn(model.blocks[b]).weight
            against_joint[b] = {
                t: S.compatibility(inner[b][t], S.pair_weights(gamma[t], own, self.importance))
                for t in tasks
            }
            stresses[b] = S.stress(against_joint[b])
            matrix = np.zeros((len(tasks), len(tasks)))
            for (t1, t2), div in pairs[b].items():
                w = S.pair_weights(gamma[t1], gamma[t2], self.importance)
                i, j = tasks.index(t1), tasks.index(t2)
                matrix[i, j] = matrix[j, i] = S.compatibility(div, w)
            affinity[b] = {"tasks": tasks, "matrix": matrix.tolist()}
        return {"stress": stresses, "compatibility": against_joint, "task_affinity": affinity}

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


def tree_deviations(m: TreeSearch) -> list[str]:
    """Every way ``method=tree_search`` with ``m``'s options departs from the authors' code
    (hav4ik/Hydra ``run.py``, ``unzipping.py``, ``measures/``, ``utils/``)."""
    out = [
        "the joint network is trained by the run's balancer until the epoch's KKT share reaches "
        f"method.stationary_share (at most {m.max_stationary_epochs} epochs; Alg. 5's 'train to "
        "Pareto stationarity'); the authors' run.py trains a fixed number of epochs",
        "after each split the tree is retrained the same way (the main phase after the last "
        "split); the authors' unzip fine-tunes 1 epoch with the Naive trainer, no slimming",
        "children affinity of Alg. 4 with c1 != c2 only (diagonal 1); the authors' "
        "_spectral_solver also fills the diagonal for children serving several tasks (the same "
        "for two children)",
        "spectral clustering's k-means seeded by the run's seed (the authors' is unseeded)",
    ]
    if m.n_splits != 1:
        out.append(f"method.n_splits={m.n_splits} (Alg. 5, Fig. 8); the authors' run.py unzips "
                   "once (times=1)")  # fmt: skip
    if m.peel_epochs != 3:
        out.append(f"method.peel_epochs={m.peel_epochs} (Table 1(a)'s caption says 10); "
                   "split_tuning's default is 3")  # fmt: skip
    if m.probe_split == "train":
        out.append("stress and affinity read the training images without augmentation (the "
                   "authors' training loaders apply their RandomAffine)")  # fmt: skip
    else:
        out.append("stress and affinity read the validation images (method.probe_split=valid; "
                   "the authors' unzip reads the training loaders)")  # fmt: skip
    if m.similarity_batches is not None:
        out.append(f"stress and affinity read the first {m.similarity_batches} batches of 256 "
                   "images per task (the authors': every batch)")  # fmt: skip
    if m.positions != "random":
        out.append("method.positions=mean: JS divergence averaged over all positions (the "
                   "authors' feature_similarity draws one random position per batch)")  # fmt: skip
    if m.importance != "sum":
        out.append("method.importance=mean: channel weights (I1 + I2)/2, half the authors' "
                   "inter_stress scale (I1 + I2)")  # fmt: skip
    if m.l1_form != "smooth_l1":
        out.append("method.l1_form=l1: slimming penalty λ·Σ‖γ‖₁ (eq. 5.6); the authors' "
                   "slimming_loss is λ·Σ smooth_l1_loss(γ, 0)")  # fmt: skip
    if m.l1 != 0.001:
        out.append(f"method.l1={m.l1} on the joint network (the authors' averaging.yaml: "
                   "slimming 0.001)")  # fmt: skip
    if m.peel_l1 != 0.0045:
        out.append(f"method.peel_l1={m.peel_l1} (the authors' split_tuning: slimming=0.0045)")
    if m.random_splits:
        out.append("random trees: a uniform splittable block and a uniform two-way partition "
                   "(the authors' random solver partitions the most stressed block; the thesis "
                   "does not say how its random trees were drawn)")  # fmt: skip
    return out
