"""The training loop: steps, per-epoch validation, best-on-valid selection, checkpoints."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import logging
import math
import random
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from mtlrun.balancers.base import Balancer
from mtlrun.balancers.weighting import NonFiniteWeights
from mtlrun.data.base import MultiTaskData, Task
from mtlrun.errors import StorageError
from mtlrun.methods.base import PolicyStep
from mtlrun.model.paths import MultiTaskModel
from mtlrun.training import checkpoint
from mtlrun.training.device import to_device
from mtlrun.training.evaluate import Evaluation, evaluate, task_loss
from mtlrun.training.interrupt import STOP
from mtlrun.training.metrics import mean_primary
from mtlrun.training.precision import MixedPrecision, check_precision
from mtlrun.training.schedule import (
    Constant,
    Schedule,
    phase_scheduler,
    saved_state,
    step_scheduler,
)

log = logging.getLogger(__name__)


@dataclass
class TrainSettings:
    """Flat trainer settings (the ``trainer`` config group)."""

    max_epochs: int
    batch_size: int
    eval_batch_size: int = 256
    seed: int = 0
    grad_clip: float | None = 5.0
    patience: int | None = None
    max_minutes: float | None = None
    steps_per_epoch: int | None = None
    progress: bool = True
    update: str = (
        "joint"  # joint: one update from all tasks; per_task: one update per task, random order
    )
    # the learning rate of each epoch of a phase (the scheduler group; mtlrun.training.schedule)
    scheduler: Schedule = field(default_factory=Constant)
    precision: str = "fp32"  # fp32 | bf16 | fp16: autocast of the training steps (precision.py)


@dataclass
class Phase:
    """What differs between the phases of a run (warm-up, mask search, main training).

    ``tasks``: the tasks trained and validated (default all); ``extra_optimizers`` step after
    the main one (e.g. Adam on π) and are neither clipped nor scheduled; ``after_step`` runs after
    every update (e.g. clamping π to [0, 1]); ``on_epoch_start(e)`` before epoch e of the phase;
    ``policy`` alternates weight updates with search-parameter updates on its own data (a whole
    pass of each per epoch, or one policy step after every weight update: ``policy.alternate``);
    ``data`` is the training data of the phase (validation always uses the run's data);
    ``select_from`` is the first epoch (1-based) that may become the phase's best.
    """

    name: str = "train"
    tasks: Sequence[Task] | None = None
    extra_optimizers: Sequence[torch.optim.Optimizer] = ()
    after_step: Callable[[], None] | None = None
    on_epoch_start: Callable[[int], None] | None = None  # e.g. a temperature schedule
    policy: PolicyStep | None = None  # alternating search-parameter updates (AdaShare)
    data: MultiTaskData | None = None  # train on this subset (default: the run's data)
    select_from: int = 1  # earlier epochs are validated but never kept as the best


@dataclass
class FitState:
    """Everything that a checkpoint restores."""

    epoch: int = 0  # epochs finished
    history: list[dict[str, Any]] = field(default_factory=list)
    best_score: float = float("-inf")
    best_epoch: int = 0
    best_model: dict[str, torch.Tensor] | None = None
    train_s: float = 0.0
    # the lr scheduler after the last epoch: {"epochs": the phase's length, "state": state_dict}
    scheduler: dict[str, Any] | None = None
    scaler: dict[str, Any] | None = None  # fp16's GradScaler state (trainer.precision=fp16)
    # Why training stopped early, when it did ({"diverged": {...}} or {"storage": "..."}).
    # Not saved in checkpoints: a resumed run starts without it.
    halt: dict[str, Any] | None = None


class Diverged(Exception):
    """A task's loss became non-finite at a known epoch and step (or in validation)."""

    def __init__(self, task: str, epoch: int, step: int | None, value: float) -> None:
        where = f"step {step}" if step is not None else "validation"
        self.info = {"task": task, "epoch": epoch, "step": step, "loss": str(value)}
        super().__init__(
            f"training diverged: task {task} had a non-finite loss ({value}) at epoch {epoch}, "
            f"{where}; the learning rate (optim.lr) is the likely cause: lower it, or clip "
            "gradients (trainer.grad_clip)"
        )


def _losses_again(
    model: MultiTaskModel, update: list, device: torch.device, amp: MixedPrecision | None = None
) -> dict[str, torch.Tensor]:
    """The step's mini-batch forwarded again after the update, without gradient and in training
    mode (a balancer's ``after_step``: FAMO, as its authors' and LibMTL's trainers), in the
    step's precision."""
    losses = {}
    autocast = amp.autocast() if amp is not None else contextlib.nullcontext()
    with torch.no_grad(), autocast:
        for inputs, targets in update:
            outputs = model(to_device(inputs, device), tasks=list(targets))
            for task, logits in outputs.items():
                losses[task] = task_loss(logits, to_device(targets[task], device))
    return losses


class BalancerDiverged(Diverged):
    """The balancer's weights became non-finite although every loss was finite."""

    def __init__(self, note: str, epoch: int, step: int) -> None:
        self.info = {"task": None, "epoch": epoch, "step": step, "loss": None}
        Exception.__init__(self, f"training diverged at epoch {epoch}, step {step}: {note}")


class NonFiniteWatch:
    """Records the first step at which each task's loss is non-finite, on the loss's device.

    ``record`` is asynchronous (no host sync); ``check`` reads the record and raises
    :class:`Diverged`. The trainer checks every step on a CPU and every ``every`` steps on
    a GPU, so a GPU run pays one sync per ``every`` steps, not one per step.
    """

    def __init__(self, tasks: Sequence[str], device: torch.device, every: int = 50) -> None:
        self.tasks = list(tasks)
        self.first = torch.full((len(self.tasks),), -1, dtype=torch.long, device=device)
        self.value = torch.zeros(len(self.tasks), device=device)
        self.every = 1 if device.type == "cpu" else every

    def record(self, losses: dict[str, torch.Tensor], step: int) -> None:
        if list(losses) == self.tasks:  # every task: a few kernels for all of them at once
            values = torch.stack([loss.detach().float() for loss in losses.values()])
            bad = ~torch.isfinite(values) & (self.first < 0)
            self.first = torch.where(bad, step, self.first)
            self.value = torch.where(bad, values, self.value)
            return
        for task, loss in losses.items():
            k = self.tasks.index(task)
            bad = ~torch.isfinite(loss.detach()) & (self.first[k] < 0)
            self.first[k] = torch.where(bad, step, self.first[k])
            self.value[k] = torch.where(bad, loss.detach().float(), self.value[k])

    def due(self, step: int) -> bool:
        return step % self.every == 0

    def check(self, epoch: int) -> None:
        first = self.first.tolist()
        bad = [(s, k) for k, s in enumerate(first) if s >= 0]
        if bad:
            step, k = min(bad)
            raise Diverged(self.tasks[k], epoch + 1, step + 1, float(self.value[k]))


def _cpu_copy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


def _show_progress(enabled: bool) -> bool:
    return enabled and sys.stderr.isatty()


def _updates(groups: list, active: set[str], per_task: bool, rng: random.Random) -> list[list]:
    """The step's groups restricted to the active tasks, as one update or one per task."""
    kept = []
    for inputs, targets in groups:
        targets = {t: y for t, y in targets.items() if t in active}
        if targets:
            kept.append((inputs, targets))
    if not per_task:
        return [kept]
    singles = [(inputs, {t: y}) for inputs, targets in kept for t, y in targets.items()]
    rng.shuffle(singles)  # Sun et al. (2020): tasks visited in random order, one update each
    return [[single] for single in singles]


def train_epoch(
    model: MultiTaskModel,
    data: MultiTaskData,
    balancer: Balancer,
    optimizer: torch.optim.Optimizer,
    settings: TrainSettings,
    epoch: int,
    device: torch.device,
    phase: Phase | None = None,
    amp: MixedPrecision | None = None,
) -> dict[str, float]:
    """One epoch of steps; returns mean train loss per task and mean balancer logs.

    ``amp``: the steps' precision (autocast, fp16 loss scaling); default float32.
    """
    phase = phase or Phase()
    amp = amp or MixedPrecision("fp32", device)
    model.train()
    active = {t.name for t in phase.tasks} if phase.tasks else set(model.tasks)
    data = phase.data or data
    n_steps = settings.steps_per_epoch or data.steps_per_epoch(settings.batch_size)
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    logs: dict[str, float] = {}
    n_updates = 0
    bar = tqdm(
        data.train_steps(settings.batch_size, epoch, settings.seed, settings.steps_per_epoch),
        total=n_steps,
        desc=f"{phase.name} epoch {epoch + 1}/{settings.max_epochs}",
        leave=False,
        disable=not _show_progress(settings.progress),
        dynamic_ncols=True,
    )
    params = [p for p in model.weight_parameters() if p.requires_grad]
    balancer_s = 0.0
    order_rng = random.Random(settings.seed * 7919 + epoch)
    watch = NonFiniteWatch(model.tasks, device)
    stepwise = phase.policy is not None and phase.policy.alternate == "step"
    policy_batches = _policy_batches(phase, settings, epoch)
    for step, groups in enumerate(bar):
        for update in _updates(groups, active, settings.update == "per_task", order_rng):
            optimizer.zero_grad(set_to_none=True)
            for extra in phase.extra_optimizers:
                extra.zero_grad(set_to_none=True)
            losses = {}
            model.taps = {} if balancer.uses_taps else None
            with amp.autocast():
                for inputs, targets in update:
                    outputs = model(to_device(inputs, device), tasks=list(targets))
                    for task, logits in outputs.items():
                        losses[task] = task_loss(logits, to_device(targets[task], device))
            watch.record(losses, step)
            if watch.due(step):
                watch.check(epoch)
            reg = model.regularizer()
            if reg is not None:
                amp.scale_one(reg).backward(retain_graph=True)
            started = time.perf_counter()
            try:
                logged = balancer.backward(amp.scale(losses), model)
            except ValueError as e:  # e.g. min_norm on non-finite gradients: say where and why
                watch.check(epoch)
                if amp.overflowed():  # fp16: finite losses, scaled gradients out of range
                    model.taps = None
                    continue
                if isinstance(e, NonFiniteWeights):
                    raise BalancerDiverged(str(e), epoch + 1, step) from None
                raise
            for key, value in logged.items():
                logs[key] = logs.get(key, 0.0) + value
            balancer_s += time.perf_counter() - started
            model.taps = None
            amp.unscale([optimizer, *phase.extra_optimizers])
            if settings.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, settings.grad_clip)
            amp.step(optimizer)
            for extra in phase.extra_optimizers:
                amp.step(extra)
            amp.update()
            if phase.after_step is not None:
                phase.after_step()
            balancer.after_step(functools.partial(_losses_again, model, list(update), device, amp))
            if phase.policy is not None and stepwise:
                policy_logs = _policy_update(model, phase.policy, next(policy_batches), device)
                for key, value in policy_logs.items():
                    logs[key] = logs.get(key, 0.0) + value
            n_updates += 1
            for task, loss in losses.items():
                sums[task] = sums.get(task, torch.zeros((), device=device)) + loss.detach()
                counts[task] = counts.get(task, 0) + 1
            if STOP.requested:
                break
        if STOP.requested:
            break
    watch.check(epoch)
    out = {f"train/loss/{t}": float(s) / counts[t] for t, s in sums.items()}
    out.update({k: v / max(n_updates, 1) for k, v in logs.items()})
    if phase.policy is not None and not stepwise and not STOP.requested:
        out.update(_policy_pass(model, phase.policy, settings, epoch, device))
    out["time/balancer_s"] = balancer_s
    return out


def _policy_batches(phase: Phase, settings: TrainSettings, epoch: int) -> Iterator[list]:
    """The policy split's mini-batches, cycled (it is smaller than the weights' split)."""
    if phase.policy is None:
        return
    data = phase.policy.data
    rounds = 0
    while True:
        yield from data.train_steps(settings.batch_size, epoch * 1000 + rounds, settings.seed + 1)
        rounds += 1


def _policy_pass(
    model: MultiTaskModel,
    policy: PolicyStep,
    settings: TrainSettings,
    epoch: int,
    device: torch.device,
) -> dict[str, float]:
    """One pass of search-parameter steps over the policy split (AdaShare's ``update_alpha``
    iterations, train.py); the mean of each logged entry."""
    sums: dict[str, float] = {}
    n = 0
    for groups in policy.data.train_steps(settings.batch_size, epoch, settings.seed + 1):
        for key, value in _policy_update(model, policy, groups, device).items():
            sums[key] = sums.get(key, 0.0) + value
        n += 1
        if STOP.requested:
            break
    return {k: v / max(n, 1) for k, v in sums.items()}


def _policy_update(
    model: MultiTaskModel, policy: PolicyStep, groups: list, device: torch.device
) -> dict[str, float]:
    """One search-parameter step on a policy mini-batch (the weights are not stepped)."""
    if policy.before is not None:
        policy.before()
    losses: dict[str, torch.Tensor] = {}
    for inputs, targets in groups:
        outputs = model(to_device(inputs, device), tasks=list(targets))
        for task, logits in outputs.items():
            losses[task] = task_loss(logits, to_device(targets[task], device))
    return policy.step(losses)


def fit(
    model: MultiTaskModel,
    data: MultiTaskData,
    tasks: Sequence[Task],
    balancer: Balancer,
    optimizer: torch.optim.Optimizer,
    settings: TrainSettings,
    device: torch.device,
    checkpoint_dir: Path,
    state: FitState | None = None,
    extra_state: Callable[[], dict[str, Any]] | None = None,
    on_epoch: Callable[[FitState], None] | None = None,
    phase: Phase | None = None,
) -> FitState:
    """Train for ``settings.max_epochs`` (continuing from ``state`` when resuming).

    After every epoch: validation, best-on-valid bookkeeping (mean of the tasks' primary
    metrics), a step of the learning-rate scheduler (``settings.scheduler``, built afresh for
    the phase unless ``state`` holds its state), ``checkpoints/last.pt`` and, when improved,
    ``checkpoints/best.pt``. The steps run in ``settings.precision``.
    """
    state = state or FitState()
    phase = phase or Phase()
    tasks = list(phase.tasks or tasks)
    started = time.perf_counter()
    check_precision(settings.precision, device)
    amp = MixedPrecision(settings.precision, device)
    amp.load_state_dict(state.scaler)
    scores = [row["valid/score"] for row in state.history if "valid/score" in row]
    finished = scores[len(scores) - state.epoch :]  # the phase's finished epochs (none: fresh)
    scheduler = phase_scheduler(
        settings.scheduler, optimizer, settings.max_epochs, state.scheduler, finished
    )
    while state.epoch < settings.max_epochs and not STOP.requested:
        epoch = state.epoch
        start = time.perf_counter()
        row: dict[str, Any] = {
            "phase": phase.name,
            "epoch": epoch + 1,
            "lr": optimizer.param_groups[0]["lr"],
        }
        if phase.on_epoch_start is not None:
            phase.on_epoch_start(epoch)
        try:
            row.update(
                train_epoch(model, data, balancer, optimizer, settings, epoch, device, phase, amp)
            )
        except Diverged as e:
            log.error("%s", e)
            state.halt = {"diverged": {**e.info, "phase": phase.name, "note": str(e)}}
            break
        if STOP.requested:
            # The cut epoch is neither validated nor saved: last.pt stays at the last whole epoch.
            log.warning("stopped by %s during epoch %d", STOP.signal, epoch + 1)
            break
        losses = {
            t.name: row[f"train/loss/{t.name}"] for t in tasks if f"train/loss/{t.name}" in row
        }
        row.update(balancer.epoch_end(epoch, losses))
        row.update(model.epoch_log())
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        row["time/train_s"] = time.perf_counter() - start
        state.train_s += row["time/train_s"]
        valid = evaluate(model, data, "valid", tasks, settings.eval_batch_size, device)
        bad = [t for t, v in valid.loss.items() if not math.isfinite(v)]
        if bad:
            diverged = Diverged(bad[0], epoch + 1, None, valid.loss[bad[0]])
            log.error("%s", diverged)
            state.halt = {"diverged": {**diverged.info, "phase": phase.name, "note": str(diverged)}}
            break
        score = mean_primary(valid.metrics, tasks)
        row.update(_flat("valid", valid))
        row["valid/score"] = score
        state.epoch = epoch + 1
        step_scheduler(scheduler, settings.scheduler, score)
        state.scheduler = saved_state(scheduler, settings.max_epochs)
        state.scaler = amp.state_dict()
        eligible = epoch + 1 >= phase.select_from
        improved = eligible and math.isfinite(score) and score > state.best_score
        if improved:
            state.best_score, state.best_epoch = score, epoch + 1
            state.best_model = _cpu_copy(model.state_dict())
        row["time/epoch_s"] = time.perf_counter() - start
        state.history.append(row)
        log.info(_summary(row, tasks, improved))
        try:
            _save(checkpoint_dir, model, optimizer, balancer, state, extra_state, improved, phase)
            if on_epoch is not None:
                on_epoch(state)
        except StorageError as e:
            log.error("%s; the last saved checkpoint is kept", e)
            state.halt = {"storage": str(e)}
            break
        since = max(state.best_epoch, phase.select_from - 1)  # no patience before select_from
        if settings.patience and state.epoch - since >= settings.patience:
            log.info("no better validation score for %d epochs: stopping early", settings.patience)
            break
        if settings.max_minutes and time.perf_counter() - started > 60 * settings.max_minutes:
            log.info(
                "time budget of %.1f min spent after epoch %d: stopping",
                settings.max_minutes,
                state.epoch,
            )
            break
    return state


def _flat(split: str, ev: Evaluation) -> dict[str, float]:
    row = {f"{split}/loss/{t}": v for t, v in ev.loss.items()}
    for t, ms in ev.metrics.items():
        row.update({f"{split}/{t}/{m}": v for m, v in ms.items()})
    return row


def _summary(row: dict[str, Any], tasks: Sequence[Task], improved: bool) -> str:
    scores = " ".join(f"{t.name} {t.metric} {row[f'valid/{t.name}/{t.metric}']:.4f}" for t in tasks)
    return (
        f"epoch {row['epoch']}: valid {scores} | mean {row['valid/score']:.4f}"
        f"{' *' if improved else ''} | {row['time/epoch_s']:.1f}s"
    )


def _save(
    directory: Path,
    model: MultiTaskModel,
    optimizer: torch.optim.Optimizer,
    balancer: Balancer,
    state: FitState,
    extra_state: Callable[[], dict[str, Any]] | None,
    improved: bool,
    phase: Phase,
) -> None:
    payload = {
        "phase": phase.name,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "extra_optimizers": [o.state_dict() for o in phase.extra_optimizers],
        "balancer": balancer.state_dict(),
        "fit": {k: copy.copy(v) for k, v in state.__dict__.items() if k != "halt"},
        "rng": checkpoint.rng_state(),
        **(extra_state() if extra_state else {}),
    }
    checkpoint.save(directory / "last.pt", payload)
    if improved and state.best_model is not None:
        checkpoint.save(
            directory / "best.pt",
            {"model": state.best_model, "epoch": state.best_epoch, "score": state.best_score},
        )


def restore(
    path: Path,
    model: MultiTaskModel,
    optimizer: torch.optim.Optimizer,
    balancer: Balancer,
    strict: bool = True,
) -> tuple[FitState, dict[str, Any]]:
    """Load ``last.pt`` into the objects; returns the fit state and the raw payload."""
    payload = checkpoint.load(path)
    if "masks" in payload:
        model.set_masks(payload["masks"])  # mask buffers must exist before the state loads
    # Not strict for searched models: their search parameters (π) need not be rebuilt to resume.
    model.load_state_dict(payload["model"], strict=strict)
    optimizer.load_state_dict(payload["optimizer"])
    balancer.load_state_dict(payload["balancer"])
    checkpoint.set_rng_state(payload["rng"])
    known = {f.name for f in dataclasses.fields(FitState)}
    return FitState(**{k: v for k, v in payload["fit"].items() if k in known}), payload
