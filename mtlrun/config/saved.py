"""A finished or running run's resolved config as it saved it, flattened to dotted keys, and the
keys that change only how a run is executed or logged (never what it computes)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

log = logging.getLogger(__name__)

# Keys that change how a run is executed or logged, never what a search computes (a search
# cache key leaves them out; the device enters it as the type it resolved to).
RUN_ONLY = (
    "logger",  # experiment trackers see the run; they do not change it
    "trainer.resume",
    "trainer.resume_dir",
    "trainer.device",
    "trainer.progress",
    "trainer.plots",
    "trainer.save_predictions",
    "trainer.threads",
    "trainer.tensorboard",
    "trainer.max_minutes",  # a search phase ignores the run's wall-time budget
    "trainer.search_cache",
    "name",
    "notes",
)


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config dict as ``{"dotted.key": value}``."""
    if isinstance(d, Mapping):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def upgrade(config: Mapping[str, Any]) -> dict[str, Any]:
    """A run config saved by an earlier mtlrun, in today's keys with the same meaning, so that
    such a run can still be resumed or evaluated: ``trainer.lr_decay`` d became the
    ``scheduler`` group (``constant`` for d = 0, else ``inverse_time`` with ``decay`` d: the
    same learning rates), and a config without ``trainer.precision`` trained in fp32."""
    out = {k: dict(v) if isinstance(v, Mapping) else v for k, v in config.items()}
    trainer = out.get("trainer")
    if isinstance(trainer, dict):
        if "lr_decay" in trainer:
            decay = trainer.pop("lr_decay")
            if "scheduler" not in out:
                out["scheduler"] = (
                    {"_target_": "mtlrun.training.schedule.InverseTime", "decay": decay}
                    if decay
                    else {"_target_": "mtlrun.training.schedule.Constant"}
                )
        trainer.setdefault("precision", "fp32")
    return out


def saved_config(run_dir: Path) -> dict[str, Any] | None:
    """The resolved config a run folder was started with (``.hydra/config.yaml``), or None."""
    from omegaconf import OmegaConf

    path = run_dir / ".hydra" / "config.yaml"
    if not path.is_file():
        return None
    try:
        value = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except Exception as e:  # noqa: BLE001 - a damaged file is skipped, never fatal
        log.warning("skipping %s: cannot read it (%s)", path, e)
        return None
    return cast(dict[str, Any], value) if isinstance(value, dict) else None
