"""Learning-rate schedules: the options of the ``scheduler`` config group.

Each option is a small factory with flat typed arguments (its YAML under ``conf/scheduler/``);
``build(optimizer, epochs)`` makes the torch scheduler of one training phase, ``epochs`` being
that phase's length. The trainer (:func:`mtlrun.training.loop.fit`) builds one per phase, reads
the learning rate of epoch ``e`` before training it and steps the scheduler once after the
epoch's validation (:class:`Plateau` with the mean validation score). Every phase of a method
(warm-up, mask search, pruning rounds, peels, fine-tuning) starts its schedule afresh at
``optim.lr``, as ``trainer.lr_decay`` did. Only the θ optimiser is scheduled; a method's own
optimisers (π, AdaShare's policy logits) keep their learning rates.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Any, Protocol

from torch.optim import Optimizer
from torch.optim.lr_scheduler import (
    CosineAnnealingLR,
    LinearLR,
    LRScheduler,
    ReduceLROnPlateau,
    SequentialLR,
    StepLR,
)

from mtlrun.errors import ArgumentErrors

log = logging.getLogger(__name__)


class Schedule(Protocol):
    """A ``scheduler`` option: the learning rate of every epoch of a phase.

    ``uses_score``: the scheduler is stepped with the epoch's mean validation score (the
    model-selection score, higher is better) instead of with no argument.
    """

    uses_score: bool

    def build(self, optimizer: Optimizer, epochs: int) -> LRScheduler: ...


class InverseTimeLR(LRScheduler):
    """lr_e = lr / (1 + decay · e) for epoch e = 0, 1, … of the phase (Ma & Hovy 2016:
    η_t = η_0 / (1 + ρt), ρ = 0.05; the former ``trainer.lr_decay``), in closed form, with the
    same float operations as before."""

    def __init__(self, optimizer: Optimizer, decay: float, last_epoch: int = -1) -> None:
        self.decay = decay
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:  # type: ignore[override]
        return [float(base) / (1.0 + self.decay * self.last_epoch) for base in self.base_lrs]

    _get_closed_form_lr = get_lr


class Constant:
    """``optim.lr`` in every epoch (the default)."""

    uses_score = False

    def build(self, optimizer: Optimizer, epochs: int) -> LRScheduler:
        return InverseTimeLR(optimizer, decay=0.0)  # lr / 1.0: the learning rate itself


class InverseTime:
    """lr_e = lr / (1 + decay · e) (Ma & Hovy 2016): ``scheduler=inverse_time``."""

    uses_score = False

    def __init__(self, decay: float = 0.05) -> None:
        errors = ArgumentErrors("scheduler")
        errors.require(decay >= 0, "decay", ">= 0", decay)
        errors.raise_if_any()
        self.decay = decay

    def build(self, optimizer: Optimizer, epochs: int) -> LRScheduler:
        return InverseTimeLR(optimizer, self.decay)


class Step:
    """lr · gamma^⌊e / step_size⌋ (torch's ``StepLR``): ``scheduler=step``."""

    uses_score = False

    def __init__(self, step_size: int = 10, gamma: float = 0.1) -> None:
        errors = ArgumentErrors("scheduler")
        errors.require(step_size >= 1, "step_size", "an integer >= 1", step_size)
        errors.require(0 < gamma <= 1, "gamma", "in (0, 1]", gamma)
        errors.raise_if_any()
        self.step_size, self.gamma = step_size, gamma

    def build(self, optimizer: Optimizer, epochs: int) -> LRScheduler:
        return StepLR(optimizer, self.step_size, self.gamma)


def _linear_warmup(optimizer: Optimizer, epochs: int, start_factor: float) -> LinearLR:
    """start_factor · lr in epoch 0, rising linearly to lr in epoch ``epochs``."""
    return LinearLR(optimizer, start_factor=start_factor, end_factor=1.0, total_iters=epochs)


class Warmup:
    """Linear warm-up from ``start_factor`` · lr over ``epochs`` epochs, then ``optim.lr``
    (torch's ``LinearLR``): ``scheduler=warmup``."""

    uses_score = False

    def __init__(self, epochs: int = 1, start_factor: float = 0.1) -> None:
        errors = ArgumentErrors("scheduler")
        errors.require(epochs >= 1, "epochs", "an integer >= 1", epochs)
        errors.require(0 < start_factor <= 1, "start_factor", "in (0, 1]", start_factor)
        errors.raise_if_any()
        self.epochs, self.start_factor = epochs, start_factor

    def build(self, optimizer: Optimizer, epochs: int) -> LRScheduler:
        return _linear_warmup(optimizer, self.epochs, self.start_factor)


class Cosine:
    """Cosine annealing from lr to ``eta_min`` over the phase's epochs (torch's
    ``CosineAnnealingLR``, T_max = the phase's epochs less the warm-up), after an optional linear
    warm-up of ``warmup_epochs`` from ``warmup_start_factor`` · lr (``SequentialLR``):
    ``scheduler=cosine``."""

    uses_score = False

    def __init__(
        self, eta_min: float = 0.0, warmup_epochs: int = 0, warmup_start_factor: float = 0.1
    ) -> None:
        errors = ArgumentErrors("scheduler")
        errors.require(eta_min >= 0, "eta_min", ">= 0", eta_min)
        errors.require(warmup_epochs >= 0, "warmup_epochs", "an integer >= 0", warmup_epochs)
        ok = 0 < warmup_start_factor <= 1
        errors.require(ok, "warmup_start_factor", "in (0, 1]", warmup_start_factor)
        errors.raise_if_any()
        self.eta_min, self.warmup_epochs = eta_min, warmup_epochs
        self.warmup_start_factor = warmup_start_factor

    def build(self, optimizer: Optimizer, epochs: int) -> LRScheduler:
        if not self.warmup_epochs:
            return CosineAnnealingLR(optimizer, T_max=max(epochs, 1), eta_min=self.eta_min)
        warm = _linear_warmup(optimizer, self.warmup_epochs, self.warmup_start_factor)
        rest = max(epochs - self.warmup_epochs, 1)
        anneal = CosineAnnealingLR(optimizer, T_max=rest, eta_min=self.eta_min)
        return SequentialLR(optimizer, [warm, anneal], milestones=[self.warmup_epochs])


class Plateau:
    """lr · factor once the mean validation score has not improved (by more than
    ``threshold``, relative) for ``patience`` epochs, then ``cooldown`` epochs without checking;
    never below ``min_lr`` (torch's ``ReduceLROnPlateau``, mode max): ``scheduler=plateau``."""

    uses_score = True

    def __init__(
        self,
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        cooldown: int = 0,
        min_lr: float = 0.0,
    ) -> None:
        errors = ArgumentErrors("scheduler")
        errors.require(0 < factor < 1, "factor", "in (0, 1)", factor)
        errors.require(patience >= 0, "patience", "an integer >= 0", patience)
        errors.require(threshold >= 0, "threshold", ">= 0", threshold)
        errors.require(cooldown >= 0, "cooldown", "an integer >= 0", cooldown)
        errors.require(min_lr >= 0, "min_lr", ">= 0", min_lr)
        errors.raise_if_any()
        self.factor, self.patience, self.threshold = factor, patience, threshold
        self.cooldown, self.min_lr = cooldown, min_lr

    def build(self, optimizer: Optimizer, epochs: int) -> LRScheduler:
        return ReduceLROnPlateau(
            optimizer,
            mode="max",
            factor=self.factor,
            patience=self.patience,
            threshold=self.threshold,
            cooldown=self.cooldown,
            min_lr=self.min_lr,
        )


def phase_scheduler(
    schedule: Schedule,
    optimizer: Optimizer,
    epochs: int,
    saved: dict[str, Any] | None = None,
    scores: Sequence[float] = (),
) -> LRScheduler:
    """The lr scheduler of a phase of ``epochs`` epochs, ``len(scores)`` of them finished.

    A phase that starts (no ``scores``) starts at the optimiser's initial lr, so that a phase
    reusing an optimiser starts over, as ``trainer.lr_decay`` did. A resumed phase loads
    ``saved`` (``{"epochs": E, "state": state_dict}``, what :func:`saved_state` gave after its
    last finished epoch), keeping the optimiser's restored lr; when the phase's length changed
    since (a finished run resumed with a raised ``trainer.max_epochs``) or nothing was saved
    (a checkpoint written before schedulers were), the schedule of the current length is
    replayed over the finished epochs (a plateau scheduler over their validation ``scores``).
    """
    groups = optimizer.param_groups
    if saved is not None and saved["epochs"] == epochs:
        restored = [g["lr"] for g in groups]
        scheduler = schedule.build(optimizer, epochs)
        scheduler.load_state_dict(saved["state"])
        for g, lr in zip(groups, restored, strict=True):
            g["lr"] = lr
        return scheduler
    for g in groups:
        g.setdefault("initial_lr", g["lr"])
        g["lr"] = g["initial_lr"]
    scheduler = schedule.build(optimizer, epochs)
    if scores:
        log.info(
            "the lr schedule of %d epochs is replayed over the %d finished", epochs, len(scores)
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "lr_scheduler.step() before optimizer"
            for score in scores:
                step_scheduler(scheduler, schedule, score)
    return scheduler


def saved_state(scheduler: LRScheduler, epochs: int) -> dict[str, Any]:
    """What a checkpoint keeps of a phase's scheduler (see :func:`phase_scheduler`)."""
    return {"epochs": epochs, "state": scheduler.state_dict()}


def step_scheduler(scheduler: LRScheduler, schedule: Schedule, score: float) -> None:
    """One epoch's step, after its validation (with its mean score for ``uses_score``)."""
    with warnings.catch_warnings():
        # fp16 may skip an epoch's first optimiser steps (overflow), which torch reads as
        # "scheduler stepped before the optimiser"; the order here is the intended one.
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)`")
        if schedule.uses_score:
            scheduler.step(score)  # type: ignore[arg-type]  # ReduceLROnPlateau.step(metrics)
        else:
            scheduler.step()
