"""Experiment trackers: ``logger=mlflow``, ``logger=wandb``, ``logger=tensorboard``, or several
at once (``logger=[mlflow,tensorboard]``). The user's guide is docs/trackers.md.

A tracker mirrors one run into a tracking tool: the resolved config as hyper-parameters, every
row of history.csv as it is written (global step = the row's 1-based number, the phases of a run
one after another on one axis, as :class:`~mtlrun.training.tblog.TensorBoardLog` logs them), and
at the end the run's :func:`summary` (test metrics, the tested epoch's validation metrics,
parameter counts) and the run folder's files (:data:`ARTEFACTS`). The runs of one sweep share one
name (``default_group``: the sweep folder), so that each tool's own compare view lines the jobs
up: one MLflow experiment, one W&B group; TensorBoard compares the runs under one ``--logdir``.

The trackers: :class:`~mtlrun.training.mlflow_tracker.MLflowTracker`,
:class:`~mtlrun.training.wandb_tracker.WandbTracker` and :class:`TensorBoardTracker` (here, beside
the parts they share). :class:`Trackers` drives them for the runner. A tracker that fails is dropped with a warning:
tracking never stops training, and the run has written its own outputs (metrics.json first)
before a tracker sees the end. The libraries are optional extras; a missing one is a one-line
:class:`~mtlrun.errors.ConfigError` when the tracker is built, before training. A tracker opens
its run on the first row (or at the end), so a run refused before training leaves nothing.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from mtlrun.training.tblog import TensorBoardLog, scalar

log = logging.getLogger(__name__)

# Files of the run folder each tracker keeps as artefacts (those present at the end).
ARTEFACTS = (
    "metrics.json",
    "history.csv",
    "masks.json",  # sparse methods
    "policy.json",  # AdaShare
    "tree.json",  # the tree search
    "*.png",
    ".hydra/config.yaml",
    ".hydra/overrides.yaml",
)
STATUSES = ("finished", "interrupted", "diverged", "failed")
PACKAGES = {"mlflow": "mlflow-skinny (or mlflow)", "wandb": "wandb"}


class Tracker(Protocol):
    """One tracking tool's view of one run."""

    name: str  # the logger option, as warnings name it

    def rows(self, history: Sequence[Mapping[str, Any]]) -> None:
        """Log the rows of ``history`` (the whole history so far) not logged yet."""

    def finish(self, summary: Mapping[str, float], files: Sequence[Path]) -> None:
        """Log the run's summary and its files (paths relative to the run folder)."""

    def close(self, status: str) -> None:
        """End the tracked run with a status of :data:`STATUSES`; closing twice is harmless."""


class Trackers:
    """The run's trackers as one; a tracker that fails is dropped with a warning."""

    def __init__(self, trackers: Sequence[Tracker], run_dir: Path) -> None:
        self.trackers = list(trackers)
        self.run_dir = Path(run_dir)

    def rows(self, history: Sequence[Mapping[str, Any]]) -> None:
        for tracker in list(self.trackers):
            self._guard(tracker, "history", tracker.rows, history)

    def finish(self, metrics: Mapping[str, Any]) -> None:
        """The end of a run whose metrics.json is written: summary, files, status."""
        values, files = summary(metrics), artefacts(self.run_dir)
        for tracker in list(self.trackers):
            self._guard(tracker, "summary and files", tracker.finish, values, files)
        self.close(run_status(metrics))

    def close(self, status: str = "failed") -> None:
        """End every tracker's run (``failed``: the run crashed or was refused)."""
        for tracker in self.trackers:
            try:
                tracker.close(status)
            except Exception as e:  # noqa: BLE001 - the run's own outputs are written
                log.warning("logger=%s could not end its run (%s)", tracker.name, one_line(e))
        self.trackers = []

    def _guard(self, tracker: Tracker, what: str, call: Callable[..., None], *args: Any) -> None:
        try:
            call(*args)
        except Exception as e:  # noqa: BLE001 - tracking must never stop the run
            log.warning(
                "logger=%s could not log the run's %s (%s); the run goes on without it, its "
                "own files in the run folder are not affected",
                tracker.name,
                what,
                one_line(e),
            )
            self.trackers.remove(tracker)
            with contextlib.suppress(Exception):
                tracker.close("failed")


def one_line(e: BaseException) -> str:
    """``Type: first line of the message``."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def run_status(metrics: Mapping[str, Any]) -> str:
    """``diverged``, ``interrupted`` or ``finished``, as metrics.json marks the run."""
    if "diverged" in metrics:
        return "diverged"
    return "interrupted" if "interrupted" in metrics else "finished"


def summary(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The run-level numbers of a metrics.json, by tracker key.

    ``test/<task>/<metric>``, ``test/loss/<task>`` and ``test/score`` (the mean over tasks of
    each task's primary metric, as ``valid/score`` in history.csv); the same for the validation
    metrics of the tested (best) epoch under ``best/valid/``; ``params/used`` and
    ``params/supernet``; ``epochs/trained`` and ``epochs/best``; ``total/train_s`` and
    ``total/search_s``. Entries that are absent or not finite numbers are left out.
    """
    out: dict[str, Any] = {}
    primary = metrics.get("primary") or {}
    losses = metrics.get("loss") or {}
    for split, prefix in (("test", "test"), ("valid", "best/valid")):
        values = metrics.get(split) or {}
        for task, entry in values.items():
            for metric, value in (entry or {}).items():
                out[f"{prefix}/{task}/{metric}"] = value
        for task, value in (losses.get(split) or {}).items():
            out[f"{prefix}/loss/{task}"] = value
        scores = [values[t][m] for t, m in primary.items() if m in (values.get(t) or {})]
        if scores:
            out[f"{prefix}/score"] = sum(scores) / len(scores)
    params, epochs, times = (metrics.get(k) or {} for k in ("params", "epochs", "time"))
    out.update({f"params/{k}": params.get(k) for k in ("used", "supernet")})
    out.update({f"epochs/{k}": epochs.get(k) for k in ("trained", "best")})
    out.update({f"total/{k}": times.get(k) for k in ("train_s", "search_s")})
    return {k: number for k, v in out.items() if (number := scalar(v)) is not None}


def artefacts(run_dir: Path) -> list[Path]:
    """The files of :data:`ARTEFACTS` present in ``run_dir``, relative to it, in that order."""
    found: list[Path] = []
    for pattern in ARTEFACTS:
        for path in sorted(run_dir.glob(pattern)):
            relative = path.relative_to(run_dir)
            if path.is_file() and relative not in found:
                found.append(relative)
    return found


def flat_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, bool | int | float | str]:
    """A nested config as ``{"dotted.key": value}``: numbers, bools and strings as they are,
    anything else (null, lists, empty dicts) as its JSON text."""
    out: dict[str, bool | int | float | str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flat_config(value, name + "."))
        elif isinstance(value, (bool, int, float, str)):
            out[name] = value
        else:
            out[name] = json.dumps(value, default=str)
    return out


def install_hint(option: str) -> str:
    return f"`logger={option}` needs the {PACKAGES[option]} package: pip install 'mtlrun[{option}]'"


# ---------------------------------------------------------------------------- TensorBoard


class TensorBoardTracker:
    """``logger=tensorboard`` (``trainer.tensorboard=true`` is an alias): history.csv's rows as
    scalars under ``<run>/tensorboard/`` (:class:`~mtlrun.training.tblog.TensorBoardLog`),
    then the :func:`summary` as scalars at the last step and the flattened config with it in
    TensorBoard's HParams tab. ``tensorboard --logdir <sweep folder>`` compares a sweep's runs.
    """

    name = "tensorboard"

    def __init__(self, run_dir: Path, config: Mapping[str, Any], default_group: str) -> None:
        del default_group  # TensorBoard groups runs by folder: one --logdir per sweep
        self.log = TensorBoardLog(run_dir)
        self._config = config

    def rows(self, history: Sequence[Mapping[str, Any]]) -> None:
        self.log.rows(history)

    def finish(self, summary: Mapping[str, float], files: Sequence[Path]) -> None:
        del files  # TensorBoard keeps no files: they stay beside tensorboard/ in the run folder
        from torch.utils.tensorboard.summary import hparams

        writer, step = self.log.writer, self.log.steps.last
        for key, value in summary.items():
            writer.add_scalar(key, value, global_step=step)
        for proto in hparams(flat_config(self._config), dict(summary)):
            writer.file_writer.add_summary(proto, step)
        writer.flush()

    def close(self, status: str) -> None:
        self.log.close()
