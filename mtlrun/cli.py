"""The ``mtlrun`` command: the only @hydra.main. Thin: compose, run, report errors briefly."""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from mtlrun.config.schema import register_configs
from mtlrun.config.source import hydra_config_path
from mtlrun.errors import MtlrunError

log = logging.getLogger("mtlrun")


@hydra.main(version_base="1.3", config_path=hydra_config_path(), config_name="config")
def _main(cfg: DictConfig) -> float | None:
    from mtlrun.run import run  # heavy imports after Hydra has handled --help/--cfg

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        metrics = run(cfg, run_dir, overrides=list(hydra_cfg.overrides.task))
    except MtlrunError as e:
        print(f"mtlrun: error: {e}", file=sys.stderr)
        sys.exit(2)
    if "interrupted" in metrics:  # the result is on disk; tell the scheduler it was cut short
        signum = signal.Signals[metrics["interrupted"]["signal"]]
        print(f"mtlrun: stopped by {signum.name}; results so far in {run_dir}", file=sys.stderr)
        sys.exit(128 + int(signum))
    # A sweeper optimises the returned value: the mean primary validation metric.
    scores = [next(iter(m.values())) for m in metrics.get("valid", {}).values()]
    return sum(scores) / len(scores) if scores else None


def main() -> None:
    register_configs()
    _main()


if __name__ == "__main__":
    main()
