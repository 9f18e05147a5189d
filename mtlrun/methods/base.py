"""The sharing-method protocol: build the multi-task network from a backbone's blocks."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Protocol

import torch

from mtlrun.backbones.base import Backbone
from mtlrun.data.base import Task
from mtlrun.model.paths import MultiTaskModel


class SharingMethod(Protocol):
    """Decides which tasks share which blocks (METHODS §4)."""

    def build(self, backbone: Backbone, tasks: Sequence[Task]) -> MultiTaskModel: ...


def head_name(task: str) -> str:
    return f"head:{task}"


class SearchContext(Protocol):
    """What a method's search phase may use (given by the runner; methods import no training code).

    ``fit`` trains ``model`` for some epochs as a named phase (best-on-valid weights restored,
    rows appended to history.csv) and returns the best mean validation score; ``evaluate``
    scores a split; ``make_optimizer`` builds the run's θ optimiser (the ``optim`` group).
    """

    model: MultiTaskModel
    tasks: Sequence[Task]
    device: torch.device
    run_dir: Path

    def fit(
        self,
        name: str,
        epochs: int,
        tasks: Sequence[Task] | None = None,
        extra_optimizers: Sequence[torch.optim.Optimizer] = (),
        after_step: Callable[[], None] | None = None,
        update: str = "joint",
    ) -> float: ...

    def evaluate(self, split: str) -> dict[str, dict[str, float]]: ...

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
