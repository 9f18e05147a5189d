"""A finished run folder as ``mtlrun-eval`` reads it: its result, its saved config, the weights
of a checkpoint, and a new folder for an evaluation that never touches the run's own files."""

from __future__ import annotations

import datetime
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mtlrun.errors import ConfigError, StorageError
from mtlrun.training import checkpoint
from mtlrun.training.run_dir import read_metrics, resumable_checkpoint, resume_override

log = logging.getLogger(__name__)

CONFIG = Path(".hydra") / "config.yaml"
EVAL_DIR = "eval"  # RUN_DIR/eval/<time>_<what>: the default home of a run's evaluations
CHECKPOINTS = ("best", "last")


@dataclass(frozen=True)
class FinishedRun:
    """A run folder holding a tested result: ``metrics.json`` with a ``test`` entry (finished,
    or diverged after a best epoch), and the resolved config it ran with."""

    run_dir: Path
    metrics: dict[str, Any]

    @property
    def config_path(self) -> Path:
        return self.run_dir / CONFIG


def open_finished(run_dir: Path) -> FinishedRun:
    """The finished run in ``run_dir``; a ConfigError naming the folder says why it is not one."""
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir}: no such run folder")
    if not (run_dir / "metrics.json").is_file():
        busy = resumable_checkpoint(run_dir) is not None
        raise ConfigError(
            f"{run_dir} is not a finished run: it has no metrics.json"
            + (
                f" (it holds a checkpoint: still training, or stopped hard; continue it with "
                f"{resume_override(run_dir)})"
                if busy
                else " (give the folder of one mtlrun run, e.g. outputs/<date>/<time>_...)"
            )
        )
    metrics = read_metrics(run_dir)
    if metrics is None:
        raise ConfigError(f"{run_dir / 'metrics.json'}: not a readable JSON object")
    if "interrupted" in metrics:
        reason = metrics["interrupted"].get("reason", "stopped")
        raise ConfigError(
            f"{run_dir} is not a finished run: it was interrupted ({reason}) and may still be "
            f"continued, which rewrites its checkpoints; finish it first "
            f"({resume_override(run_dir)})"
        )
    if not isinstance(metrics.get("test"), dict):
        raise ConfigError(
            f"{run_dir} holds no tested network: its metrics.json has no `test` entry "
            "(an experiment that trains no network, or a run stopped before its first epoch)"
        )
    if not (run_dir / CONFIG).is_file():
        raise ConfigError(f"{run_dir / CONFIG} does not exist: the run's config is needed")
    return FinishedRun(run_dir, metrics)


@dataclass
class Weights:
    """Model weights from a checkpoint: the file, the epoch they end, and the main phase's
    ``last.pt`` payload (None when absent), which holds the structure a search chose."""

    state: dict[str, torch.Tensor]
    file: Path
    epoch: int | None
    last: dict[str, Any] | None


def load_weights(run: FinishedRun, which: str) -> Weights:
    """The weights of ``which`` checkpoint: ``best`` (the best validation epoch, the weights
    the run tested) or ``last`` (the last whole epoch).

    ``best`` reads ``checkpoints/best.pt``; when it is absent or ends another epoch than
    ``metrics.json``'s ``epochs.best`` (a resumed run that never improved writes no best.pt of
    its own), the best epoch's weights that ``last.pt`` carries.
    """
    if which not in CHECKPOINTS:
        raise ConfigError(f"--checkpoint should be one of {', '.join(CHECKPOINTS)}. Found {which}")
    folder = run.run_dir / "checkpoints"
    last_path, best_path = folder / "last.pt", folder / "best.pt"
    last = checkpoint.load(last_path) if last_path.is_file() else None
    if which == "last":
        if last is None:
            raise ConfigError(f"{last_path} does not exist: no last epoch to evaluate")
        return Weights(last["model"], last_path, int(last["fit"]["epoch"]), last)
    candidates: list[tuple[dict[str, torch.Tensor], Path, int | None]] = []
    if best_path.is_file():
        best = checkpoint.load(best_path)
        candidates.append((best["model"], best_path, best.get("epoch")))
    fit = (last or {}).get("fit") or {}
    if fit.get("best_model") is not None:
        candidates.append((fit["best_model"], last_path, fit.get("best_epoch")))
    if not candidates:
        raise ConfigError(
            f"{best_path} does not exist, nor does a last.pt holding the best epoch: the run "
            "saved no checkpoint of its main phase (e.g. method.finetune_epochs=0)"
        )
    wanted = (run.metrics.get("epochs") or {}).get("best")
    state, file, epoch = next((c for c in candidates if c[2] == wanted), candidates[0])
    if wanted is not None and epoch != wanted:
        log.warning(
            "%s holds epoch %s, but metrics.json names epoch %s the best", file, epoch, wanted
        )
    return Weights(state, file, epoch, last)


def check_out_dir(out: Path) -> None:
    """``--out``: a new or empty folder, so that nothing already there is ever overwritten."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(
            f"--out {out}: exists and is not an empty folder; an evaluation never writes over "
            "files (give a new folder, or leave --out out for RUN_DIR/eval/<time>_...)"
        )


def make_eval_dir(run_dir: Path, out: Path | None, label: str) -> Path:
    """Create the folder an evaluation writes: ``out`` (new or empty), or a new
    ``RUN_DIR/eval/<date>_<time>_<label>`` (``-2``, ``-3``... when taken); never an existing one."""
    try:
        if out is not None:
            check_out_dir(out)
            out.mkdir(parents=True, exist_ok=True)
            check_out_dir(out)  # made meanwhile by someone else: refused all the same
            return out
        stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
        name = f"{stamp}_{re.sub(r'[^A-Za-z0-9._+-]', '_', label)[:100]}"
        (run_dir / EVAL_DIR).mkdir(exist_ok=True)
        for k in range(1, 1000):
            path = run_dir / EVAL_DIR / (name if k == 1 else f"{name}-{k}")
            try:
                path.mkdir()
            except FileExistsError:
                continue
            return path
    except OSError as e:
        where = out if out is not None else run_dir / EVAL_DIR
        raise StorageError(
            f"cannot create {where} ({e.strerror or e}); give a writable folder with --out DIR"
        ) from None
    raise StorageError(f"cannot find a free name for {name} under {run_dir / EVAL_DIR}")
