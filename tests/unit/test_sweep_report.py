"""The end-of-sweep report and the failure records of mtlrun/sweep.py, without running a sweep."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from mtlrun import sweep, sweep_stop


def _finished(run_dir: Path) -> None:
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.json").write_text(json.dumps({"test": {"pos": {"accuracy": 0.5}}}))


def _record(root: Path, job: int, run_dir: Path, **fields: object) -> Path:
    path = root / sweep.FAILED_DIR / f"{job:04d}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    entry = {"job": job, "overrides": [], "run_dir": str(run_dir), "error": "x", **fields}
    path.write_text(json.dumps(entry))
    return path


def test_report_md_lists_the_skipped_metrics_files_and_why(tmp_path: Path) -> None:
    broken = tmp_path / "0_a" / "metrics.json"
    broken.parent.mkdir()
    broken.write_text("{not json")
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    sweep.SweepReport().on_multirun_end(config=config)
    report = (tmp_path / "report.md").read_text()
    assert "1 metrics.json skipped (see warnings)" in report
    assert "## Warnings (1)" in report
    warnings = report.split("## Warnings (1)", 1)[1]
    assert str(broken) in warnings and "not a readable JSON file" in warnings


def test_a_resumed_job_whose_folder_holds_a_finished_result_is_done(tmp_path: Path) -> None:
    _finished(tmp_path / "0_a")
    done = _record(tmp_path, 0, tmp_path / "0_a", kind="refused", resume=True)
    _record(tmp_path, 1, tmp_path / "1_b", kind="refused", resume=True)  # no result there
    (tmp_path / "2_c").mkdir()
    (tmp_path / "2_c" / "metrics.json").write_text(json.dumps({"interrupted": {}}))
    _record(tmp_path, 2, tmp_path / "2_c", kind="interrupted", resume=True)
    assert [f["job"] for f in sweep.unfinished_jobs(tmp_path, resumed=False)] == [1, 2]
    assert not done.exists()


def test_without_resuming_another_runs_result_is_no_result_of_the_job(tmp_path: Path) -> None:
    _finished(tmp_path / "same")
    _record(tmp_path, 1, tmp_path / "same", kind="refused", resume=False)
    _record(tmp_path, 2, tmp_path / "same", kind="refused")  # a record of an older mtlrun
    assert [f["job"] for f in sweep.unfinished_jobs(tmp_path, resumed=False)] == [1, 2]
    assert sweep.unfinished_jobs(tmp_path, resumed=True) == []  # a re-run skips them: done


@pytest.mark.parametrize(
    ("n_jobs", "refused"), [(0, True), (1, False), (2, False), (-1, False), (-2, False)]
)
def test_joblib_n_jobs_0_is_refused_naming_the_key(n_jobs: int, refused: bool) -> None:
    launcher = OmegaConf.create(
        {"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher",
         "n_jobs": n_jobs}
    )  # fmt: skip
    line = sweep.launcher_error(launcher)
    assert (line is not None) == refused
    if line is not None:
        assert line.startswith("`hydra.launcher.n_jobs` should be") and "\n" not in line
        assert line.endswith("Found `hydra.launcher.n_jobs = 0`.")


def test_a_job_stops_on_its_own_sweeps_stop_file_only(tmp_path: Path) -> None:
    """The watchdog of a job process: the stop file of its sweep's process stops the job; one
    left by an earlier process of the same sweep does not; a parent that is gone does."""
    watchdog = sweep_stop._Watchdog(os.getppid(), child=True)
    watchdog.stop_file = tmp_path / "stop.json"
    assert watchdog.reason() is None
    stale = {"host": socket.gethostname(), "pid": os.getppid() + 1, "signal": "SIGTERM"}
    watchdog.stop_file.write_text(json.dumps(stale))
    assert watchdog.reason() is None
    watchdog.stop_file.write_text(json.dumps({**stale, "pid": os.getppid()}))
    assert watchdog.reason() == ("SIGTERM", "the sweep was stopped by SIGTERM")
    orphan = sweep_stop._Watchdog(os.getppid() + 1, child=True)  # our parent is not it: it is gone
    assert orphan.reason() is not None and orphan.reason()[0] == "SIGHUP"  # type: ignore[index]
