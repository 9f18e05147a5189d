"""Resumable checkpoints: everything needed to continue a run bit-for-bit on the same device."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtlrun.errors import ConfigError


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
    """Write atomically: a crash while saving never leaves a truncated last.pt behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise ConfigError(f"cannot read checkpoint {path}: {e}") from None


# Keys that may differ between an interrupted run and its resumption.
RESUME_FREE = (
    "trainer.resume",
    "trainer.resume_dir",
    "trainer.max_epochs",
    "trainer.progress",
    "trainer.device",
    "trainer.patience",
    "trainer.max_minutes",
    "trainer.plots",
    "trainer.save_predictions",
)


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Keys (dotted) whose values differ between two plain config dicts, resume-free keys aside."""
    a, b = _flatten(saved), _flatten(current)
    keys = sorted(set(a) | set(b))
    return [k for k in keys if a.get(k) != b.get(k) and not k.startswith(RESUME_FREE)]


def find_resumable(search_root: Path, config: dict[str, Any], exclude: Path) -> Path | None:
    """The newest ``checkpoints/last.pt`` under ``search_root`` saved with the same config."""
    candidates = sorted(
        search_root.glob("**/checkpoints/last.pt"), key=lambda p: p.stat().st_mtime, reverse=True
    )
    for path in candidates:
        if exclude in path.parents:
            continue
        saved = torch.load(path, map_location="cpu", weights_only=False).get("config", {})
        if not config_differences(saved, config):
            return path
    return None
