"""A run is resumed once: claims on the run being resumed, successors, finished folders kept,
empty stopped runs started again, paths printed ready to paste, rejected runs leave nothing."""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from mtlrun.errors import ConfigError, DataError
from mtlrun.report.collect import scan
from mtlrun.run import run
from mtlrun.training.checkpoint import RESUMED_BY
from mtlrun.training.run_dir import FolderLock, resume_override
from tests.conftest import TINY_TEXT, TOY_SMALL
from tests.e2e.test_cli import mtlrun

BASE = [*TINY_TEXT, *TOY_SMALL, "trainer.progress=false", "trainer.plots=false", "optim.lr=0.5"]
BASE += ["trainer.search_cache=null"]
PER_EPOCH = 9  # training losses per epoch: 3 tasks x 3 steps on the small toy set
OVERRIDE = re.compile(r"\"trainer\.resume_dir='[^\"]*'\"")


def _killed(compose_cfg, folder: Path) -> Path:
    """A run killed hard after its first whole epoch: a checkpoint and no metrics.json."""
    run(compose_cfg([*BASE, "trainer.max_epochs=1"]), folder)
    (folder / "metrics.json").unlink()
    return folder


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


# --------------------------------------------------------------- fault 1: one resume at a time


def test_a_run_being_resumed_is_refused_to_a_second_resume(compose_cfg, tmp_path: Path) -> None:
    """Another run holds the killed run (it resumes it): a second resume is refused in one line
    naming the folder and its holder, and leaves no folder; an older free candidate is taken."""
    outputs = tmp_path / "outputs"
    killed = _killed(compose_cfg, outputs / "killed")
    held = FolderLock(killed, f"resuming it into {outputs / 'first'}")
    assert held.acquire() is None
    try:
        holder = rf"pid {os.getpid()}, resuming it into {outputs / 'first'}"
        with pytest.raises(ConfigError, match=rf"{killed}, is held by .*\({holder}\)") as e:
            run(compose_cfg([*BASE, "trainer.max_epochs=2", "trainer.resume=true"]), outputs / "b")
        assert "\n" not in str(e.value)
        with pytest.raises(ConfigError, match=rf"cannot resume {killed}: .*\({holder}\)"):
            cfg = compose_cfg([*BASE, "trainer.max_epochs=2", f"trainer.resume_dir={killed}"])
            run(cfg, outputs / "c")
        assert not (outputs / "b").exists() and not (outputs / "c").exists()
        # An older run killed with the same configuration is free: that one is continued.
        older = _killed(compose_cfg, outputs / "older")
        os.utime(older / "checkpoints" / "last.pt", (1, 1))
        resumed = run(
            compose_cfg([*BASE, "trainer.max_epochs=2", "trainer.resume=true"]), outputs / "d"
        )
        assert resumed["run"]["resumed_from_dir"] == str(older.resolve())
    finally:
        held.release()
    assert not (killed / RESUMED_BY).exists()  # never resumed


def test_the_run_being_resumed_is_held_for_the_whole_resumed_run(
    compose_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the resumed run trains, the folder it resumes is locked by it (so a second
    resume started a second later is refused); afterwards the lock is gone."""
    from mtlrun.training import loop

    outputs = tmp_path / "outputs"
    killed = _killed(compose_cfg, outputs / "killed")
    seen: list[str] = []
    original = loop.train_epoch

    def watching(*args, **kwargs):
        lock = FolderLock(killed, "a second resume")
        seen.append(lock.acquire() or "free")
        lock.release()
        return original(*args, **kwargs)

    monkeypatch.setattr(loop, "train_epoch", watching)
    run(compose_cfg([*BASE, "trainer.max_epochs=2", "trainer.resume=true"]), outputs / "on")
    assert seen == [f"pid {os.getpid()}, resuming it into {(outputs / 'on').resolve()}"]
    assert not (killed / ".lock").exists()


@pytest.mark.slow
def test_two_resumes_started_a_second_apart_continue_the_killed_run_once(
    tmp_path: Path,
) -> None:
    args = [*BASE, "trainer.threads=1"]
    first = mtlrun([*args, "trainer.max_epochs=1", "hydra.run.dir=outputs/killed"], tmp_path)
    assert first.returncode == 0, first.stderr
    killed = tmp_path / "outputs" / "killed"
    (killed / "metrics.json").unlink()
    cmd = [str(Path(sys.executable).parent / "mtlrun"), *args, "trainer.max_epochs=40"]
    cmd += ["trainer.resume=true"]
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "OMP_NUM_THREADS": "1"}
    procs = []
    for name in ("a", "b"):
        out = [*cmd, f"hydra.run.dir=outputs/{name}"]
        procs.append(
            subprocess.Popen(out, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
        )
        time.sleep(1)
    results = [(p.wait(timeout=300), p.stderr.read() if p.stderr else "") for p in procs]
    assert sorted(rc for rc, _ in results) == [0, 2], results
    refused = next(err for rc, err in results if rc == 2).strip().splitlines()
    assert len(refused) == 1 and refused[0].startswith("mtlrun: error:"), refused
    # It finds the killed run held (or, once the first resume has saved an epoch of its own,
    # that run's new folder held, the killed one superseded), or finished if it started late.
    assert re.search(
        r"outputs/(killed|a|b), is held by another mtlrun run \(pid \d+, ", refused[0]
    ) or ("no unfinished run" in refused[0]), refused
    done = [json.loads(p.read_text()) for p in tmp_path.glob("outputs/*/metrics.json")]
    assert [m["run"]["resumed_from_dir"] for m in done] == [str(killed.resolve())]


# ------------------------------------------------------------ fault 2: a resumed run is marked


def test_a_run_resumed_to_the_end_is_never_resumed_again(compose_cfg, tmp_path: Path) -> None:
    outputs = tmp_path / "outputs"
    killed = _killed(compose_cfg, outputs / "killed")
    on = outputs / "on"
    run(compose_cfg([*BASE, "trainer.max_epochs=2", "trainer.resume=true"]), on)
    with pytest.raises(ConfigError, match="no unfinished run with a checkpoint under"):
        run(compose_cfg([*BASE, "trainer.max_epochs=3", "trainer.resume=true"]), outputs / "x")
    assert not (outputs / "x").exists()
    assert json.loads((killed / RESUMED_BY).read_text()) == {"run_dir": str(on.resolve())}
    pointer = f"\"trainer.resume_dir='{on.resolve()}'\" with a larger trainer.max_epochs"
    with pytest.raises(ConfigError, match=re.escape(pointer)) as e:
        run(
            compose_cfg([*BASE, "trainer.max_epochs=3", f"trainer.resume_dir={killed}"]),
            outputs / "y",
        )
    assert str(e.value).startswith(f"cannot resume {killed}: {on.resolve()} resumed it")
    # The successor is the run to continue; the chain's last run is named from its start.
    later = run(
        compose_cfg([*BASE, "trainer.max_epochs=3", f"trainer.resume_dir={on}"]), outputs / "z"
    )
    assert later["epochs"]["trained"] == 3
    with pytest.raises(
        ConfigError, match=re.escape(f"trainer.resume_dir='{(outputs / 'z').resolve()}'")
    ):
        run(
            compose_cfg([*BASE, "trainer.max_epochs=4", f"trainer.resume_dir={killed}"]),
            outputs / "w",
        )


def test_a_successor_counts_once_it_holds_the_run(compose_cfg, tmp_path: Path) -> None:
    """A successor killed after an epoch of its own is continued in place of the run it resumed;
    one that left nothing (removed, or stopped before saving) leaves that run resumable."""
    outputs = tmp_path / "outputs"
    killed = _killed(compose_cfg, outputs / "killed")
    on = outputs / "on"
    run(compose_cfg([*BASE, "trainer.max_epochs=2", "trainer.resume=true"]), on)
    (on / "metrics.json").unlink()  # the successor killed hard after its epoch 2
    os.utime(on / "checkpoints" / "last.pt", (1, 1))  # older than the run it resumed
    again = run(compose_cfg([*BASE, "trainer.max_epochs=3", "trainer.resume=true"]), outputs / "a")
    assert again["run"]["resumed_from_dir"] == str(on.resolve())
    shutil.rmtree(outputs / "a")
    shutil.rmtree(on)  # the successor removed: the killed run is resumable again
    again = run(compose_cfg([*BASE, "trainer.max_epochs=2", "trainer.resume=true"]), outputs / "b")
    assert again["run"]["resumed_from_dir"] == str(killed.resolve())


def test_the_report_keeps_one_of_two_runs_that_resumed_the_same_run(
    compose_cfg, tmp_path: Path
) -> None:
    """Trees written before resumes were claimed: two runs that continued one killed run are
    one run, not "seeds 0, 0"."""
    outputs = tmp_path / "outputs"
    _killed(compose_cfg, outputs / "killed")
    run(compose_cfg([*BASE, "trainer.max_epochs=2", "trainer.resume=true"]), outputs / "on1")
    shutil.copytree(outputs / "on1", outputs / "on2")
    found = scan(outputs)
    assert [r.rel for r in found.records] == ["on1"]
    assert found.superseded == {"on2": "on1"}


# ------------------------------------------------- fault 3: a finished folder is never rewritten


def test_a_finished_run_resumed_into_its_own_folder_is_refused_and_untouched(
    compose_cfg, tmp_path: Path
) -> None:
    folder = tmp_path / "outputs" / "done"
    run(compose_cfg([*BASE, "trainer.max_epochs=1"]), folder)
    before = _snapshot(folder)
    cfg = compose_cfg([*BASE, "trainer.max_epochs=2", f"trainer.resume_dir={folder}"])
    with pytest.raises(ConfigError) as e:
        run(cfg, folder)
    assert str(e.value) == (
        f"run folder {folder} holds a finished result (metrics.json), which is never "
        "overwritten: to continue it, give the continued run another hydra.run.dir (or none, "
        "for a new folder under outputs/)"
    )
    assert _snapshot(folder) == before
    on = run(cfg, tmp_path / "outputs" / "on")  # the way on
    assert on["epochs"]["trained"] == 2


# ------------------------------------- fault 4: a run stopped before its first epoch runs again


@pytest.mark.parametrize("sweep_job", [True, False], ids=["sweep_job", "single_run"])
def test_a_run_stopped_before_its_first_epoch_runs_again_in_its_folder(
    compose_cfg, tmp_path: Path, sigterm_at: dict, sweep_job: bool
) -> None:
    outputs = tmp_path / "outputs"
    _killed(compose_cfg, outputs / "other")  # same configuration, elsewhere: not this job's
    folder = outputs / "job"
    sigterm_at.update(n=0, at=2)
    stopped = run(compose_cfg([*BASE, "trainer.max_epochs=2"]), folder, sweep_job=sweep_job)
    assert "nothing to resume" in stopped["interrupted"]["note"]
    sigterm_at["at"] = None
    cfg = compose_cfg([*BASE, "trainer.max_epochs=2", "trainer.resume=true"])
    again = run(cfg, folder, sweep_job=sweep_job)
    assert "interrupted" not in again and again["epochs"]["trained"] == 2
    assert again["run"]["resumed_from"] is None
    assert json.loads((folder / "metrics.json").read_text())["test"] == again["test"]
    assert "stopped by SIGTERM" not in (folder / "mtlrun.log").read_text()  # the old run's log


# ------------------------------------------------- fault 5: paths printed ready to paste back


def test_the_printed_override_resumes_a_run_whose_folder_needs_quoting(
    compose_cfg, tmp_path: Path, sigterm_at: dict, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "outputs" / "2026-12-03" / "14-00-00_data.n_train=40,trainer.seed=1"
    sigterm_at.update(n=0, at=PER_EPOCH + 2)  # during epoch 2: last.pt holds epoch 1
    stopped = run(compose_cfg([*BASE, "trainer.max_epochs=2"]), folder)
    (printed,) = OVERRIDE.findall(stopped["interrupted"]["note"])
    assert printed == resume_override(folder)
    sigterm_at["at"] = None
    (override,) = shlex.split(printed)  # as the shell passes it
    with caplog.at_level(logging.INFO, logger="mtlrun"):
        on = run(compose_cfg([*BASE, "trainer.max_epochs=2", override]), tmp_path / "on")
    assert on["run"]["resumed_from_dir"] == str(folder.resolve())
    assert f"outputs in {tmp_path / 'on'} (to continue it: " in caplog.text
    assert resume_override(tmp_path / "on") in caplog.text


@pytest.mark.parametrize(
    "path",
    ["/o/14-00-00_a=1,b=[2]", "/o/it's here", "/o/a\\", "/o/a\\'b", '/o/"$HOME"`x`!', "/o/${x}"],
)
def test_a_printed_override_reads_back_as_the_path(compose_cfg, path: str) -> None:
    (word,) = shlex.split(resume_override(Path(path)))
    assert word.startswith("trainer.resume_dir=")
    parsed = OverridesParser.create().parse_override(word)
    assert parsed.key_or_group == "trainer.resume_dir"
    assert compose_cfg([word]).trainer.resume_dir == path


@pytest.mark.slow
def test_the_cli_prints_an_override_that_resumes_its_run(tmp_path: Path) -> None:
    args = [*BASE, "trainer.threads=1"]
    first = mtlrun([*args, "trainer.max_epochs=1"], tmp_path)
    assert first.returncode == 0, first.stderr
    (folder,) = [p.parent for p in tmp_path.glob("outputs/*/*/metrics.json")]
    assert "=" in folder.name and "," in folder.name
    (printed,) = OVERRIDE.findall(first.stdout + first.stderr)
    on = mtlrun([*args, "trainer.max_epochs=2", *shlex.split(printed)], tmp_path)
    assert on.returncode == 0, on.stderr
    resumed = [
        json.loads(p.read_text())["run"]["resumed_from_dir"]
        for p in tmp_path.glob("outputs/*/*/metrics.json")
    ]
    assert str(folder.resolve()) in resumed


# ------------------------------------------------ fault 6: a rejected run leaves nothing behind


def test_a_rejected_run_removes_the_folders_it_created(compose_cfg, tmp_path: Path) -> None:
    folder = tmp_path / "outputs" / "2026-12-03" / "run"
    cfg = compose_cfg([*TINY_TEXT, "data=conll", f"data.root={tmp_path / 'missing'}"])
    with pytest.raises(DataError):
        run(cfg, folder)
    assert not (tmp_path / "outputs").exists()
    (tmp_path / "outputs").mkdir()
    with pytest.raises(DataError):
        run(cfg, folder)
    assert list((tmp_path / "outputs").iterdir()) == []  # it was there before: kept


@pytest.mark.slow
def test_a_rejected_cli_run_leaves_no_outputs_folder(tmp_path: Path) -> None:
    out = mtlrun(["trainer.max_epochs=0"], tmp_path)
    assert out.returncode == 2, out.stderr
    assert not (tmp_path / "outputs").exists()
    out = mtlrun(["data=conll", "data.root=missing", "hydra.run.dir=a/b/c"], tmp_path)
    assert out.returncode == 2 and "missing" in out.stderr, out.stderr
    assert not (tmp_path / "a").exists()
    (tmp_path / "outputs").mkdir()
    out = mtlrun(["trainer.max_epochs=0"], tmp_path)
    assert out.returncode == 2
    assert list((tmp_path / "outputs").iterdir()) == []  # there before the run: kept
