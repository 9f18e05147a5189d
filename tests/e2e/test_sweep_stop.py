"""A sweep's worker processes end with it: a joblib sweep whose process is killed (SIGKILL) or
stopped (SIGTERM) leaves no worker behind, and each job it ran keeps its result so far.

Each test runs the real ``mtlrun -m`` command in a subprocess on tiny generated data and looks
at the sweep's child processes in ``/proc``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mtlrun import sweep, sweep_stop
from tests.e2e.test_sweeps import QUICK, needs, results

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs /proc")

# Long enough that no job finishes before the test stops the sweep.
LONG = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "trainer.seed=0,1,2",
        "trainer.max_epochs=60", *QUICK, "data.n_train=200"]  # fmt: skip


def start(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    log = (cwd / "sweep.log").open("w")
    return subprocess.Popen(
        [sys.executable, "-m", "mtlrun", "-m", *args],
        cwd=cwd,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def wait_for(condition: Callable[[], object], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"after {seconds:.0f} s: {what}")
        time.sleep(0.05)


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state first), None when gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def children(pid: int) -> dict[int, str]:
    """The live child processes of ``pid``, each with its start time (a reused pid differs)."""
    out = {}
    for entry in Path("/proc").iterdir():
        fields = _stat(int(entry.name)) if entry.name.isdigit() else None
        if fields and int(fields[1]) == pid and fields[0] != "Z":
            out[int(entry.name)] = fields[19]
    return out


def alive(processes: dict[int, str]) -> dict[int, str]:
    """Those of ``processes`` still running (a zombie has ended; its parent has not reaped it)."""
    out = {}
    for pid, started in processes.items():
        fields = _stat(pid)
        if fields and fields[0] != "Z" and fields[19] == started:
            out[pid] = started
    return out


def end(processes: dict[int, str]) -> None:
    """Kill what a failing test left running (only the processes it recorded)."""
    for pid in alive(processes):
        os.kill(pid, signal.SIGKILL)


def running_jobs(out: Path) -> Callable[[], bool]:
    return lambda: bool(list(out.glob("*/checkpoints/last.pt")))


def training_sweep(tmp_path: Path) -> tuple[subprocess.Popen, Path, dict[int, str]]:
    """A long joblib sweep, once one of its jobs saved a checkpoint: its process, its folder
    and its worker processes (the sweep is killed if it never gets there)."""
    needs("hydra_plugins.hydra_joblib_launcher")
    out = tmp_path / "sweep"
    proc = start([f"hydra.sweep.dir={out}", *LONG], tmp_path)
    try:
        wait_for(running_jobs(out), 240, "no job saved a checkpoint")
        return proc, out, children(proc.pid)
    except BaseException:
        proc.kill()
        proc.wait()
        raise


def test_killing_a_joblib_sweep_ends_its_workers(tmp_path: Path) -> None:
    """SIGKILL to the sweep's process: its loky workers see it gone, stop their jobs after the
    mini-batch (results so far written, marked interrupted) and end, instead of training on
    and then idling with their memory for good."""
    proc, out, workers = training_sweep(tmp_path)
    proc.kill()
    proc.wait()
    try:
        assert workers
        wait_for(lambda: not alive(workers), 60, "the sweep's workers still run")
    finally:
        end(workers)
    stopped = results(out)
    assert stopped  # the job that was training wrote its result so far
    for metrics in stopped.values():
        assert metrics["interrupted"]["signal"] == "SIGHUP"
    kinds = {f["kind"] for f in sweep.read_failures(out)}
    assert "interrupted" in kinds and kinds <= {"interrupted", "not run"}


def test_sigterm_stops_a_joblib_sweep_with_its_results_and_ends_its_workers(
    tmp_path: Path,
) -> None:
    """SIGTERM to the sweep's process: the running jobs stop after their mini-batch and write
    their results, the others do not start, report.md lists them all, the sweep exits 143 and
    no worker is left."""
    proc, out, workers = training_sweep(tmp_path)
    try:
        proc.send_signal(signal.SIGTERM)
        status = proc.wait(timeout=120)
        wait_for(lambda: not alive(workers), 60, "the sweep's workers still run")
    finally:
        proc.kill()
        proc.wait()
        end(workers)
    assert status == 128 + signal.SIGTERM, (tmp_path / "sweep.log").read_text()[-3000:]
    for metrics in results(out).values():
        assert metrics["interrupted"]["signal"] == "SIGTERM"
    failures = sweep.read_failures(out)
    assert sorted(f["job"] for f in failures) == [0, 1, 2]  # no job finished
    assert "interrupted" in {f["kind"] for f in failures}
    report = (out / "report.md").read_text()
    assert "## Failed jobs (3)" in report
    assert "interrupted (the sweep was stopped by SIGTERM)" in report
    assert not (out / sweep_stop.STOP_FILE).exists()
