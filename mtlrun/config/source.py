"""Where the Hydra config root lives: the installed ``mtlrun.conf`` package, else ``<repo>/conf``."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO_CONF = Path(__file__).resolve().parents[2] / "conf"


def config_module_available() -> bool:
    """True when ``conf/`` is importable as ``mtlrun.conf`` (any pip install of mtlrun)."""
    try:
        return importlib.util.find_spec("mtlrun.conf") is not None
    except ModuleNotFoundError:
        return False


def hydra_config_path() -> str:
    """``config_path`` for ``@hydra.main``; a plain source checkout on PYTHONPATH works too."""
    return "pkg://mtlrun.conf" if config_module_available() else str(REPO_CONF)
