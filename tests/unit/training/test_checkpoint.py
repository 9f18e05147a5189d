"""Checkpoints: atomic save/load, RNG state, config comparison for resuming."""

from __future__ import annotations

import os
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch

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
        "trainer": {"max_epochs": 3, "resume": False, "progress": True, "lr_decay": 0.0},
        "optim": {"lr": 0.1},
        "data": {"name": "toy", "tasks": ["pos", "ner"]},
    }
    current = {
        "trainer": {"max_epochs": 10, "resume": True, "progress": False, "lr_decay": 0.05},
        "optim": {"lr": 0.1},
        "data": {"name": "toy", "tasks": ["pos"]},
        "notes": "new key",
    }
    assert checkpoint.config_differences(saved, current) == [
        "data.tasks",
        "notes",
        "trainer.lr_decay",
    ]
    assert checkpoint.config_differences(saved, saved) == []


def test_config_differences_dotted_names_for_deep_keys() -> None:
    saved = {"method": {"opts": {"density": 0.5, "rounds": 6}}}
    current = {"method": {"opts": {"density": 0.3, "rounds": 6}}}
    assert checkpoint.config_differences(saved, current) == ["method.opts.density"]
    assert checkpoint.config_differences({"a": {"b": 1}}, {"a": 1}) == ["a", "a.b"]


def test_find_resumable_picks_the_newest_matching_run(tmp_path: Path) -> None:
    config = {"trainer": {"max_epochs": 5}, "optim": {"lr": 0.1}}
    runs = {
        "old": ({"trainer": {"max_epochs": 2}, "optim": {"lr": 0.1}}, 1_000),
        "new": ({"trainer": {"max_epochs": 3}, "optim": {"lr": 0.1}}, 2_000),
        "other": ({"trainer": {"max_epochs": 5}, "optim": {"lr": 0.2}}, 3_000),
        "current": (config, 4_000),
    }
    for name, (saved, mtime) in runs.items():
        path = tmp_path / name / "checkpoints" / "last.pt"
        checkpoint.save(path, {"config": saved})
        os.utime(path, (mtime, mtime))
    found = checkpoint.find_resumable(tmp_path, config, exclude=tmp_path / "current")
    assert found == tmp_path / "new" / "checkpoints" / "last.pt"
    assert checkpoint.find_resumable(tmp_path, {"optim": {"lr": 9}}, tmp_path / "current") is None
