"""Find and load the ``metrics.json`` files of finished runs.

A report reads run folders only: one run folder, a Hydra multirun folder, or any tree of them.
Nothing here imports training code.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"

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
# The metric a task is reported by (seed 000 Table 4.2); every other task uses accuracy.
PRIMARY_METRIC = {"chunk": "f1", "ner": "f1"}


def get(data: Any, *keys: str, default: Any = None) -> Any:
    """``data[k1][k2]...``, or ``default`` when a key is missing or a level is not a mapping."""
    for key in keys:
        if not isinstance(data, Mapping) or key not in data:
            return default
        data = data[key]
    return data


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
    def deviations(self) -> list[str]:
        """How the run departs from the paper's protocol (empty: it does not): ``data.deviations``,
        and a stop by a signal (``interrupted``) with the epochs it reached."""
        deviations = get(self.metrics, "data", "deviations")
        out = [str(d) for d in deviations] if isinstance(deviations, list) else []
        signal = get(self.metrics, "interrupted", "signal")
        if signal:
            trained = get(self.metrics, "epochs", "trained")
            out.append(f"stopped by {signal} after {trained} epoch(s)")
        return out

    def test_metric(self, task: str, metric: str | None = None) -> float | None:
        """The test score of ``task`` as a fraction: ``metric``, else the task's primary metric."""
        scores = get(self.metrics, "test", task)
        if not isinstance(scores, Mapping):
            return None
        name = metric or PRIMARY_METRIC.get(task, "accuracy")
        value = scores.get(name)
        return float(value) if isinstance(value, int | float) else None


def primary_metric(task: str) -> str:
    """The metric ``task`` is reported by: ``f1`` for chunk and ner, ``accuracy`` otherwise."""
    return PRIMARY_METRIC.get(task, "accuracy")


def _relative(run_dir: Path, root: Path) -> str:
    """``run_dir`` relative to ``root``; the folder's own name when it is ``root`` itself."""
    rel = run_dir.relative_to(root)
    return rel.as_posix() if rel.parts else run_dir.name


def load(path: Path, root: Path) -> Record | None:
    """Load one ``metrics.json``; ``None`` (with a warning naming the file) when unreadable."""
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        log.warning("skipping %s: not a readable JSON file (%s)", path, err)
        return None
    if not isinstance(metrics, dict):
        log.warning("skipping %s: expected a JSON object, found %s", path, type(metrics).__name__)
        return None
    return Record(path=path, rel=_relative(path.parent, root), metrics=metrics)


def collect(root: Path | str) -> list[Record]:
    """Every ``metrics.json`` under ``root`` (recursively), loaded and sorted by folder.

    Malformed files are skipped with a warning; an empty list means nothing was found.
    """
    root = Path(root)
    if root.is_file():
        root = root.parent
    paths = sorted(root.rglob(METRICS_FILE)) if root.is_dir() else []
    return [r for r in (load(p, root) for p in paths if p.is_file()) if r is not None]
