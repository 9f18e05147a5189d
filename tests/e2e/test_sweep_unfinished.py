"""A sweep's exit status and report say which jobs did not finish: a job refused because another
run holds its folder, or one that ended interrupted, is a failure (exit status 2); a job whose
folder another run finished meanwhile is done. A launcher setting that cannot run is one line.

Each test runs the real ``mtlrun -m`` command in a subprocess on tiny generated data.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
from pathlib import Path

from mtlrun import sweep
from tests.e2e.test_sweep_stop import wait_for
from tests.e2e.test_sweeps import QUICK, assert_complete, mtlrun, needs, results


def start(args: list[str], cwd: Path, log: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "mtlrun", "-m", *args],
        cwd=cwd,
        env=env,
        stdout=(cwd / log).open("w"),
        stderr=subprocess.STDOUT,
    )


def test_a_resumed_sweep_whose_job_another_run_holds_and_leaves_unfinished_exits_2(
    tmp_path: Path,
) -> None:
    """Sweep A trains job 0; the same command with trainer.resume=true (B) is refused job 0's
    folder (A holds it) and runs job 1; A is then stopped (SIGTERM) with job 0 interrupted.
    B must say that job 0 did not finish: its record stays, and B exits 2 (A's interrupted job
    once dropped B's record, and B exited 0)."""
    out = tmp_path / "sweep"
    # job 0 long (stopped by the test), job 1 a few seconds
    args = [f"hydra.sweep.dir={out}", "trainer.max_epochs=300,12", *QUICK, "data.n_train=200"]
    first = start(args, tmp_path, "a.log")
    second = None
    try:
        wait_for(lambda: list(out.glob("0_*/checkpoints/last.pt")), 240, "job 0 never trained")
        second = start([*args, "trainer.resume=true"], tmp_path, "b.log")
        record = out / sweep.FAILED_DIR / "0000.json"
        wait_for(record.is_file, 240, "B's job 0 was not refused")
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=120) == 128 + signal.SIGTERM
        status = second.wait(timeout=240)
    finally:
        for proc in (first, second):
            if proc is not None:
                proc.kill()
                proc.wait()
    assert status == 2, (tmp_path / "b.log").read_text()[-3000:]
    jobs = {f["job"]: f for f in sweep.read_failures(out)}
    assert jobs[0]["kind"] in ("refused", "interrupted")  # B's refusal, or A's stop after it
    (job1,) = [m for name, m in results(out).items() if name.startswith("1_")]
    assert_complete(job1)
    report = (out / "report.md").read_text()
    assert "trainer.max_epochs=300" in report.split("## Failed jobs", 1)[1]


def test_a_job_that_another_run_finishes_meanwhile_counts_as_done(tmp_path: Path) -> None:
    """A resumed sweep is refused job 0's folder (another run holds it, still writing its
    result); that run then leaves its finished metrics.json there before the sweep ends. Job 0
    is done: not in the failed list, and the sweep exits 0."""
    out = tmp_path / "sweep"
    common = [f"hydra.sweep.dir={out}", "trainer.max_epochs=3", *QUICK, "data.n_train=100"]
    done = mtlrun(*common, "trainer.seed=0", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    (job0,) = out.glob("0_*")
    finished = (job0 / "metrics.json").read_bytes()
    (job0 / "metrics.json").unlink()  # the other run has not written it yet
    lock = os.open(job0 / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(lock, fcntl.LOCK_EX)  # ... and holds the folder, as a run does
    os.write(lock, b"1\n")
    try:
        second = start([*common, "trainer.seed=0,1", "trainer.resume=true"], tmp_path, "b.log")
        try:
            record = out / sweep.FAILED_DIR / "0000.json"
            wait_for(record.is_file, 240, "job 0 was not refused")
            (job0 / "metrics.json").write_bytes(finished)  # the other run finishes job 0
            fcntl.flock(lock, fcntl.LOCK_UN)
            status = second.wait(timeout=240)
        finally:
            second.kill()
            second.wait()
    finally:
        os.close(lock)
    assert status == 0, (tmp_path / "b.log").read_text()[-3000:]
    assert sweep.read_failures(out) == []
    runs = results(out)
    assert len(runs) == 2
    for metrics in runs.values():
        assert_complete(metrics)
    report = (out / "report.md").read_text()
    assert "2 runs under" in report and "Failed jobs" not in report


def test_n_jobs_0_is_one_line_naming_the_key(tmp_path: Path) -> None:
    needs("hydra_plugins.hydra_joblib_launcher")
    out = tmp_path / "sweep"
    done = mtlrun(
        "hydra/launcher=joblib", "hydra.launcher.n_jobs=0", f"hydra.sweep.dir={out}",
        "trainer.seed=0,1", "trainer.max_epochs=1", *QUICK, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("mtlrun: error:")]
    assert "`hydra.launcher.n_jobs`" in line and "-1" in line and "positive" in line
    assert "`hydra.launcher.n_jobs = 0`" in line
    assert not out.exists()  # refused before any job
