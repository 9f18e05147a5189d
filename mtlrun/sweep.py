"""Sweeps on Hydra's launchers: per-job threads and device, failed jobs, the end-of-sweep report.

A sweep (``mtlrun -m ...``) runs on whichever Hydra launcher ``hydra/launcher`` selects: the
basic one (one job after another in this process) or a plugin (joblib processes, submitit on
SLURM or locally, Ray). Every job is one :func:`mtlrun.run.run` in its own run folder. Here:

- :func:`job_threads` and :func:`job_device`: what a job takes of the box it shares with the
  sweep's other jobs;
- :func:`record_failure`: a job that fails writes one JSON file under
  ``<sweep dir>/.mtlrun/failed/`` and returns, so that the other jobs run on;
- :class:`SweepReport`: the Hydra callback that, at the end of every sweep, writes
  ``report.md`` and the report's CSVs into the sweep folder, with the failed jobs listed.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from mtlrun.errors import MtlrunError, StorageError
from mtlrun.training.run_dir import atomic_write

log = logging.getLogger(__name__)

FAILED_DIR = Path(".mtlrun") / "failed"
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


def _sweep_job() -> Any:
    """The Hydra config of the running job when it is a job of a sweep, else None."""
    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    return hydra_cfg if hydra_cfg.mode == RunMode.MULTIRUN else None


def in_sweep() -> bool:
    return _sweep_job() is not None


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def job_threads(explicit: int | None) -> int | None:
    """Torch CPU threads for this run: ``trainer.threads`` when given; else, in a sweep whose
    jobs share the box, the job's share of it: SLURM's cpus_per_task, Ray's num_cpus per job,
    or the box's cores divided by joblib's ``n_jobs``; else None (torch's default).

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
    if "joblib" in target:
        n_jobs = int(launcher.get("n_jobs") or 1)
        cores = _cores()
        return 1 if n_jobs < 0 else max(1, cores // max(n_jobs, 1))
    if "submitit" in target and launcher.get("cpus_per_task"):
        return int(launcher.cpus_per_task)
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


def _failure_path(hydra_cfg: Any) -> Path:
    return Path(hydra_cfg.sweep.dir) / FAILED_DIR / f"{int(hydra_cfg.job.num):04d}.json"


def record_failure(error: BaseException, run_dir: Path) -> Path | None:
    """Write ``<sweep dir>/.mtlrun/failed/<job number>.json`` for a failed sweep job."""
    hydra_cfg = _sweep_job()
    if hydra_cfg is None:
        return None
    path = _failure_path(hydra_cfg)
    entry = {
        "job": int(hydra_cfg.job.num),
        "overrides": list(hydra_cfg.overrides.task),
        "run_dir": str(run_dir),
        "error": str(error)
        if isinstance(error, MtlrunError)
        else f"{type(error).__name__}: {error}",
        "kind": "refused" if isinstance(error, MtlrunError) else "crashed",
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
    out = []
    for path in sorted((root / FAILED_DIR).glob("*.json")):
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, ValueError) as e:
            out.append({"job": path.stem, "error": f"unreadable failure record {path}: {e}"})
    return out


def clear_failure(run_dir: Path) -> None:
    """A job that now succeeds drops its failure record of an earlier attempt."""
    hydra_cfg = _sweep_job()
    if hydra_cfg is not None:
        _failure_path(hydra_cfg).unlink(missing_ok=True)


class SweepReport(Callback):
    """At the end of every sweep: ``report.md`` and the report's CSVs in the sweep folder.

    The report covers every ``metrics.json`` under the sweep folder (mean ± std over seeds,
    as ``mtlrun-report`` prints it) and lists the jobs that failed, with their errors. A sweep
    with no finished run still gets its ``report.md`` (the failures). Runs in the sweep's
    parent process, whichever launcher ran the jobs.
    """

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from mtlrun.report.cli import write_report  # the report imports no training code

        root = Path(config.hydra.sweep.dir)
        failures = read_failures(root)
        ENDED.extend(failures)
        try:
            path = write_report(root, failures)
        except OSError as e:
            log.error("could not write the sweep report under %s: %s", root, e)
            return
        if failures:
            log.error("%d job(s) of the sweep failed; see %s", len(failures), path)
        log.info("sweep report: %s", path)
