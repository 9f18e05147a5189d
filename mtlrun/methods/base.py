"""The sharing-method protocol: build the multi-task network from a backbone's blocks."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from mtlrun.backbones.base import Backbone
from mtlrun.data.base import Task
from mtlrun.model.paths import MultiTaskModel


class SharingMethod(Protocol):
    """Decides which tasks share which blocks (METHODS §4); every hook the runner may call.

    Methods subclass this Protocol to inherit the no-op defaults of the hooks they do not need,
    so the runner calls every hook unconditionally and a reader sees here what a method may do:

    * ``build``: the multi-task model (blocks and per-task paths) on a backbone;
    * ``search``: phases before the main training (warm-up, mask / policy / tree search) run
      through the :class:`SearchContext`; returns what the run records (``search_s``, masks,
      policy, tree, ...) or None when the method searches nothing;
    * ``after_search``: the model the main phase trains, given the searched one (AdaShare: a
      fresh network with the chosen policy fixed); ``rebuild``: the same structure on a freshly
      built model from a saved ``search`` result (resuming from a main-phase checkpoint);
    * ``main_epochs``: epochs of the main phase, given ``trainer.max_epochs``;
    * ``update``: ``"joint"`` (one update from all tasks per step) or ``"per_task"``;
    * ``standalone``: an experiment that trains no multi-task network (returns its metrics), or
      None to train as usual;
    * ``deviations``: every way the method, with its options, departs from its authors' code
      (metrics.json ``fidelity.method``; README *Fidelity*);
    * ``search_free_keys``: the config keys (dotted) its search phases never read, so that runs
      differing only in them reuse one search from ``trainer.search_cache``; None (the
      default): the method's search is never shared.
    """

    name: str
    update: str = "joint"
    searches: bool = False  # True: has a search phase (its search parameters need not resume)
    deviations: Sequence[str] = ()

    def build(self, backbone: Backbone, tasks: Sequence[Task]) -> MultiTaskModel: ...

    def search(self, ctx: SearchContext) -> dict[str, Any] | None:
        return None

    def after_search(self, model: MultiTaskModel, search: dict[str, Any]) -> MultiTaskModel:
        return model

    def rebuild(self, model: MultiTaskModel, search: dict[str, Any]) -> MultiTaskModel:
        return model

    def main_epochs(self, trainer_epochs: int) -> int:
        return trainer_epochs

    def search_free_keys(self) -> tuple[str, ...] | None:
        return None

    def standalone(self, run_dir: Path) -> dict[str, Any] | None:
        return None


@dataclass
class PolicyStep:
    """Alternating weight and search-parameter updates (AdaShare's train.py).

    ``alternate="pass"`` (the authors' default: ``weight_iter_alternate`` = len(train1_loader),
    ``alpha_iter_alternate`` = len(train2_loader)): every epoch is one pass of weight updates over
    the phase's data, then one pass of policy updates over ``data`` (a split of the training set
    kept apart for this). ``alternate="step"``: one policy mini-batch after every weight update.
    For each policy mini-batch the trainer calls ``before()``, computes the task losses with the
    current model and calls ``step(losses)``, which adds its own terms, back-propagates and steps
    the search parameters' optimiser (the weights are not stepped). ``step`` returns entries for
    history.csv (averaged over the epoch)."""

    data: Any  # MultiTaskData (methods import no data code beyond the protocol)
    step: Callable[[dict[str, torch.Tensor]], dict[str, float]]
    alternate: str = "pass"  # "pass" | "step"
    before: Callable[[], None] | None = None


def head_name(task: str) -> str:
    return f"head:{task}"


class SearchContext(Protocol):
    """What a method's search phase may use (given by the runner; methods import no training code).

    ``fit`` trains ``model`` (default: the run's model; e.g. a peeled sub-network) for some
    epochs as a named phase (best-on-valid weights restored, rows appended to history.csv,
    the phase checkpointed so a stopped search resumes) and returns the best mean validation
    score. ``on_epoch_start(e)`` runs before each epoch e of the phase (a temperature or
    curriculum schedule); ``policy`` alternates weight and search-parameter updates; ``data``
    trains on a subset of the training set (validation always uses the whole valid split);
    ``restore_best=False`` keeps the phase's last weights instead of its best epoch's;
    ``select_from`` is the first epoch (1-based) that may count as the best one;
    ``early_stop=False`` runs every epoch whatever ``trainer.patience`` says;
    ``make_optimizer`` replaces the run's θ optimiser for this phase.
    ``evaluate`` scores a split; ``make_optimizer`` builds the run's θ optimiser; ``data`` is
    the run's data set; ``seed`` the run's seed.
    """

    model: MultiTaskModel
    tasks: Sequence[Task]
    device: torch.device
    run_dir: Path
    data: Any
    seed: int
    history: list[dict[str, Any]]  # history.csv rows so far (ctx.history[-1]: the last epoch)

    def fit(
        self,
        name: str,
        epochs: int,
        tasks: Sequence[Task] | None = None,
        extra_optimizers: Sequence[torch.optim.Optimizer] = (),
        after_step: Callable[[], None] | None = None,
        update: str = "joint",
        model: MultiTaskModel | None = None,
        on_epoch_start: Callable[[int], None] | None = None,
        policy: PolicyStep | None = None,
        data: Any = None,
        restore_best: bool = True,
        select_from: int = 1,
        make_optimizer: Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]
        | None = None,
        early_stop: bool = True,
    ) -> float: ...

    def evaluate(
        self, split: str, model: MultiTaskModel | None = None
    ) -> dict[str, dict[str, float]]: ...

    def make_optimizer(self, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer: ...


def shared_trunk(
    backbone: Backbone, tasks: Sequence[Task]
) -> tuple[dict[str, torch.nn.Module], dict[str, list[str]]]:
    """Blocks and paths of hard sharing: one copy of every trunk block, one head per task."""
    trunk = list(backbone.block_names)
    blocks: dict[str, torch.nn.Module] = {b: backbone.make_block(b) for b in trunk}
    for task in tasks:
        blocks[head_name(task.name)] = backbone.make_head(task)
    return blocks, {t.name: [*trunk, head_name(t.name)] for t in tasks}


def private_copies(
    backbone: Backbone, tasks: Sequence[Task]
) -> tuple[dict[str, torch.nn.Module], dict[str, list[str]]]:
    """Blocks and paths of single-task learning: block ``<name>:<task>`` for every task."""
    blocks: dict[str, torch.nn.Module] = {}
    paths: dict[str, list[str]] = {}
    for task in tasks:
        own = [f"{b}:{task.name}" for b in backbone.block_names]
        for name, b in zip(own, backbone.block_names, strict=True):
            blocks[name] = backbone.make_block(b)
        blocks[head_name(task.name)] = backbone.make_head(task)
        paths[task.name] = [*own, head_name(task.name)]
    return blocks, paths
