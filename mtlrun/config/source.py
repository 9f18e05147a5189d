"""Where the Hydra config root lives: the installed ``mtlrun.conf`` package, else ``<repo>/conf``."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

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


def compose_config(overrides: list[str]) -> Any:
    """The composed run config for ``overrides`` without ``@hydra.main`` (benchmarks, tests)."""
    from hydra import compose, initialize_config_dir, initialize_config_module

    from mtlrun.config.schema import register_configs

    register_configs()
    if config_module_available():
        with initialize_config_module(config_module="mtlrun.conf", version_base="1.3"):
            return compose(config_name="config", overrides=overrides)
    with initialize_config_dir(config_dir=str(REPO_CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)
