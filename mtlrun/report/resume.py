"""Runs superseded by a run that resumed them.

A run stopped early (``interrupted``) is finished by a later run with ``trainer.resume=true``,
which records where it came from: ``run.resumed_from_dir`` (the older run folder) or, in runs
written before that entry, ``run.resumed_from`` (``<older run folder>/checkpoints/last.pt``).
The later run holds every epoch of both, so the older folder is left out of the report; in a
chain (A resumed by B, B by C) only C is kept. When several runs resumed the same run (two
resumes started at once, before mtlrun claimed the run it resumes), they repeat one run's
epochs: only the one that got furthest is kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path, PurePath, PurePosixPath

from mtlrun.report.record import Record, get


def resumed_from(record: Record) -> PurePath | None:
    """The run folder ``record`` resumed from, as recorded (``None``: it did not resume).

    ``run.resumed_from_dir``, else ``run.resumed_from`` less its ``checkpoints/...`` part (a
    ``.pt`` file without one: its folder).
    """
    folder = get(record.metrics, "run", "resumed_from_dir")
    if isinstance(folder, str) and folder:
        return PurePath(folder)
    checkpoint = get(record.metrics, "run", "resumed_from")
    if not isinstance(checkpoint, str) or not checkpoint:
        return None
    path = PurePath(checkpoint)
    if "checkpoints" in path.parts:
        cut = len(path.parts) - 1 - path.parts[::-1].index("checkpoints")
        return PurePath(*path.parts[:cut])
    return path.parent if path.suffix == ".pt" else path


def _resolved(path: PurePath) -> Path | None:
    try:
        return Path(path).resolve()
    except (OSError, RuntimeError, ValueError):  # a loop of links, a NUL byte: no match
        return None


def _same_run(a: Record, b: Record) -> bool:
    """Whether ``b`` can have resumed ``a``: a resumed run keeps its data, method and seed."""
    return (a.data_name, a.method, a.seed) == (b.data_name, b.method, b.seed)


def _source(
    record: Record, records: Sequence[Record], folders: dict[Path, Record]
) -> Record | None:
    """The run among ``records`` that ``record`` resumed from.

    Matched by resolved path; failing that (a tree copied from another machine, a path relative
    to another working folder) by the run whose folder, relative to the report root, ends the
    recorded path, with the same data, method and seed; the longest such match if it is unique.
    """
    path = resumed_from(record)
    if path is None:
        return None
    resolved = _resolved(path)
    if resolved is not None and resolved in folders:
        return folders[resolved]
    parts = path.parts
    matches = [
        r
        for r in records
        if _same_run(r, record)
        and (rel := PurePosixPath(r.rel).parts)
        and parts[-len(rel) :] == rel
    ]
    longest = max((len(PurePosixPath(r.rel).parts) for r in matches), default=0)
    best = [r for r in matches if len(PurePosixPath(r.rel).parts) == longest]
    return best[0] if len(best) == 1 else None


def _progress(record: Record) -> tuple[bool, int]:
    """How far a run got: finished (neither interrupted nor diverged), then epochs trained."""
    trained = get(record.metrics, "epochs", "trained")
    finished = not any(k in record.metrics for k in ("interrupted", "diverged"))
    return finished, trained if isinstance(trained, int) and not isinstance(trained, bool) else 0


def superseded(records: Sequence[Record]) -> dict[Path, Record]:
    """``metrics.json`` path of each superseded run -> the last run of its chain of resumes.

    ``records`` must share one report root (their ``rel``). A run never supersedes itself, and
    runs that resume each other in a loop supersede none of the loop. Of several runs that
    resumed one run, the furthest (:func:`_progress`; the first in ``records`` among equals)
    supersedes the others.
    """
    folders: dict[Path, Record] = {}
    for r in records:
        folder = _resolved(r.path.parent)
        if folder is not None:
            folders.setdefault(folder, r)
    resumers: dict[Path, list[Record]] = {}  # resumed folder -> the runs that resumed it
    for r in records:
        source = _source(r, records, folders)
        if source is not None:
            folder = _resolved(source.path.parent) if source.path != r.path else None
        else:  # no result there (killed hard) or outside the tree: its resumers are one run
            recorded = resumed_from(r)
            folder = _resolved(recorded) if recorded is not None else None
        if folder is not None:
            resumers.setdefault(folder, []).append(r)
    successor: dict[Path, Record] = {}
    for folder, runs in resumers.items():
        furthest = max(runs, key=_progress)
        if folder in folders:
            successor[folders[folder].path] = furthest
        for r in runs:
            if r is not furthest:
                successor.setdefault(r.path, furthest)
    out = {}
    for path, last in successor.items():
        seen = {path}
        while last.path in successor and last.path not in seen:
            seen.add(last.path)
            last = successor[last.path]
        if last.path not in seen:
            out[path] = last
    return out
