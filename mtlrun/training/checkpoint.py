"""Resumable checkpoints: everything needed to continue a run bit-for-bit on the same device,
which run ``trainer.resume`` continues, and which runs a later run has resumed (superseded)."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtlrun.config.saved import flatten, saved_config, upgrade
from mtlrun.errors import ConfigError, StorageError
from mtlrun.training.run_dir import (
    atomic_write,
    is_finished,
    read_metrics,
    resumable_checkpoint,
    storage_error,
)

log = logging.getLogger(__name__)


def rng_state() -> dict[str, Any]:
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": np.random.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(path: Path, state: dict[str, Any]) -> None:
    """Write atomically: a crash while saving never leaves a truncated last.pt behind.

    The state goes to ``<name>.tmp`` and replaces ``path`` only once complete. A full disk or a
    file-size limit raises :class:`StorageError` ("no space left on <path>") after removing the
    partial temp file; the previous ``path`` is untouched.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise storage_error(e, path.parent) from None

    def write(tmp: Path) -> None:
        with tmp.open("wb") as f:  # a Python file: torch's write errors keep their errno
            torch.save(state, f)

    atomic_write(path, write, errors=(OSError, RuntimeError))  # torch wraps the OSError


def load(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise ConfigError(f"cannot read checkpoint {path}: {e}") from None


# Keys that may differ between an interrupted run and its resumption.
RESUME_FREE = (
    "logger",  # where the run is also logged (MLflow, W&B, TensorBoard)
    "trainer.resume",
    "trainer.resume_dir",
    "trainer.max_epochs",
    "trainer.progress",
    "trainer.device",
    "trainer.patience",
    "trainer.max_minutes",
    "trainer.plots",
    "trainer.save_predictions",
    "trainer.threads",
    "trainer.tensorboard",
    "trainer.search_cache",
)


def config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Keys (dotted) whose values differ between two plain config dicts, resume-free keys aside."""
    a, b = flatten(upgrade(saved)), flatten(upgrade(current))
    keys = sorted(set(a) | set(b))
    return [k for k in keys if a.get(k) != b.get(k) and not k.startswith(RESUME_FREE)]


def describe_differences(saved: dict[str, Any], current: dict[str, Any], keys: list[str]) -> str:
    """``key (saved A, now B)`` for each differing key, at most 8 of them."""
    a, b = flatten(upgrade(saved)), flatten(upgrade(current))
    shown = [f"{k} (saved {a.get(k, '<absent>')}, now {b.get(k, '<absent>')})" for k in keys[:8]]
    return ", ".join(shown) + (f" and {len(keys) - 8} more" if len(keys) > 8 else "")


def find_resumable(search_root: Path, config: dict[str, Any]) -> list[Path]:
    """The unfinished run folders under ``search_root`` saved with the same config, newest first.

    A run is unfinished when it has a checkpoint (:func:`resumable_checkpoint`), no
    ``metrics.json`` or one marked ``interrupted``, and no :func:`successor`; its config is
    read from its
    ``.hydra/config.yaml`` (no checkpoint is loaded here). Unreadable configs are skipped with a
    warning naming them. When nothing matches, raises a ConfigError naming the keys in which the
    nearest candidate differs.
    """
    candidates = []
    for folder in search_root.glob("**/checkpoints"):
        run_dir = folder.parent
        found = resumable_checkpoint(run_dir)
        if found is not None:
            candidates.append((found.stat().st_mtime, run_dir))
    candidates.sort(reverse=True)
    matches: list[Path] = []
    nearest: tuple[int, Path, list[str], dict[str, Any]] | None = None
    for _, run_dir in candidates:
        metrics = read_metrics(run_dir)
        if metrics is not None and "interrupted" not in metrics:
            continue  # finished (or diverged): nothing to continue
        if successor(run_dir) is not None:
            continue  # a later run holds every epoch of it (and is a candidate itself)
        saved = saved_config(run_dir)
        if saved is None:
            if not (run_dir / ".hydra" / "config.yaml").exists():
                log.warning("skipping %s: it has no .hydra/config.yaml", run_dir)
            continue
        diff = config_differences(saved, config)
        if not diff:
            matches.append(run_dir)
        elif nearest is None or len(diff) < nearest[0]:
            nearest = (len(diff), run_dir, diff, saved)
    if matches:
        return matches
    if nearest is None:
        raise ConfigError(
            f"`trainer.resume=true` but there is no unfinished run with a checkpoint under "
            f"{search_root}; give `trainer.resume_dir=RUN_DIR`, or drop trainer.resume."
        )
    _, run_dir, diff, saved = nearest
    raise ConfigError(
        f"`trainer.resume=true` but no unfinished run under {search_root} has this "
        f"configuration; the nearest, {run_dir}, differs in "
        f"{describe_differences(saved, config, diff)}. Give `trainer.resume_dir=RUN_DIR` "
        "to pick one."
    )


# A resumed run's folder names the run that resumed it (README "Resuming").
RESUMED_BY = "resumed_by.json"


def mark_resumed(source: Path, run_dir: Path) -> None:
    """Write ``<source>/resumed_by.json`` naming ``run_dir``, the run that resumes it.

    Written when the resuming run starts; it counts (:func:`successor`) once that run holds a
    checkpoint of its own or a result. A source that cannot be written (read-only) is left
    unmarked, with a warning.
    """
    text = json.dumps({"run_dir": str(run_dir.resolve())}) + "\n"
    try:
        atomic_write(source / RESUMED_BY, lambda tmp: tmp.write_text(text))
    except StorageError as e:
        log.warning("%s is not marked as resumed by %s: %s", source, run_dir, e)


def successor(run_dir: Path) -> Path | None:
    """The run folder that resumed ``run_dir`` and took it over, or None.

    Taken over: the successor named in ``resumed_by.json`` holds a checkpoint (so every epoch
    of ``run_dir`` and more), or a finished or diverged result. A successor that stopped or
    was removed before any of that leaves ``run_dir`` resumable.
    """
    try:
        named = json.loads((run_dir / RESUMED_BY).read_text())["run_dir"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    later = Path(str(named))
    if later.resolve() == run_dir.resolve():
        return None
    metrics = read_metrics(later)
    took_over = (
        resumable_checkpoint(later) is not None
        or is_finished(metrics)
        or (metrics is not None and "diverged" in metrics)
    )
    return later if took_over else None


def last_successor(run_dir: Path) -> Path | None:
    """The end of ``run_dir``'s chain of successors (A resumed by B, B by C: C), or None."""
    seen = {run_dir.resolve()}
    last = None
    later = successor(run_dir)
    while later is not None and later.resolve() not in seen:
        seen.add(later.resolve())
        last, later = later, successor(later)
    return last
