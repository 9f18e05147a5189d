"""Shared fixtures: tiny generated data in the real file formats, and config composition."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from mtlrun.config.source import compose_config
from tests.helpers.fakedata import write_conll_dir, write_mnist_family

# Small enough for a 2-core laptop: the structure of every model is kept, only widths shrink.
TINY_TEXT = [
    "backbone.word_dim=8",
    "backbone.char_dim=4",
    "backbone.char_filters=4",
    "backbone.hidden=6",
]
TINY_RESNET = ["backbone.layers=[1,1,1,1]", "backbone.width=4"]
QUICK = ["trainer.max_epochs=2", "trainer.progress=false", "trainer.plots=true"]
TOY_SMALL = ["data.n_train=40", "data.n_valid=12", "data.n_test=12"]
# Read once at import: fixtures below point MTLRUN_DATA at generated files during a test.
REAL_DATA = os.environ.get("MTLRUN_DATA")


@pytest.fixture(autouse=True)
def own_search_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Every test gets its own trainer.search_cache (MTLRUN_SEARCH_CACHE, inherited by the
    CLI subprocesses it starts): no test reuses another's search, none writes under outputs/."""
    root = tmp_path / "search_cache"
    monkeypatch.setenv("MTLRUN_SEARCH_CACHE", str(root))
    return root


@pytest.fixture(scope="session")
def fake_data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A MTLRUN_DATA-style folder: conll2003/ and MNIST/, FashionMNIST/, KMNIST/ raw idx files.

    KMNIST lacks its training images, as on the project's machines.
    """
    root = tmp_path_factory.mktemp("data")
    write_conll_dir(root / "conll2003", {"train": 30, "valid": 10, "test": 10})
    write_mnist_family(root, n_train=80, n_test=40, missing={"kmnist": ["train-images-idx3-ubyte"]})
    return root


@pytest.fixture()
def compose_cfg(monkeypatch: pytest.MonkeyPatch, fake_data_root: Path) -> Callable[..., DictConfig]:
    """Compose the shipped config with overrides, MTLRUN_DATA pointing at the fake data."""
    monkeypatch.setenv("MTLRUN_DATA", str(fake_data_root))
    return compose_config


@pytest.fixture()
def real_data() -> Path:
    """The real data folder (MTLRUN_DATA); the test skips when it is unset or absent."""
    if not REAL_DATA or not Path(REAL_DATA).is_dir():
        pytest.skip("MTLRUN_DATA is not set to a data folder")
    return Path(REAL_DATA).resolve()


@pytest.fixture()
def sigterm_at(monkeypatch: pytest.MonkeyPatch) -> dict:
    """``calls["at"] = n`` raises SIGTERM during the n-th training loss of the next run."""
    from mtlrun.training import loop

    original = loop.task_loss
    calls: dict = {"n": 0, "at": None}

    def counting_loss(logits, target):
        calls["n"] += 1
        if calls["n"] == calls["at"]:
            signal.raise_signal(signal.SIGTERM)
        return original(logits, target)

    monkeypatch.setattr(loop, "task_loss", counting_loss)
    return calls
