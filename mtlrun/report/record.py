"""One run as a report sees it: its ``metrics.json`` content, where it lies, and the readings
every table shares (method, data, tasks, test scores, how the run departs from the protocol).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

# Runs written before config.method held the short name recorded the class name.
_METHOD_ALIASES = {
    "SingleTask": "single",
    "SingleSubnet": "single_subnet",
    "HardSharing": "hard",
    "SoftSharing": "soft",
    "Hierarchical": "hierarchical",
    "SparseIMP": "sparse_imp",
    "SparseSTE": "sparse_ste",
    "STEFit": "ste_fit",
}


def get(data: Any, *keys: str, default: Any = None) -> Any:
    """``data[k1][k2]...``, or ``default`` when a key is missing or a level is not a mapping."""
    for key in keys:
        if not isinstance(data, Mapping) or key not in data:
            return default
        data = data[key]
    return data


def primary_metric(records: Iterable[Record], task: str) -> str:
    """The metric ``task`` is reported by in ``records``: that of the first run that has the
    task (:meth:`Record.primary`), ``accuracy`` when none has it."""
    return next((r.primary(task) for r in records if task in r.tasks), "accuracy")


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class Record:
    """One run: its ``metrics.json`` content, where it lies and how to name it in a report."""

    path: Path
    rel: str
    metrics: dict[str, Any] = field(repr=False)

    @property
    def method(self) -> str:
        """``config.method`` as the short config-group name (``hard``, ``sparse_ste``, ...)."""
        name = str(get(self.metrics, "config", "method", default="") or "")
        return _METHOD_ALIASES.get(name, name)

    @property
    def data_name(self) -> str:
        """``data.name``, else ``config.data``, else ``""``."""
        return str(get(self.metrics, "data", "name") or get(self.metrics, "config", "data") or "")

    @property
    def tasks(self) -> list[str]:
        """``data.tasks``, else the tasks found under ``test``, in their recorded order."""
        tasks = get(self.metrics, "data", "tasks")
        if isinstance(tasks, list):
            return [str(t) for t in tasks]
        test = get(self.metrics, "test")
        return list(test) if isinstance(test, Mapping) else []

    @property
    def method_args(self) -> dict[str, Any]:
        """``config.method_args`` (empty when absent)."""
        args = get(self.metrics, "config", "method_args")
        return dict(args) if isinstance(args, Mapping) else {}

    @property
    def overrides(self) -> list[str]:
        """``config.overrides``: the command-line overrides of the run.

        Runs that predate that entry fall back to the ``key=value`` words of ``run.command``.
        """
        overrides = get(self.metrics, "config", "overrides")
        if isinstance(overrides, list):
            return [str(o) for o in overrides]
        command = get(self.metrics, "run", "command")
        return [w for w in command.split()[1:] if "=" in w] if isinstance(command, str) else []

    @property
    def seed(self) -> object:
        """``run.seed`` as recorded (``None`` when absent)."""
        return get(self.metrics, "run", "seed")

    @property
    def stop(self) -> str:
        """How training ended early, ``""`` when it ran its course: ``"diverged at epoch 5 step
        120 (ner loss not finite)"`` (``diverged``), ``"stopped by SIGTERM"`` or ``"stopped
        (<reason>)"`` (``interrupted``)."""
        if self.metrics.get("diverged"):
            epoch, step, task = (
                get(self.metrics, "diverged", k) for k in ("epoch", "step", "task")
            )
            text = "diverged" + (f" at epoch {epoch}" if epoch is not None else "")
            text += f" step {step}" if step is not None else ""
            return text + (f" ({task} loss not finite)" if task is not None else "")
        if not self.metrics.get("interrupted"):
            return ""
        signal = get(self.metrics, "interrupted", "signal")
        reason = get(self.metrics, "interrupted", "reason")
        return f"stopped by {signal}" if signal else f"stopped ({reason})" if reason else "stopped"

    @property
    def deviations(self) -> list[str]:
        """How the run departs from the paper's protocol (empty: it does not): ``data.deviations``,
        each component's departures from its authors' code (``fidelity``, as ``"<kind>: <note>"``),
        a stop by a signal (``interrupted``) with the epochs it reached, and a divergence
        (``diverged``) with the epoch its test scores come from."""
        deviations = get(self.metrics, "data", "deviations")
        out = [str(d) for d in deviations] if isinstance(deviations, list) else []
        departures = self.metrics.get("fidelity")
        if isinstance(departures, dict):
            for kind, notes in departures.items():
                if isinstance(notes, list):
                    out += [f"{kind}: {n}" for n in notes]
        stop = self.stop
        if stop.startswith("stopped"):
            trained = get(self.metrics, "epochs", "trained")
            out.append(f"{stop} after {trained} epoch(s)")
        elif stop:
            best = get(self.metrics, "epochs", "best")
            out.append(f"{stop}; test scores from best epoch {best}")
        return out

    @property
    def unscored(self) -> str | None:
        """Why the run's test scores cannot be reported; ``None`` when they can.

        A run needs a number under ``test``. A run stopped early (``interrupted`` or
        ``diverged``) also needs a whole best epoch (``epochs.best`` ≥ 1) its scores come from,
        and a diverged one finite scores: otherwise they are those of untrained or broken weights.
        """
        test = get(self.metrics, "test")
        numbers = [
            float(v)
            for scores in (test.values() if isinstance(test, Mapping) else ())
            if isinstance(scores, Mapping)
            for v in scores.values()
            if _is_number(v)
        ]
        stop = self.stop
        if not numbers:
            return "no test metrics" + (f": {stop}, before a best epoch" if stop else "")
        best = get(self.metrics, "epochs", "best")
        if stop and not (_is_number(best) and best >= 1):
            return f"{stop} before a best epoch: its test metrics are not from a trained epoch"
        if stop.startswith("diverged") and not all(math.isfinite(v) for v in numbers):
            return f"{stop}: its test metrics are not finite"
        return None

    @property
    def scored(self) -> bool:
        """Whether the run's test scores can be reported (see ``unscored``)."""
        return self.unscored is None

    def primary(self, task: str) -> str:
        """The metric the run reports ``task`` by: metrics.json ``primary`` (the task's metric,
        carried from the data's description of it); for a run written without it, ``f1`` when
        the task's test scores hold one, ``accuracy`` otherwise."""
        name = get(self.metrics, "primary", task)
        if isinstance(name, str) and name:
            return name
        scores = get(self.metrics, "test", task)
        return "f1" if isinstance(scores, Mapping) and "f1" in scores else "accuracy"

    def test_metric(self, task: str, metric: str | None = None) -> float | None:
        """The test score of ``task`` as a fraction: ``metric``, else the task's primary metric."""
        scores = get(self.metrics, "test", task)
        if not isinstance(scores, Mapping):
            return None
        value = scores.get(metric or self.primary(task))
        return float(value) if _is_number(value) else None
