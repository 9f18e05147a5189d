"""Sweeps on Hydra's launchers: per-job threads and device, failed jobs, the end-of-sweep report.

A sweep (``mtlrun -m ...``) runs on whichever Hydra launcher ``hydra/launcher`` selects: the
basic one (one job after another in this process) or a plugin (joblib processes, submitit on
SLURM or locally, Ray). Every job is one :func:`mtlrun.run.run` in its own run folder. Here:

- :func:`job_threads` and :func:`job_device`: what a job takes of the box it shares with the
  sweep's other jobs;
- :func:`record_failure`: a job that fails, or does not finish, writes one JSON file under
  ``<sweep dir>/.mtlrun/failed/`` and returns, so that the other jobs run on;
- stopping: a signal to the sweep's process stops the sweep (:class:`SweepProcess`), and a job
  that runs in a process the sweep started watches that process (:func:`watch_sweep`): when the
  sweep is stopped or its process is gone, the job stops after its mini-batch as if it had
  received the signal, and the process ends once its job has written its result;
- :class:`SweepReport`: the Hydra callback that checks the launcher's settings before the jobs
  start and, at the end of every sweep, writes ``report.md`` and the report's CSVs into the sweep
  folder, with the jobs that did not finish and the report's warnings listed.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from mtlrun.errors import MtlrunError, StorageError
from mtlrun.sweep_stop import (
    SWEEP,
    _sweep_job,
)
from mtlrun.training.run_dir import atomic_write, read_metrics

log = logging.getLogger(__name__)

FAILED_DIR = Path(".mtlrun") / "failed"
EXIT_REFUSED = 2  # cli.EXIT_ERROR: a refused setting
# hydra/launcher option -> (the plugin's module, the mtlrun extra that installs it)
LAUNCHER_PLUGINS: dict[str, tuple[str, str]] = {
    "joblib": ("hydra_plugins.hydra_joblib_launcher", "joblib"),
    "submitit_local": ("hydra_plugins.hydra_submitit_launcher", "slurm"),
    "submitit_slurm": ("hydra_plugins.hydra_submitit_launcher", "slurm"),
    "ray": ("hydra_plugins.hydra_ray_launcher", "ray"),
}
# Failed jobs of the sweeps that ended in this process (the CLI's exit status reads it).
ENDED: list[dict[str, Any]] = []


def missing_launcher(argv: list[str]) -> str | None:
    """One line naming the extra to install when ``hydra/launcher=X`` names a missing plugin."""
    for arg in argv:
        key, _, name = arg.lstrip("+").partition("=")
        if key != "hydra/launcher" or name not in LAUNCHER_PLUGINS:
            continue
        module, extra = LAUNCHER_PLUGINS[name]
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            package = module.rsplit(".", 1)[-1].replace("_", "-")
            return (
                f"hydra/launcher={name} needs Hydra's {package} plugin: "
                f"pip install 'mtlrun[{extra}]' (or pip install {package})"
            )
    return None


def in_sweep() -> bool:
    return _sweep_job() is not None


def sweep_folder() -> str | None:
    """The running job's sweep folder (``hydra.sweep.dir``, as given) when it is a sweep's job:
    the name its runs share in a tracker (``logger=...``: one experiment per sweep)."""
    hydra_cfg = _sweep_job()
    return str(hydra_cfg.sweep.dir) if hydra_cfg is not None else None


# Jobs that submitit's local launcher starts at once (:func:`tell_local_jobs_their_number`).
JOBS_AT_ONCE = "MTLRUN_JOBS_AT_ONCE"


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def tell_local_jobs_their_number() -> None:
    """Make submitit's local launcher tell the jobs of a batch how many start at once.

    Its jobs are local processes started together (one batch: the whole sweep unless the
    sweeper batches), so each should take its share of the cores, as joblib's jobs do (each
    took torch's default threads: two jobs on two cores ran 16–21 s where 0.4 s was possible).
    The launcher knows the batch; the jobs read it from ``JOBS_AT_ONCE`` in the environment
    that submitit copies into them. Hydra loads launchers only from installed plugin packages,
    so its ``launch`` is wrapped here, in the sweep's own process, rather than subclassed.
    """
    try:
        from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher
    except ImportError:  # without the `slurm` extra there is no such launcher to choose
        return
    original = LocalLauncher.launch
    if getattr(original, "tells_jobs_at_once", False):
        return

    @functools.wraps(original)
    def launch(self: Any, job_overrides: Any, initial_job_idx: int) -> Any:
        os.environ[JOBS_AT_ONCE] = str(len(job_overrides))
        return original(self, job_overrides, initial_job_idx)

    launch.tells_jobs_at_once = True  # type: ignore[attr-defined]
    LocalLauncher.launch = launch


def job_threads(explicit: int | None) -> int | None:
    """Torch CPU threads for this run: ``trainer.threads`` when given; else, in a sweep whose
    jobs share the box, the job's share of it: SLURM's cpus_per_task, Ray's num_cpus per job,
    the box's cores divided by joblib's ``n_jobs`` or by the number of jobs submitit's local
    launcher starts at once (:func:`tell_local_jobs_their_number`; its ``cpus_per_task`` when given); else
    None (torch's default).

    Two training processes with torch's default threads on one box slow each other down many
    times over (each takes every core); divided, two jobs cost at most twice one.
    """
    if explicit is not None:
        return explicit
    slurm = os.environ.get("SLURM_CPUS_PER_TASK")
    if slurm and slurm.isdigit():
        return int(slurm)
    hydra_cfg = _sweep_job()
    if hydra_cfg is None:
        return None
    launcher = hydra_cfg.launcher
    target = str(launcher.get("_target_", ""))
    if "joblib" in target.lower():
        n_jobs = int(launcher.get("n_jobs") or 1)
        cores = _cores()
        return 1 if n_jobs < 0 else max(1, cores // max(n_jobs, 1))
    if "submitit" in target.lower() and launcher.get("cpus_per_task"):
        return int(launcher.cpus_per_task)
    if "submitit" in target.lower() and "LocalLauncher" in target:  # every job of the batch at once
        at_once = os.environ.get(JOBS_AT_ONCE, "")
        return max(1, _cores() // int(at_once)) if at_once.isdigit() and int(at_once) else None
    if "ray" in target:
        remote = launcher.get("ray", {}).get("remote", {})
        if remote.get("num_cpus"):
            return max(1, int(remote.num_cpus))
    return None


def job_device(name: str, cuda_count: int) -> str:
    """``trainer.device``, with ``auto`` in a parallel sweep on a box of several visible GPUs
    resolved to GPU (job number mod GPUs): the jobs spread round-robin over the GPUs."""
    hydra_cfg = _sweep_job()
    if name != "auto" or cuda_count < 2 or hydra_cfg is None:
        return name
    if "BasicLauncher" in str(hydra_cfg.launcher.get("_target_", "")):
        return name
    return f"cuda:{int(hydra_cfg.job.num) % cuda_count}"


def launcher_error(launcher: Any) -> str | None:
    """One line naming the key when the launcher's settings cannot run a sweep, else None."""
    target = str(launcher.get("_target_", ""))
    if "JoblibLauncher" in target and launcher.get("n_jobs") == 0:
        return (
            "`hydra.launcher.n_jobs` should be the number of jobs at once: a positive number, "
            "or -1 for one per CPU core (-2: all but one, ...). Found `hydra.launcher.n_jobs = 0`."
        )
    return None


def _failure_path(hydra_cfg: Any) -> Path:
    return Path(hydra_cfg.sweep.dir) / FAILED_DIR / f"{int(hydra_cfg.job.num):04d}.json"


def record_failure(
    error: BaseException, run_dir: Path, kind: str | None = None, resume: bool = False
) -> Path | None:
    """Write ``<sweep dir>/.mtlrun/failed/<job number>.json`` for a sweep job that did not finish.

    ``kind``: ``refused`` (an mtlrun error: config, data, a folder in use), ``crashed``,
    ``interrupted`` (stopped with its result so far) or ``not run`` (the sweep was stopped
    first); ``resume``: the job ran with ``trainer.resume=true``, so a finished result that
    another run leaves in its folder makes it done (:func:`unfinished_jobs`).
    """
    hydra_cfg = _sweep_job()
    if hydra_cfg is None:
        return None
    path = _failure_path(hydra_cfg)
    mtlrun_error = isinstance(error, MtlrunError)
    entry = {
        "job": int(hydra_cfg.job.num),
        "overrides": list(hydra_cfg.overrides.task),
        "run_dir": str(run_dir),
        "error": str(error) if mtlrun_error else f"{type(error).__name__}: {error}",
        "kind": kind or ("refused" if mtlrun_error else "crashed"),
        "resume": resume,
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: tmp.write_text(json.dumps(entry, indent=2)))
    except (OSError, StorageError) as e:
        log.error("could not record the failure of job %s: %s", entry["job"], e)
        return None
    return path


def read_failures(root: Path) -> list[dict[str, Any]]:
    """The failed jobs recorded under a sweep folder, by job number (unreadable files named)."""
    return [entry for _, entry in _failure_records(root)]


def _failure_records(root: Path) -> list[tuple[Path, dict[str, Any]]]:
    out = []
    for path in sorted((root / FAILED_DIR).glob("*.json")):
        try:
            out.append((path, json.loads(path.read_text())))
        except (OSError, ValueError) as e:
            out.append(
                (path, {"job": path.stem, "error": f"unreadable failure record {path}: {e}"})
            )
    return out


def _holds_result(run_dir: str | None) -> bool:
    """The folder holds a result that a resumed sweep skips (finished, or diverged)."""
    metrics = read_metrics(Path(run_dir)) if run_dir else None
    return metrics is not None and "interrupted" not in metrics


def unfinished_jobs(root: Path, resumed: bool) -> list[dict[str, Any]]:
    """The recorded failures of a sweep, without the jobs that are done after all.

    When the sweep is resumed (``resumed``: ``trainer.resume=true``), or the job was (the
    record's ``resume``), a job whose folder now holds a finished result is done, whoever
    finished it (a job refused because another process held its folder, which that process
    then finished), as a re-run would skip it: its record is removed. Without resuming, a
    folder that holds another run's result is no result of this sweep's job, which stays
    failed.
    """
    out = []
    for path, entry in _failure_records(root):
        if (resumed or entry.get("resume")) and _holds_result(entry.get("run_dir")):
            log.info("job %s is done: %s holds its result", entry.get("job"), entry["run_dir"])
            path.unlink(missing_ok=True)
            continue
        out.append(entry)
    return out


def clear_failure(run_dir: Path) -> None:
    """A job that now succeeds drops its failure record of an earlier attempt."""
    hydra_cfg = _sweep_job()
    if hydra_cfg is not None:
        _failure_path(hydra_cfg).unlink(missing_ok=True)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@contextmanager
def _report_warnings() -> Iterator[list[str]]:
    """The warnings that the report's code logs in the block (files skipped, and why)."""
    logger = logging.getLogger("mtlrun.report")
    handler, level = _Collect(), logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.WARNING:
        logger.setLevel(logging.WARNING)
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _add_warnings(path: Path, warnings: list[str]) -> None:
    """Append the report's warnings to ``report.md`` (the summary line points at them)."""
    lines = [f"## Warnings ({len(warnings)})", ""] + [f"- {w}" for w in warnings]
    text = path.read_text().rstrip("\n") + "\n\n" + "\n".join(lines) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))


class SweepReport(Callback):
    """Checks the launcher's settings before a sweep's jobs start (one line naming the key) and
    watches for a signal that stops the sweep (:class:`SweepProcess`); at the end of every
    sweep, ``report.md`` and the report's CSVs in the sweep folder.

    The report covers every ``metrics.json`` under the sweep folder (mean ± std over seeds,
    as ``mtlrun-report`` prints it), lists the jobs that did not finish, with their errors, and
    the report's warnings (``metrics.json`` files skipped, and why). A sweep with no finished
    run still gets its ``report.md``. Runs in the sweep's own process, whichever launcher ran
    the jobs.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        launcher = config.hydra.launcher
        error = launcher_error(launcher)
        if error is not None:
            print(f"mtlrun: error: {error}", file=sys.stderr)
            sys.exit(EXIT_REFUSED)  # before any job: nothing to report
        SWEEP.start(Path(config.hydra.sweep.dir), str(launcher.get("_target_", "")))
        tell_local_jobs_their_number()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from mtlrun.report.cli import write_report  # the report imports no training code

        SWEEP.end()
        root = Path(config.hydra.sweep.dir)
        failures = unfinished_jobs(root, bool(config.get("trainer", {}).get("resume")))
        ENDED.extend(failures)
        try:
            with _report_warnings() as warnings:
                path = write_report(root, failures)
            if warnings:
                _add_warnings(path, warnings)
        except (OSError, StorageError) as e:
            log.error("could not write the sweep report under %s: %s", root, e)
            return
        if failures:
            log.error("%d job(s) of the sweep did not finish; see %s", len(failures), path)
        log.info("sweep report: %s", path)
