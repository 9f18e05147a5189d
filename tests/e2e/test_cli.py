"""The ``mtlrun`` command end to end, in a temporary folder, as a user runs it."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TINY_TEXT, TOY_SMALL

pytestmark = pytest.mark.slow

QUICK_CLI = [*TINY_TEXT, *TOY_SMALL, "trainer.max_epochs=2"]


def mtlrun(args: list[str], cwd: Path, env: dict[str, str] | None = None, module: bool = False):
    cmd = (
        [sys.executable, "-m", "mtlrun"]
        if module
        else [str(Path(sys.executable).parent / "mtlrun")]
    )
    full_env = {**os.environ, "HYDRA_FULL_ERROR": "0", **(env or {})}
    return subprocess.run(
        cmd + args, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=300
    )


def only_run_dir(root: Path) -> Path:
    dirs = [p.parent for p in root.glob("outputs/*/*/metrics.json")]
    assert len(dirs) == 1, dirs
    return dirs[0]


def test_help_lists_groups(tmp_path: Path) -> None:
    out = mtlrun(["--help"], tmp_path)
    assert out.returncode == 0
    for group in (
        "data:",
        "backbone:",
        "method:",
        "balancer:",
        "optim:",
        "trainer:",
        "experiment:",
    ):
        assert group in out.stdout
    assert "mtlrun: multi-task learning experiments" in out.stdout


def test_cfg_job_prints_composed_config(tmp_path: Path) -> None:
    out = mtlrun(["data=conll", "--cfg", "job"], tmp_path)
    assert out.returncode == 0
    assert "_target_: mtlrun.data.tagging.conll_data" in out.stdout
    assert "batch_size: 10" in out.stdout
    assert not (tmp_path / "outputs").exists()


def test_toy_run_writes_every_output(tmp_path: Path) -> None:
    out = mtlrun(QUICK_CLI, tmp_path)
    assert out.returncode == 0, out.stderr
    run_dir = only_run_dir(tmp_path)
    assert "data.n_train=40" in run_dir.name  # run dirs are named from their overrides
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics["test"]) == {"pos", "chunk", "ner"}
    assert set(metrics["test"]["ner"]) >= {"f1", "precision", "recall"}
    assert metrics["params"]["used"] == metrics["params"]["per_task"]["pos"] > 0
    assert metrics["time"]["train_s"] > 0 and metrics["time"]["search_s"] is None
    assert metrics["run"]["seed"] == 0 and metrics["run"]["command"].startswith("mtlrun ")
    rows = list(csv.DictReader((run_dir / "history.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert "valid/ner/f1" in rows[0] and "train/loss/pos" in rows[0]
    for name in ("pos", "chunk", "ner"):
        lines = (run_dir / "predictions" / f"test_{name}.txt").read_text().splitlines()
        assert sum(1 for line in lines if not line) == 12  # one blank line per test sentence
        assert all(len(line.split()) == 3 for line in lines if line)
    assert (run_dir / "checkpoints" / "last.pt").stat().st_size > 0
    assert (run_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (run_dir / ".hydra" / "config.yaml").is_file()


def test_python_dash_m_is_the_same_command(tmp_path: Path) -> None:
    out = mtlrun(["--cfg", "job", "method=single"], tmp_path, module=True)
    assert out.returncode == 0
    assert "SingleTask" in out.stdout


def test_multirun_writes_one_dir_per_job(tmp_path: Path) -> None:
    out = mtlrun(["-m", "method=single,hard", *QUICK_CLI[:-1], "trainer.max_epochs=1"], tmp_path)
    assert out.returncode == 0, out.stderr
    found = sorted(tmp_path.glob("outputs/multirun/*/*/*/metrics.json"))
    assert len(found) == 2
    used = sorted(json.loads(p.read_text())["params"]["used"] for p in found)
    assert used[1] == 3 * used[0]  # single = three encoders, hard = one
    assert any("method=single" in str(p) for p in found)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["data=conll", "backbone=lenet_bn"], "Allowed backbones for data=conll: ['cnn_bilstm']"),
        (["trainer.max_epoch=3"], "trainer.max_epoch"),
        (["trainer.batch_size=ten"], "trainer.batch_size"),
        (["method=nonexistent"], "Available options in 'method'"),
        (["data=conll", "data.root=/nonexistent"], "CoNLL-2003 files missing in /nonexistent"),
        (["trainer.lr_decay=0.05"], "scheduler=inverse_time scheduler.decay=X"),
    ],
)
def test_errors_are_short_and_non_zero(tmp_path: Path, args: list[str], message: str) -> None:
    out = mtlrun(args, tmp_path)
    assert out.returncode != 0
    text = out.stdout + out.stderr
    assert message in text
    assert "Traceback" not in text


def test_missing_kmnist_training_images(tmp_path: Path, fake_data_root: Path) -> None:
    env = {"MTLRUN_DATA": str(fake_data_root)}
    out = mtlrun(["data=mnist3", "trainer.max_epochs=1"], tmp_path, env=env)
    assert out.returncode == 2
    assert "KMNIST/raw/train-images-idx3-ubyte" in out.stderr
    assert (
        "data.tasks=[mnist,fashion]" in out.stderr and "data.missing_train=split_test" in out.stderr
    )
