"""Checkpoints: atomic save/load, RNG state, config comparison for resuming."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from mtlrun.errors import ConfigError
from mtlrun.training import checkpoint


def test_save_load_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "checkpoints" / "last.pt"  # the folder is created
    state = {
        "model": {"w": torch.arange(6.0).reshape(2, 3), "b": torch.tensor([1, 2])},
        "fit": {"epoch": 3, "history": [{"epoch": 1, "valid/score": 0.5}], "best_score": -1.5},
        "config": {"trainer": {"max_epochs": 3}},
    }
    checkpoint.save(path, state)
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]  # no .tmp left over
    back = checkpoint.load(path)
    assert set(back) == set(state)
    assert torch.equal(back["model"]["w"], state["model"]["w"])
    assert torch.equal(back["model"]["b"], state["model"]["b"])
    assert back["model"]["b"].dtype == torch.int64
    assert back["fit"] == state["fit"]
    assert back["config"] == state["config"]


def test_rng_state_reproduces_draws() -> None:
    torch.manual_seed(123)
    random.seed(5)
    np.random.seed(7)
    saved = checkpoint.rng_state()
    first = (torch.rand(5), random.random(), np.random.rand(3))
    torch.rand(100)  # move every generator on
    random.random()
    np.random.rand(4)
    checkpoint.set_rng_state(saved)
    second = (torch.rand(5), random.random(), np.random.rand(3))
    assert torch.equal(first[0], second[0])
    assert first[1] == second[1]
    assert np.array_equal(first[2], second[2])


def test_rng_state_survives_a_save_load_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    checkpoint.save(tmp_path / "rng.pt", {"rng": checkpoint.rng_state()})
    expected = torch.rand(4)
    checkpoint.set_rng_state(checkpoint.load(tmp_path / "rng.pt")["rng"])
    assert torch.equal(torch.rand(4), expected)


def test_load_garbage_is_a_config_error_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    path.write_bytes(b"this is not a checkpoint")
    with pytest.raises(ConfigError, match=re.escape(f"cannot read checkpoint {path}")):
        checkpoint.load(path)


def test_load_missing_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "last.pt"
    with pytest.raises(ConfigError, match="cannot read checkpoint .*nope"):
        checkpoint.load(path)


def test_config_differences_ignores_resume_free_keys() -> None:
    saved = {
        "trainer": {
            "max_epochs": 3,
            "resume": False,
            "progress": True,
            "eval_batch_size": 256,
            "precision": "fp32",
        },
        "optim": {"lr": 0.1},
        "data": {"name": "toy", "tasks": ["pos", "ner"]},
    }
    current = {
        "trainer": {
            "max_epochs": 10,
            "resume": True,
            "progress": False,
            "eval_batch_size": 64,
            "precision": "fp32",
        },
        "optim": {"lr": 0.1},
        "data": {"name": "toy", "tasks": ["pos"]},
        "notes": "new key",
    }
    assert checkpoint.config_differences(saved, current) == [
        "data.tasks",
        "notes",
        "trainer.eval_batch_size",
    ]
    assert checkpoint.config_differences(saved, saved) == []


def test_config_differences_dotted_names_for_deep_keys() -> None:
    saved = {"method": {"opts": {"density": 0.5, "rounds": 6}}}
    current = {"method": {"opts": {"density": 0.3, "rounds": 6}}}
    assert checkpoint.config_differences(saved, current) == ["method.opts.density"]
    assert checkpoint.config_differences({"a": {"b": 1}}, {"a": 1}) == ["a", "a.b"]


def _run_folder(
    root: Path, name: str, saved: dict, mtime: int, metrics: dict | None = None
) -> Path:
    folder = root / name
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(saved)))
    path = folder / "checkpoints" / "last.pt"
    path.parent.mkdir()
    path.write_bytes(b"truncated")  # never loaded: configs come from .hydra/config.yaml
    os.utime(path, (mtime, mtime))
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def test_find_resumable_picks_the_newest_unfinished_matching_run(tmp_path: Path) -> None:
    config = {"trainer": {"max_epochs": 5}, "optim": {"lr": 0.1}}
    same = {"trainer": {"max_epochs": 3}, "optim": {"lr": 0.1}}
    _run_folder(tmp_path, "old", same, 1_000)
    _run_folder(tmp_path, "stopped", same, 2_000, {"interrupted": {"signal": "SIGTERM"}})
    _run_folder(tmp_path, "finished", same, 3_000, {"test": {"pos": {"accuracy": 0.9}}})
    _run_folder(tmp_path, "diverged", same, 3_500, {"diverged": {"task": "pos"}})
    _run_folder(tmp_path, "other", {"trainer": {"max_epochs": 5}, "optim": {"lr": 0.2}}, 4_000)
    found = checkpoint.find_resumable(tmp_path, config)
    # finished and diverged runs are never continued; the run's own folder is a candidate too
    assert found == [tmp_path / "stopped", tmp_path / "old"]


def test_find_resumable_names_the_keys_of_the_nearest_candidate(tmp_path: Path) -> None:
    _run_folder(tmp_path, "near", {"optim": {"lr": 0.2}, "trainer": {"seed": 0}}, 1_000)
    _run_folder(tmp_path, "far", {"optim": {"lr": 0.3}, "trainer": {"seed": 4}}, 2_000)
    config = {"optim": {"lr": 0.1}, "trainer": {"seed": 0}}
    with pytest.raises(ConfigError) as e:
        checkpoint.find_resumable(tmp_path, config)
    assert f"the nearest, {tmp_path / 'near'}, differs in optim.lr (saved 0.2, now 0.1)" in str(
        e.value
    )
    with pytest.raises(ConfigError, match="no unfinished run with a checkpoint under"):
        checkpoint.find_resumable(tmp_path / "near" / ".hydra", config)


def test_find_resumable_skips_an_unreadable_config_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = {"optim": {"lr": 0.1}}
    _run_folder(tmp_path, "good", config, 1_000)
    bad = _run_folder(tmp_path, "bad", config, 2_000)
    (bad / ".hydra" / "config.yaml").write_text("optim: {lr: [unclosed\n")
    assert checkpoint.find_resumable(tmp_path, config) == [tmp_path / "good"]
    assert str(bad / ".hydra" / "config.yaml") in caplog.text


def test_save_on_a_full_disk_names_the_path_and_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "checkpoints" / "last.pt"
    checkpoint.save(path, {"epoch": 1})
    script = (
        "import resource, sys, torch\n"
        "from pathlib import Path\n"
        "from mtlrun.training import checkpoint\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
        "try:\n"
        f"    checkpoint.save(Path({str(path)!r}), {{'w': torch.zeros(100000)}})\n"
        "except Exception as e:\n"
        "    print(type(e).__name__, e)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.stdout.strip() == f"StorageError no space left on {path} (file size limit reached)"
    assert checkpoint.load(path) == {"epoch": 1}  # the previous checkpoint is intact
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]  # no temp file left


@pytest.mark.parametrize(
    ("decay", "scheduler"),
    [(0.0, ["scheduler=constant"]), (0.05, ["scheduler=inverse_time", "scheduler.decay=0.05"])],
)
def test_a_config_saved_before_the_scheduler_group_resumes_as_the_same_run(
    compose_cfg, decay: float, scheduler: list[str]
) -> None:
    """trainer.lr_decay d (earlier mtlrun) is today's scheduler with the same learning rates,
    and a config without trainer.precision trained in fp32: no difference, so it resumes."""
    from omegaconf import OmegaConf

    from mtlrun.training.checkpoint import config_differences

    now = OmegaConf.to_container(compose_cfg(scheduler), resolve=True)
    before = OmegaConf.to_container(compose_cfg(scheduler), resolve=True)
    del before["scheduler"], before["trainer"]["precision"]
    before["trainer"]["lr_decay"] = decay
    assert config_differences(before, now) == []
    other = OmegaConf.to_container(compose_cfg(["scheduler=inverse_time"]), resolve=True)
    assert config_differences(before, other) == (
        [] if decay == 0.05 else ["scheduler._target_", "scheduler.decay"]
    )
