"""A run's per-epoch ``history.csv`` (next to its ``metrics.json``) and the balancer it ran with.

The balancer tables (Vu (2019) Figures 3, 4 and 6) need curves, not only final numbers: this
module reads them as plain columns of numbers. Files are read once per process (cached by path,
size and modification time), so a missing file is warned about once.
"""

from __future__ import annotations

import csv
import functools
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtlrun.report.collect import Record, get

log = logging.getLogger(__name__)

HISTORY_FILE = "history.csv"
HYDRA_CONFIG = Path(".hydra") / "config.yaml"

# Runs written before config.balancer held the config-group name recorded the class name.
_BALANCER_ALIASES = {
    "Equal": "equal",
    "Uncertainty": "uncertainty",
    "GradNorm": "gradnorm",
    "MGDA": "mgda",
    "MGDAUB": "mgda_ub",
    "MGDA_UB": "mgda_ub",
    "Hybrid": "hybrid",
}


@dataclass(frozen=True)
class History:
    """The rows of one ``history.csv`` (cells as text), in file order: one row per epoch."""

    path: Path
    rows: tuple[Mapping[str, str], ...]

    def __len__(self) -> int:
        return len(self.rows)

    def column(self, name: str) -> list[float | None]:
        """Column ``name`` as numbers, one per row; ``None`` where a cell is empty or absent."""
        return [_number(row.get(name)) for row in self.rows]

    def has(self, name: str) -> bool:
        """Whether any row holds a number in column ``name``."""
        return any(v is not None for v in self.column(name))

    def total_train_loss(self, tasks: Sequence[str]) -> list[float | None]:
        """Per epoch, the sum of ``train/loss/<task>`` over ``tasks`` (``None`` if one is missing)."""
        if not tasks:
            return [None] * len(self.rows)
        columns = [self.column(f"train/loss/{t}") for t in tasks]
        return [_sum(values) for values in zip(*columns, strict=True)]


def _sum(values: Sequence[float | None]) -> float | None:
    numbers = [v for v in values if v is not None]
    return sum(numbers) if len(numbers) == len(values) else None


def _number(cell: str | None) -> float | None:
    if cell is None or cell == "":
        return None
    try:
        value = float(cell)
    except ValueError:
        return None
    return None if math.isnan(value) else value


def history(record: Record) -> History | None:
    """``history.csv`` of ``record``'s run folder; ``None`` (warned once) when absent or unreadable."""
    path = record.path.parent / HISTORY_FILE
    try:
        stat = path.stat()
    except OSError:
        return _missing(path)
    return _read(path, stat.st_size, stat.st_mtime_ns)


@functools.cache
def _missing(path: Path) -> None:
    log.warning("skipping %s: no %s beside its metrics.json", path.parent, HISTORY_FILE)
    return None


@functools.cache
def _read(path: Path, size: int, mtime_ns: int) -> History | None:
    del size, mtime_ns  # cache key only: a rewritten file is read again
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = tuple(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        log.warning("skipping %s: not a readable CSV file (%s)", path, err)
        return None
    return History(path, rows)


def balancer_name(record: Record) -> str:
    """The balancer's config-group name (``equal``, ``gradnorm``, ``mgda``, ``hybrid``, ...).

    From ``config.balancer`` (class names of older runs mapped to group names), else
    ``balancer.name``, else a ``balancer=`` override; ``equal`` (the default) otherwise.
    """
    name = get(record.metrics, "config", "balancer") or get(record.metrics, "balancer", "name")
    if isinstance(name, str) and name:
        return _BALANCER_ALIASES.get(name, name)
    for override in reversed(record.overrides):
        key, _, value = override.partition("=")
        if key.lstrip("+~") == "balancer" and value:
            return value
    return "equal"


def balancer_setting(record: Record, key: str) -> Any:
    """A balancer option of the run (e.g. ``solver``); ``None`` when it cannot be found.

    Looked up in ``config.balancer_args``, the ``balancer`` entry of metrics.json, the
    ``balancer.<key>=`` override, then the run's ``.hydra/config.yaml``.
    """
    for entry in (("config", "balancer_args"), ("balancer",)):
        value = get(record.metrics, *entry, key)
        if value is not None:
            return value
    for override in reversed(record.overrides):
        name, _, value = override.partition("=")
        if name.lstrip("+~") == f"balancer.{key}":
            return value
    path = record.path.parent / HYDRA_CONFIG
    try:
        stat = path.stat()
    except OSError:
        return None
    return get(_hydra_config(path, stat.st_size, stat.st_mtime_ns), "balancer", key)


@functools.cache
def _hydra_config(path: Path, size: int, mtime_ns: int) -> Any:
    del size, mtime_ns  # cache key only
    import yaml  # a dependency of Hydra's; only needed for runs that lack the entries above

    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
