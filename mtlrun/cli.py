"""The ``mtlrun`` command: the only @hydra.main. Thin: compose, run, report errors briefly."""

from __future__ import annotations

import logging
import signal
import sys
import warnings
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from mtlrun import sweep
from mtlrun.config.schema import register_configs
from mtlrun.config.source import hydra_config_path
from mtlrun.errors import MtlrunError
from mtlrun.training.run_dir import discard_if_empty, register_resolvers, unwritable_ancestor

log = logging.getLogger("mtlrun")

# Exit statuses besides 0 and 128 + signal: a refused config, bad data or a failed write; a
# diverged run (its metrics.json is written, marked ``diverged``).
EXIT_ERROR, EXIT_DIVERGED = 2, 3


@hydra.main(version_base="1.3", config_path=hydra_config_path(), config_name="config")
def _main(cfg: DictConfig) -> float | None:
    from mtlrun.run import run  # heavy imports after Hydra has handled --help/--cfg

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    job = sweep.in_sweep()  # a sweep's job returns on failure, so that the others run on
    try:
        metrics = run(cfg, run_dir, overrides=list(hydra_cfg.overrides.task), sweep_job=job)
    except MtlrunError as e:
        discard_if_empty(run_dir)  # Hydra made the folder; a rejected run leaves nothing
        print(f"mtlrun: error: {e}", file=sys.stderr)
        if not job:
            sys.exit(EXIT_ERROR)
        sweep.record_failure(e, run_dir)
        return None
    except Exception as e:
        if not job:
            raise
        log.exception("job %s failed", hydra_cfg.job.num)  # the traceback, for the bug report
        discard_if_empty(run_dir)
        sweep.record_failure(e, run_dir)
        return None
    if job:
        sweep.clear_failure(run_dir)
    if "diverged" in metrics:
        print(f"mtlrun: error: {metrics['diverged']['note']}; see {run_dir}", file=sys.stderr)
        if not job:
            sys.exit(EXIT_DIVERGED)
        return None  # the result is written and marked; the sweep's report shows it
    stopped = metrics.get("interrupted")
    if stopped and stopped.get("signal"):  # the result is on disk; tell the scheduler
        signum = signal.Signals[stopped["signal"]]
        print(f"mtlrun: stopped by {signum.name}; results so far in {run_dir}", file=sys.stderr)
        sys.exit(128 + int(signum))
    if stopped:
        print(f"mtlrun: error: {stopped['reason']}; results so far in {run_dir}", file=sys.stderr)
        if not job:
            sys.exit(EXIT_ERROR)
        sweep.record_failure(MtlrunError(stopped["reason"]), run_dir)
        return None
    return objective(metrics)


def objective(metrics: dict) -> float | None:
    """What a sweeper optimises: the mean over tasks of the primary validation metric.

    ``metrics["primary"]`` names each task's primary metric (``Task.metric``: accuracy for POS
    and the image tasks, F1 for chunking and NER), the model-selection score of the run.
    """
    valid = metrics.get("valid", {})
    scores = [valid[t][m] for t, m in metrics.get("primary", {}).items() if m in valid.get(t, {})]
    return sum(scores) / len(scores) if scores else None


def _output_base(argv: list[str]) -> Path:
    """Where Hydra will create run folders, from the command line (default ``outputs/``)."""
    key = "hydra.sweep.dir=" if any(a in ("-m", "--multirun") for a in argv) else "hydra.run.dir="
    for arg in argv:
        if arg.startswith(key) and "${" not in arg:
            return Path(arg.split("=", 1)[1])
    return Path("outputs")


def main() -> None:
    register_configs()
    register_resolvers()
    # mtlrun's launcher presets (conf/hydra/launcher/) share their names with the plugins' own
    # schemas on purpose: Hydra then checks each preset against its plugin's schema, and warns
    # that this matching by name is deprecated. The check is wanted; the warning is noise.
    warnings.filterwarnings("ignore", message=r"(?s).*validated against ConfigStore schema")
    if not any(a in ("--help", "-h", "--hydra-help", "--cfg", "-c", "--info") for a in sys.argv):
        blocked = unwritable_ancestor(_output_base(sys.argv[1:]))
        if blocked is not None:
            print(
                f"mtlrun: error: cannot create run folders under {blocked}: it is not a "
                "writable folder (choose another with hydra.run.dir=PATH, or run from a "
                "writable folder)",
                file=sys.stderr,
            )
            sys.exit(EXIT_ERROR)
        missing = sweep.missing_launcher(sys.argv[1:])
        if missing is not None:
            print(f"mtlrun: error: {missing}", file=sys.stderr)
            sys.exit(EXIT_ERROR)
    _main()
    if sweep.ENDED:  # every job ran; some failed (listed in the sweep's report.md)
        sys.exit(EXIT_ERROR)


if __name__ == "__main__":
    main()
