"""Sweeps on Hydra's launchers (joblib processes, submitit's local executor, Ray), a sweep
re-run with trainer.resume=true, failed jobs, and the report written at the end of a sweep.

Each test runs the real ``mtlrun -m`` command in a subprocess on tiny generated data.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mtlrun import sweep
from tests.conftest import TINY_TEXT, TOY_SMALL

QUICK = [*TINY_TEXT, *TOY_SMALL, "trainer.progress=false", "trainer.plots=false"]


def mtlrun(*args: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "mtlrun", "-m", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def results(sweep_dir: Path) -> dict[str, dict]:
    """metrics.json of every job folder, by folder name."""
    return {
        p.parent.name: json.loads(p.read_text()) for p in sorted(sweep_dir.glob("*/metrics.json"))
    }


def assert_complete(metrics: dict) -> None:
    assert set(metrics["test"]) == {"pos", "chunk", "ner"}
    assert "interrupted" not in metrics and "diverged" not in metrics


def needs(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed")


def test_joblib_runs_two_jobs_at_once_with_divided_threads(tmp_path: Path) -> None:
    needs("hydra_plugins.hydra_joblib_launcher")
    out = tmp_path / "sweep"
    done = mtlrun(
        "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={out}",
        "method=single,hard", "trainer.max_epochs=2", *QUICK, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    # the workers compose the jobs' configs too: Hydra's schema-matching notice stays quiet there
    assert "validated against ConfigStore schema" not in done.stderr
    runs = results(out)
    assert len(runs) == 2
    for metrics in runs.values():
        assert_complete(metrics)
        # two jobs share the box: each takes its share of the cores for torch
        assert metrics["run"]["threads"] == max(1, len(os.sched_getaffinity(0)) // 2)
    assert {m["config"]["method"] for m in runs.values()} == {"single", "hard"}
    report = (out / "report.md").read_text()
    assert "2 runs under" in report and "| single |" in report and "| hard |" in report
    assert (out / "report_runs.csv").is_file()


def test_submitit_local_runs_a_two_job_sweep_end_to_end(tmp_path: Path) -> None:
    """The SLURM launcher's code path (submitit), on the local executor: both jobs start at
    once, so each takes half the cores (cpus_per_task null), and the workers stay quiet."""
    needs("hydra_plugins.hydra_submitit_launcher")
    out = tmp_path / "sweep"
    done = mtlrun(
        "hydra/launcher=submitit_local", f"hydra.sweep.dir={out}", "trainer.seed=0,1",
        "trainer.max_epochs=1", *QUICK, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    runs = results(out)
    assert len(runs) == 2
    for metrics in runs.values():
        assert_complete(metrics)
        assert metrics["run"]["threads"] == max(1, len(os.sched_getaffinity(0)) // 2)
    assert sorted(m["run"]["seed"] for m in runs.values()) == [0, 1]
    assert "n | Seeds" in (out / "report.md").read_text()  # seeds pooled in one row
    logs = sorted((out / ".submitit").rglob("*_log.err"))
    assert len(logs) == 2
    assert not [p for p in logs if "validated against ConfigStore schema" in p.read_text()]
    assert "validated against ConfigStore schema" not in done.stderr


def test_ray_launcher_runs_a_two_job_sweep_on_a_local_ray(tmp_path: Path) -> None:
    needs("ray")
    needs("hydra_plugins.hydra_ray_launcher")
    out = tmp_path / "sweep"
    done = mtlrun(
        "hydra/launcher=ray", "hydra.launcher.ray.init.num_cpus=2", f"hydra.sweep.dir={out}",
        "method=single,hard", "trainer.max_epochs=1", *QUICK, cwd=tmp_path, timeout=400,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    runs = results(out)
    assert len(runs) == 2
    for metrics in runs.values():
        assert_complete(metrics)
    assert (out / "report.md").is_file()


def test_an_interrupted_sweep_resumes_to_three_results_leaving_the_finished_one(
    tmp_path: Path,
) -> None:
    """Job 0 finished, job 1 killed with SIGKILL mid-training (after its first epoch's
    checkpoint), job 2 never started; the same command with trainer.resume=true ends with three
    complete results, job 0's files byte for byte as they were."""
    out = tmp_path / "sweep"
    args = [f"hydra.sweep.dir={out}", "trainer.seed=0,1,2", "trainer.max_epochs=4", *QUICK,
            "data.n_train=200"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mtlrun", "-m", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            if list(out.glob("1_*/checkpoints/last.pt")):
                break
            time.sleep(0.02)
        else:
            pytest.fail("job 1 never saved a checkpoint")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    first = {p.parent.name.split("_")[0]: p for p in out.glob("*/metrics.json")}
    assert set(first) == {"0"}  # job 0 finished, job 1 was cut, job 2 never began
    assert not list(out.glob("2_*"))
    job0 = first["0"].parent
    before = {p.relative_to(job0): p.read_bytes() for p in job0.rglob("*") if p.is_file()}

    done = mtlrun(*args, "trainer.resume=true", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    runs = {name.split("_")[0]: m for name, m in results(out).items()}
    assert set(runs) == {"0", "1", "2"}
    for metrics in runs.values():
        assert_complete(metrics)
        assert metrics["epochs"]["trained"] == 4
    assert runs["1"]["run"]["resumed_from"] is not None  # continued from its checkpoint
    assert runs["2"]["run"]["resumed_from"] is None  # started afresh
    after = {p.relative_to(job0): p.read_bytes() for p in job0.rglob("*") if p.is_file()}
    assert after == before
    assert "3 runs under" in (out / "report.md").read_text()


def test_a_failed_job_is_listed_and_the_others_finish(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    done = mtlrun(
        f"hydra.sweep.dir={out}", "scheduler=inverse_time", "scheduler.decay=-1,0",
        "trainer.max_epochs=1", *QUICK,
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2  # every job ran; one failed
    runs = results(out)
    assert len(runs) == 1
    assert_complete(next(iter(runs.values())))
    assert len(list(out.glob("0_*"))) == 0  # the refused job left no folder
    report = (out / "report.md").read_text()
    assert "## Failed jobs (1)" in report
    assert "scheduler.decay=-1" in report and "should be >= 0" in report


def test_two_parallel_jobs_never_write_the_same_run_folder(tmp_path: Path) -> None:
    needs("hydra_plugins.hydra_joblib_launcher")
    out = tmp_path / "sweep"
    done = mtlrun(
        "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={out}",
        "hydra.sweep.subdir=same", "trainer.seed=0,1", "trainer.max_epochs=2", *QUICK,
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2
    (metrics,) = results(out).values()  # one job's result, whole
    assert_complete(metrics)
    seed = metrics["run"]["seed"]
    saved = (out / "same" / ".hydra" / "overrides.yaml").read_text()
    assert f"trainer.seed={seed}" in saved  # the folder's files are all that job's
    failures = sweep.read_failures(out)
    assert len(failures) == 1
    assert failures[0]["kind"] == "refused"
    assert f"trainer.seed={1 - seed}" in failures[0]["overrides"]


def test_a_missing_launcher_plugin_is_one_line_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    line = sweep.missing_launcher(["method=hard", "hydra/launcher=submitit_slurm"])
    assert line is not None
    assert "pip install 'mtlrun[slurm]'" in line and "\n" not in line
    assert sweep.missing_launcher(["method=hard"]) is None


def test_threads_follow_the_key_then_slurm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")
    assert sweep.job_threads(5) == 5
    assert sweep.job_threads(None) == 3
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    assert sweep.job_threads(None) is None  # no sweep, no scheduler: torch's default
    assert sweep.job_device("auto", 4) == "auto"  # not a sweep job: no round-robin


@pytest.mark.parametrize(
    ("cpus_per_task", "at_once", "threads"), [(None, "2", "half"), (3, "2", 3), (None, "", None)]
)
def test_submitit_local_jobs_share_the_cores(
    monkeypatch: pytest.MonkeyPatch, cpus_per_task: int | None, at_once: str, threads: object
) -> None:
    from omegaconf import OmegaConf

    target = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"
    hydra_cfg = OmegaConf.create({"launcher": {"_target_": target, "cpus_per_task": cpus_per_task}})
    monkeypatch.setattr(sweep, "_sweep_job", lambda: hydra_cfg)
    monkeypatch.setattr(sweep, "_cores", lambda: 8)
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    monkeypatch.setenv("MTLRUN_JOBS_AT_ONCE", at_once)
    assert sweep.job_threads(None) == (4 if threads == "half" else threads)


def test_the_submitit_local_launcher_tells_its_jobs_how_many_run_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    needs("hydra_plugins.hydra_submitit_launcher")
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher

    seen = []
    monkeypatch.setattr(LocalLauncher, "launch", lambda self, jobs, idx: seen.append(
        os.environ.get(sweep.JOBS_AT_ONCE)) or [])  # fmt: skip
    monkeypatch.delenv(sweep.JOBS_AT_ONCE, raising=False)
    sweep.tell_local_jobs_their_number()
    sweep.tell_local_jobs_their_number()  # wrapped once
    LocalLauncher.launch(object.__new__(LocalLauncher), [["a=1"]] * 3, 0)
    assert seen == ["3"]
