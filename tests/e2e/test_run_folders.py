"""A run folder belongs to one run: locks, refusals, safe names, full disks, rejected runs."""

from __future__ import annotations

import errno
import hashlib
import json
import os
from pathlib import Path

import pytest
import torch

from mtlrun.errors import ConfigError
from mtlrun.run import run
from mtlrun.training.run_dir import RunFolder, safe_dirname
from tests.conftest import TINY_TEXT, TOY_SMALL
from tests.e2e.test_cli import mtlrun

BASE = [*TINY_TEXT, *TOY_SMALL, "trainer.progress=false", "trainer.plots=false", "optim.lr=0.5"]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_a_second_run_into_a_finished_folder_is_refused_and_changes_nothing(
    compose_cfg, tmp_path: Path
) -> None:
    folder = tmp_path / "outputs" / "same"
    run(compose_cfg([*BASE, "trainer.max_epochs=1"]), folder)
    before = _snapshot(folder)
    with pytest.raises(ConfigError, match=r"already holds a finished result \(metrics.json\)"):
        run(compose_cfg([*BASE, "trainer.max_epochs=2", "trainer.seed=3"]), folder)
    assert _snapshot(folder) == before  # metrics, history, best.pt and .hydra untouched


def test_a_folder_in_use_by_another_run_is_refused(compose_cfg, tmp_path: Path) -> None:
    folder = tmp_path / "outputs" / "busy"
    with RunFolder(folder):  # another run holds the lock
        with pytest.raises(ConfigError, match=rf"run folder {folder} is in use by another mtlrun"):
            run(compose_cfg([*BASE, "trainer.max_epochs=1"]), folder)
        assert not (folder / "metrics.json").exists()
    assert not (folder / ".lock").exists()  # released and removed
    run(compose_cfg([*BASE, "trainer.max_epochs=1"]), folder)  # free again


def test_an_unfinished_folder_is_only_entered_to_resume_it(compose_cfg, tmp_path: Path) -> None:
    folder = tmp_path / "outputs" / "cut"
    run(compose_cfg([*BASE, "trainer.max_epochs=1"]), folder)
    (folder / "metrics.json").unlink()  # killed hard after epoch 1
    with pytest.raises(ConfigError, match="holds an unfinished run .* trainer.resume=true"):
        run(compose_cfg([*BASE, "trainer.max_epochs=2"]), folder)
    # Killed during a search (kill -9): only checkpoints/search/ holds its state.
    searching = tmp_path / "outputs" / "searching"
    (searching / "checkpoints" / "search").mkdir(parents=True)
    (searching / "checkpoints" / "search" / "phase_000.pt").write_bytes(b"state")
    with pytest.raises(ConfigError, match="holds an unfinished run .* trainer.resume=true"):
        run(compose_cfg([*BASE, "trainer.max_epochs=2"]), searching)
    # A job restarted into its own folder (a launcher after pre-emption) continues it there.
    resumed = run(compose_cfg([*BASE, "trainer.max_epochs=2", "trainer.resume=true"]), folder)
    assert resumed["epochs"]["trained"] == 2
    assert resumed["run"]["resumed_from_dir"] == str(folder.resolve())


def test_run_folder_names_are_readable_when_short_and_safe_else_a_stable_hash() -> None:
    assert safe_dirname("data.n_train=40,trainer.seed=1") == "data.n_train=40,trainer.seed=1"
    assert safe_dirname("") == ""
    long = ",".join(f"trainer.option_{i}=value_{i}" for i in range(18))
    for name in (long, "data.root=../../x", "data.root=/abs/path", "notes=a b"):
        short = safe_dirname(name)
        assert short == "h" + hashlib.sha1(name.encode()).hexdigest()[:10]
        assert short == safe_dirname(name)  # stable
    assert len(safe_dirname(long).encode()) < 255


@pytest.mark.slow
def test_cli_run_with_many_overrides_and_a_relative_root_stays_in_outputs(
    tmp_path: Path, fake_data_root: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    rel = os.path.relpath(fake_data_root / "conll2003", work)
    many = [*TINY_TEXT, *TOY_SMALL, "trainer.max_epochs=1", "trainer.plots=false"]
    many += ["trainer.seed=0", "trainer.batch_size=8", "trainer.grad_clip=4.0"]
    many += ["trainer.precision=fp32", "trainer.eval_batch_size=64", "optim.lr=0.2"]
    many += ["optim.momentum=0.5", "optim.weight_decay=0.0", "backbone.dropout=0.4"]
    many += ["trainer.save_predictions=false", "name=a_rather_long_experiment_name_to_fill"]
    out = mtlrun([*many], work)
    assert out.returncode == 0, out.stderr
    (folder,) = [p.parent for p in work.glob("outputs/*/*/metrics.json")]
    assert folder.name.split("_", 1)[1].startswith("h")  # the hashed form
    assert len(folder.name) < 40
    overrides = (folder / ".hydra" / "overrides.yaml").read_text()
    assert "name=a_rather_long_experiment_name_to_fill" in overrides
    out = mtlrun(["data=conll", f"data.root={rel}", *TINY_TEXT, "trainer.max_epochs=1"], work)
    assert out.returncode == 0, out.stderr
    runs = [p.parent for p in work.glob("outputs/*/*/metrics.json")]
    assert len(runs) == 2 and all((work / "outputs") in p.parents for p in runs)
    assert not list(tmp_path.glob("x*")) and not (tmp_path / "outputs").exists()


@pytest.mark.slow
def test_a_rejected_run_leaves_nothing(tmp_path: Path) -> None:
    out = mtlrun(["trainer.max_epochs=0", "+trainer.max_epoch=3"], tmp_path)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 3  # the header and the two problems, no traceback
    assert not (tmp_path / "outputs").exists()  # not even outputs/ (it made it)


@pytest.mark.slow
def test_an_output_path_that_cannot_hold_folders_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "a_file").write_text("x")
    out = mtlrun(["hydra.run.dir=a_file/run"], tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip() == (
        f"mtlrun: error: cannot create run folders under {tmp_path / 'a_file'}: it is not a "
        "writable folder (choose another with hydra.run.dir=PATH, or run from a writable folder)"
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into read-only folders")
@pytest.mark.slow
def test_a_read_only_output_folder_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "outputs").mkdir()
    (tmp_path / "outputs").chmod(0o555)
    try:
        out = mtlrun([], tmp_path)
    finally:
        (tmp_path / "outputs").chmod(0o755)
    assert out.returncode == 2
    assert out.stderr.startswith("mtlrun: error: cannot create run folders under")
    assert "Traceback" not in out.stderr


def test_a_full_disk_keeps_last_pt_and_writes_the_best_finished_epoch(
    compose_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The epoch-2 checkpoint hits a full disk: last.pt stays at epoch 1, no temp file is left,
    and metrics.json holds epoch 1's test result, marked interrupted with the reason."""
    real_save = torch.save
    saves = {"n": 0}

    def full_disk_save(obj, f, *args, **kwargs):
        saves["n"] += 1
        if saves["n"] > 2:  # epoch 1 writes last.pt and best.pt; then the disk is full
            f.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    folder = tmp_path / "outputs" / "full"
    monkeypatch.setattr(torch, "save", full_disk_save)
    metrics = run(compose_cfg([*BASE, "trainer.max_epochs=3"]), folder)
    last = folder / "checkpoints" / "last.pt"
    assert metrics["interrupted"]["reason"] == (
        f"no space left on {last} (No space left on device)"
    )
    assert metrics["interrupted"]["signal"] is None
    assert "checkpoints/last.pt holds the last whole epoch" in metrics["interrupted"]["note"]
    assert metrics["epochs"]["trained"] == 2 and set(metrics["test"]) == {"pos", "chunk", "ner"}
    monkeypatch.setattr(torch, "save", real_save)
    assert torch.load(last, weights_only=False)["fit"]["epoch"] == 1  # intact, epoch 1
    assert not list(folder.rglob("*.tmp"))
    on_disk = json.loads((folder / "metrics.json").read_text())
    assert on_disk["interrupted"]["reason"].startswith("no space left on")
