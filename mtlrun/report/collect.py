"""Find and load the ``metrics.json`` files of runs, and choose the runs a report shows.

A report reads run folders only: one run folder, a Hydra multirun folder, or any tree of them.
Nothing here imports training code.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from mtlrun.report.record import Record, get, primary_metric
from mtlrun.report.resume import superseded

__all__ = [
    "METRICS_FILE",
    "Found",
    "Record",
    "collect",
    "get",
    "load",
    "primary_metric",
    "scan",
]

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
TRACKER_FOLDERS = {"wandb", "mlruns"}
# metrics.json entries, besides ``test``, that a table reports (standalone experiments).
RESULT_ENTRIES = ("ste_fit",)


def _relative(run_dir: Path, root: Path) -> str:
    """``run_dir`` relative to ``root``; the folder's own name when it is ``root`` itself."""
    rel = run_dir.relative_to(root)
    return rel.as_posix() if rel.parts else run_dir.name


def load(path: Path, root: Path) -> Record | None:
    """Load one ``metrics.json``; ``None`` (with a warning naming the file) when unreadable."""
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
        json.dumps(metrics, ensure_ascii=False).encode("utf-8")  # lone surrogates ("\ud800")
    except (OSError, ValueError, RecursionError) as err:
        log.warning("skipping %s: not a readable JSON file (%s)", path, err)
        return None
    if not isinstance(metrics, dict):
        log.warning("skipping %s: expected a JSON object, found %s", path, type(metrics).__name__)
        return None
    return Record(path=path, rel=_relative(path.parent, root), metrics=metrics)


def _reportable(record: Record) -> bool:
    """Whether ``record`` has something to report; if not, a warning naming its file says why."""
    if record.scored or any(isinstance(record.metrics.get(k), dict) for k in RESULT_ENTRIES):
        return True
    log.warning("skipping %s: %s", record.path, record.unscored)
    return False


@dataclass(frozen=True)
class Found:
    """What ``scan`` found: the runs to report, the ``metrics.json`` files left out (unreadable,
    or without test metrics or another result), and each superseded run's folder (``rel``)
    with the folder of the run that finished it."""

    records: list[Record]
    skipped: list[Path]
    superseded: dict[str, str]


def scan(root: Path | str) -> Found:
    """Every ``metrics.json`` under ``root`` (recursively), sorted by folder, sorted out.

    Unreadable files and runs with nothing to report (an empty ``{}``, a run stopped or
    diverged before a best epoch) are skipped with a warning naming the file; the outputs of
    ``mtlrun-eval`` (``RUN_DIR/eval/...``) are left out silently. A run that a
    later run resumed is superseded by it (``resume``) and left out.
    """
    root = Path(root)
    if root.is_file():
        root = root.parent
    paths = [p for p in sorted(root.rglob(METRICS_FILE)) if p.is_file()] if root.is_dir() else []
    # copies that experiment trackers keep of a run's files (W&B's <run>/wandb/, an MLflow
    # store's artifacts): the run itself is reported from its own folder
    paths = [p for p in paths if not TRACKER_FOLDERS & set(p.relative_to(root).parts[:-1])]
    loaded = [load(p, root) for p in paths]
    # mtlrun-eval's outputs (an ``evaluation`` entry): a second look at a run, never a run
    evaluations = {r.path for r in loaded if r is not None and "evaluation" in r.metrics}
    paths = [p for p in paths if p not in evaluations]
    loaded = [r for r in loaded if r is not None and r.path not in evaluations]
    records = [r for r in loaded if r is not None and _reportable(r)]
    kept = {r.path for r in records}
    replaced = superseded(records)
    return Found(
        records=[r for r in records if r.path not in replaced],
        skipped=[p for p in paths if p not in kept],
        superseded={r.rel: replaced[r.path].rel for r in records if r.path in replaced},
    )


def collect(root: Path | str) -> list[Record]:
    """The runs to report under ``root`` (``scan``): loaded, sorted by folder, without the
    skipped and superseded ones. An empty list means nothing was found."""
    return scan(root).records
