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

from mtlrun import sweep, sweep_stop
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
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    overrides = list(hydra_cfg.overrides.task)
    if sweep.in_sweep():
        return _job(cfg, run_dir, overrides)
    return _single(cfg, run_dir, overrides)


def _single(cfg: DictConfig, run_dir: Path, overrides: list[str]) -> float | None:
    """One run: an error is one line and an exit status."""
    from mtlrun.run import run  # heavy imports after Hydra has handled --help/--cfg

    try:
        metrics = run(cfg, run_dir, overrides=overrides)
    except MtlrunError as e:
        discard_if_empty(run_dir)  # Hydra made the folder; a rejected run leaves nothing
        print(f"mtlrun: error: {e}", file=sys.stderr)
        sys.exit(EXIT_ERROR)
    if "diverged" in metrics:
        print(f"mtlrun: error: {metrics['diverged']['note']}; see {run_dir}", file=sys.stderr)
        sys.exit(EXIT_DIVERGED)
    stopped = metrics.get("interrupted")
    if stopped and stopped.get("signal"):  # the result is on disk; tell the scheduler
        signum = signal.Signals[stopped["signal"]]
        print(f"mtlrun: stopped by {signum.name}; results so far in {run_dir}", file=sys.stderr)
        sys.exit(128 + int(signum))
    if stopped:
        print(f"mtlrun: error: {stopped['reason']}; results so far in {run_dir}", file=sys.stderr)
        sys.exit(EXIT_ERROR)
    return objective(metrics)


def _job(cfg: DictConfig, run_dir: Path, overrides: list[str]) -> float | None:
    """One job of a sweep. It returns whatever happens, so that the other jobs run on; a job
    that does not finish (refused, crashed, interrupted, not started because the sweep was
    stopped) is recorded, and the sweep's report lists it and its exit status says so."""
    from mtlrun.run import run  # heavy imports after Hydra has handled --help/--cfg

    resume = bool(cfg.trainer.resume) and not cfg.trainer.resume_dir

    def unfinished(error: BaseException, kind: str | None = None) -> float | None:
        sweep.record_failure(error, run_dir, kind=kind, resume=resume)
        return None  # the job has no score

    why = sweep_stop.stop_reason()
    if why is not None:
        discard_if_empty(run_dir)
        print(f"mtlrun: error: job not started: {why}", file=sys.stderr)
        return unfinished(MtlrunError(f"not started: {why}"), kind="not run")
    try:
        with sweep_stop.watch_sweep():
            metrics = run(cfg, run_dir, overrides=overrides, sweep_job=True)
    except MtlrunError as e:
        discard_if_empty(run_dir)
        print(f"mtlrun: error: {e}", file=sys.stderr)
        return unfinished(e)
    except Exception as e:
        # the traceback, for the bug report
        log.exception("job %s failed", HydraConfig.get().job.num)
        discard_if_empty(run_dir)
        return unfinished(e)
    stopped = metrics.get("interrupted")
    if stopped:  # the result so far is on disk; the job did not finish
        why = sweep_stop.job_stopped(stopped.get("signal"))
        reason = why or stopped["reason"]
        print(f"mtlrun: error: {reason}; results so far in {run_dir}", file=sys.stderr)
        note = f"; {stopped['note']}" if stopped.get("note") else ""
        return unfinished(MtlrunError(f"interrupted ({reason}){note}"), "interrupted")
    sweep.clear_failure(run_dir)
    if "diverged" in metrics:  # the result is written and marked; the sweep's report shows it
        print(f"mtlrun: error: {metrics['diverged']['note']}; see {run_dir}", file=sys.stderr)
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


# mtlrun's launcher presets (conf/hydra/launcher/) share their names with the plugins' own
# schemas on purpose: Hydra then checks each preset against its plugin's schema, and warns that
# this matching by name is deprecated. The check is wanted; the warning is noise. Set on import,
# so that a launcher's worker process (joblib's loky), which imports this module to run a job
# and composes the job's config there, is quiet too.
warnings.filterwarnings("ignore", message=r"(?s).*validated against ConfigStore schema")


def main() -> None:
    register_configs()
    register_resolvers()
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
        if any(a.lstrip("+~").startswith("trainer.lr_decay=") for a in sys.argv[1:]):
            print(
                "mtlrun: error: `trainer.lr_decay` became the scheduler group: "
                "scheduler=inverse_time scheduler.decay=X gives the same learning rates "
                "(scheduler=constant for 0); see docs/training.md",
                file=sys.stderr,
            )
            sys.exit(EXIT_ERROR)
        missing = sweep.missing_launcher(sys.argv[1:])
        if missing is not None:
            print(f"mtlrun: error: {missing}", file=sys.stderr)
            sys.exit(EXIT_ERROR)
    _main()
    if sweep.SWEEP.signal is not None:  # the sweep was stopped; report.md lists what ran
        print(f"mtlrun: sweep stopped by {sweep.SWEEP.signal}", file=sys.stderr)
        sys.exit(128 + int(signal.Signals[sweep.SWEEP.signal]))
    if sweep.ENDED:  # every job ran; some did not finish (listed in the sweep's report.md)
        sys.exit(EXIT_ERROR)


if __name__ == "__main__":
    main()
