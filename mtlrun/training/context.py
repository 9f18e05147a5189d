"""The runner's side of a method's search phase (see ``mtlrun.methods.base.SearchContext``)."""

from __future__ import annotations

import copy
import dataclasses
import logging
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from mtlrun.balancers.base import Balancer
from mtlrun.data.base import MultiTaskData, Task
from mtlrun.errors import ConfigError, StorageError
from mtlrun.methods.base import PolicyStep
from mtlrun.model.paths import MultiTaskModel
from mtlrun.training import checkpoint
from mtlrun.training.evaluate import evaluate
from mtlrun.training.interrupt import STOP
from mtlrun.training.loop import FitState, Phase, TrainSettings, fit, restore
from mtlrun.training.outputs import write_history
from mtlrun.training.search_cache import SearchCache

log = logging.getLogger(__name__)


class SearchStopped(Exception):
    """A search phase ended early (signal, divergence, full disk); ``halt`` says why.

    The phases finished before it are kept in ``checkpoints/search/`` (and the cut phase's last
    whole epoch in ``checkpoints/search/last.pt``), so ``trainer.resume=true`` continues the search.
    """

    def __init__(self, phase: str, halt: dict[str, Any] | None) -> None:
        self.phase, self.halt = phase, halt
        super().__init__(f"search phase {phase} stopped early")


class RunContext:
    """Trains phases of one run into one history.csv (a ``phase`` column tells them apart).

    Every finished phase is saved to ``checkpoints/search/phase_NNN.pt`` (its best weights,
    the optimiser and balancer states and the random state after it), and the phase in progress
    keeps ``checkpoints/search/last.pt`` at its last whole epoch. A run resumed from such a folder
    (``resume_from``) replays the method's search: finished phases are loaded instead of trained,
    the cut one continues from its last epoch, so the search ends as an uninterrupted one would.
    With a ``cache`` (:mod:`mtlrun.training.search_cache`), a phase another run with the same
    search inputs finished is loaded from it the same way, and each phase this run trains is
    added to it.
    """

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
        resume_from: Path | None = None,
        cache: SearchCache | None = None,
    ) -> None:
        self.model, self.data, self.tasks, self.balancer = model, data, list(tasks), balancer
        self.settings, self.device, self.run_dir = settings, device, run_dir
        self.make_optimizer = make_optimizer
        self.history: list[dict[str, Any]] = []
        self.resume_from = resume_from
        self.cache = cache  # finished phases shared with other runs (trainer.search_cache)
        self._index = 0
        # Called with the whole history after every epoch (e.g. TensorBoard's live curves).
        self.on_history: Callable[[list[dict[str, Any]]], None] | None = None

    @property
    def search_dir(self) -> Path:
        return self.run_dir / "checkpoints" / "search"

    def write_history(self, rows: list[dict[str, Any]]) -> None:
        """history.csv = the finished phases' rows + ``rows``; then ``on_history``."""
        write_history(self.run_dir / "history.csv", self.history + rows)
        if self.on_history is not None:
            self.on_history(self.history + rows)

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
        data: MultiTaskData | None = None,
        restore_best: bool = True,
        select_from: int = 1,
        make_optimizer: Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]
        | None = None,
        early_stop: bool = True,
    ) -> float:
        phase = Phase(
            name=name,
            tasks=tasks,
            extra_optimizers=extra_optimizers,
            after_step=after_step,
            on_epoch_start=on_epoch_start,
            policy=policy,
            data=data,
            select_from=select_from,
        )
        factory = make_optimizer or self.make_optimizer
        if model is None:
            return self._fit(phase, epochs, update, None, restore_best, factory, early_stop)
        # Another model (a peel): the run's balancer must come out as it went in (a hybrid
        # must not switch, GradNorm's weights must not move on one peel's losses).
        saved = copy.deepcopy(self.balancer.state_dict())
        try:
            return self._fit(phase, epochs, update, model, restore_best, factory, early_stop)
        finally:
            self.balancer.load_state_dict(saved)

    def _fit(
        self,
        phase: Phase,
        epochs: int,
        update: str,
        model: MultiTaskModel | None,
        restore_best: bool,
        make_optimizer: Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer],
        early_stop: bool = True,
    ) -> float:
        name, extra_optimizers = phase.name, phase.extra_optimizers
        index = self._index
        self._index += 1
        target = model if model is not None else self.model
        optimizer = make_optimizer(target.weight_parameters())
        done = self._finished_phase(index, name)
        if done is None and self.cache is not None:
            done = self.cache.load(name)
            if done is not None:  # this run's own copy, so that a resume of it finds the phase
                self._save_phase(index, name, done)
        if done is not None:
            return self._replay(done, target, optimizer, extra_optimizers, index)
        started = time.perf_counter()
        settings = dataclasses.replace(
            self.settings,
            max_epochs=epochs,
            update=update,
            max_minutes=None,
            patience=self.settings.patience if early_stop else None,
        )
        state = self._cut_phase(index, name, target, optimizer, extra_optimizers)
        state = fit(
            target,
            self.data,
            self.tasks,
            self.balancer,
            optimizer,
            settings,
            self.device,
            self.search_dir,
            state=state,
            extra_state=lambda: {"phase_index": index},
            on_epoch=lambda s: self.write_history(s.history),
            phase=phase,
        )
        if state.halt is not None or STOP.requested:
            self.history.extend(state.history)
            raise SearchStopped(name, state.halt)
        if not restore_best:  # keep the phase's last weights (e.g. a policy still opening)
            state.best_model = None
        self.finish_phase(state, target)
        payload = {
            "name": name,
            "score": state.best_score,
            "history": state.history,
            "model": target.state_dict(),
            "optimizer": optimizer.state_dict(),
            "extra_optimizers": [o.state_dict() for o in extra_optimizers],
            "balancer": self.balancer.state_dict(),
            "rng": checkpoint.rng_state(),
        }
        self._save_phase(index, name, payload)
        if self.cache is not None:
            self.cache.store(name, payload, time.perf_counter() - started)
        return state.best_score

    def _save_phase(self, index: int, name: str, payload: dict[str, Any]) -> None:
        try:
            checkpoint.save(self.search_dir / f"phase_{index:03d}.pt", payload)
        except StorageError as e:
            raise SearchStopped(name, {"storage": str(e)}) from None

    def _finished_phase(self, index: int, name: str) -> dict[str, Any] | None:
        if self.resume_from is None:
            return None
        path = self.resume_from / "checkpoints" / "search" / f"phase_{index:03d}.pt"
        if not path.is_file():
            return None
        payload = checkpoint.load(path)
        if payload.get("name") != name:
            raise ConfigError(
                f"cannot resume the search from {path}: it holds phase {payload.get('name')!r} "
                f"where this run's method has phase {name!r} (was the method changed?)"
            )
        if self.resume_from.resolve() != self.run_dir.resolve():
            checkpoint.save(self.search_dir / path.name, payload)
        return payload

    def _replay(
        self,
        payload: dict[str, Any],
        target: MultiTaskModel,
        optimizer: torch.optim.Optimizer,
        extra_optimizers: Sequence[torch.optim.Optimizer],
        index: int,
    ) -> float:
        target.load_state_dict(payload["model"], strict=False)
        optimizer.load_state_dict(payload["optimizer"])
        for opt, saved in zip(extra_optimizers, payload["extra_optimizers"], strict=True):
            opt.load_state_dict(saved)
        self.balancer.load_state_dict(payload["balancer"])
        checkpoint.set_rng_state(payload["rng"])
        self.history.extend(payload["history"])
        self.write_history([])
        log.info("search phase %d (%s): finished before, loaded", index, payload["name"])
        return float(payload["score"])

    def _cut_phase(
        self,
        index: int,
        name: str,
        target: MultiTaskModel,
        optimizer: torch.optim.Optimizer,
        extra_optimizers: Sequence[torch.optim.Optimizer],
    ) -> FitState | None:
        """The fit state of phase ``index`` when the resumed run stopped inside it."""
        if self.resume_from is None:
            return None
        path = self.resume_from / "checkpoints" / "search" / "last.pt"
        if not path.is_file():
            return None
        payload = checkpoint.load(path)
        if payload.get("phase_index") != index:
            return None
        state, _ = restore(path, target, optimizer, self.balancer, strict=False)
        for opt, saved in zip(extra_optimizers, payload["extra_optimizers"], strict=True):
            opt.load_state_dict(saved)
        log.info("search phase %d (%s): resuming after epoch %d", index, name, state.epoch)
        self.resume_from = None  # later phases start fresh
        return state

    def discard_search_checkpoints(self) -> None:
        """Remove ``checkpoints/search/`` once the main phase has a checkpoint of its own."""
        shutil.rmtree(self.search_dir, ignore_errors=True)

    def finish_phase(self, state: FitState, model: MultiTaskModel | None = None) -> None:
        """Restore the phase's best weights and keep its rows for history.csv."""
        if state.best_model is not None:
            (model or self.model).load_state_dict(state.best_model, strict=False)
        self.history.extend(state.history)
        self.write_history([])

    def evaluate(
        self, split: str, model: MultiTaskModel | None = None
    ) -> dict[str, dict[str, float]]:
        target = model if model is not None else self.model
        tasks = [t for t in self.tasks if t.name in target.tasks]
        return evaluate(
            target, self.data, split, tasks, self.settings.eval_batch_size, self.device
        ).metrics

    @property
    def seed(self) -> int:
        return self.settings.seed


def has_search_checkpoint(run_dir: Path) -> bool:
    """True when a run folder holds a search that ``trainer.resume`` can continue."""
    search = run_dir / "checkpoints" / "search"
    return (search / "last.pt").is_file() or any(search.glob("phase_*.pt"))
