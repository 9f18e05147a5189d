"""The runner's side of a method's search phase (see ``mtlrun.methods.base.SearchContext``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from mtlrun.balancers.base import Balancer
from mtlrun.data.base import MultiTaskData, Task
from mtlrun.model.paths import MultiTaskModel
from mtlrun.training.evaluate import evaluate
from mtlrun.training.loop import FitState, Phase, TrainSettings, fit
from mtlrun.training.outputs import write_history


class RunContext:
    """Trains phases of one run into one history.csv (a ``phase`` column tells them apart)."""

    def __init__(
        self,
        model: MultiTaskModel,
        data: MultiTaskData,
        tasks: Sequence[Task],
        balancer: Balancer,
        settings: TrainSettings,
        device: torch.device,
        run_dir: Path,
        make_optimizer: Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer],
    ) -> None:
        self.model, self.data, self.tasks, self.balancer = model, data, list(tasks), balancer
        self.settings, self.device, self.run_dir = settings, device, run_dir
        self.make_optimizer = make_optimizer
        self.history: list[dict[str, Any]] = []

    def _write(self, rows: list[dict[str, Any]]) -> None:
        write_history(self.run_dir / "history.csv", self.history + rows)

    def fit(
        self,
        name: str,
        epochs: int,
        tasks: Sequence[Task] | None = None,
        extra_optimizers: Sequence[torch.optim.Optimizer] = (),
        after_step: Callable[[], None] | None = None,
        update: str = "joint",
    ) -> float:
        settings = dataclasses.replace(
            self.settings, max_epochs=epochs, update=update, max_minutes=None
        )
        optimizer = self.make_optimizer(self.model.weight_parameters())
        phase = Phase(
            name=name, tasks=tasks, extra_optimizers=extra_optimizers, after_step=after_step
        )
        state = fit(
            self.model,
            self.data,
            self.tasks,
            self.balancer,
            optimizer,
            settings,
            self.device,
            self.run_dir / "checkpoints" / "search",
            phase=phase,
            on_epoch=lambda s: self._write(s.history),
        )
        self.finish_phase(state)
        return state.best_score

    def finish_phase(self, state: FitState) -> None:
        """Restore the phase's best weights and keep its rows for history.csv."""
        if state.best_model is not None:
            self.model.load_state_dict(state.best_model, strict=False)
        self.history.extend(state.history)
        self._write([])

    def evaluate(self, split: str) -> dict[str, dict[str, float]]:
        return evaluate(
            self.model, self.data, split, self.tasks, self.settings.eval_batch_size, self.device
        ).metrics
