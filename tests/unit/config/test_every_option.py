"""Every YAML of every config group composes, validates and (for model groups) runs on tiny data.

New files under conf/<group>/ are enrolled automatically.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mtlrun.config.validate import validate
from mtlrun.run import run
from tests.conftest import QUICK, TINY_RESNET, TINY_TEXT, TOY_SMALL

CONF = Path(__file__).resolve().parents[3] / "conf"
GROUPS = ["data", "backbone", "method", "balancer", "optim", "trainer", "experiment"]


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def _fitting(group: str, option: str) -> list[str]:
    """Overrides that make a run of this option small and consistent."""
    if group == "experiment":
        return []
    if group == "backbone" and option != "cnn_bilstm":
        extra = TINY_RESNET if option == "resnet" else []
        return ["data=mnist3", "data.tasks=[mnist,fashion]", "data.valid_size=16", *extra]
    if group == "data" and option == "mnist3":
        return ["data.tasks=[mnist,fashion]", "data.valid_size=16"]
    if group == "data" and option == "vision":
        return ["data.tasks={mnist:MNIST,fashion:FashionMNIST}", "data.valid_size=16"]
    if group == "data" and option == "python":
        return ["data.factory=tests.helpers.my_tasks:make_tasks", "data.tasks=[quadrant,size]"]
    if group == "data" and option == "toy":
        return [*TINY_TEXT, *TOY_SMALL]
    if group == "data":
        return TINY_TEXT
    if group == "method" and option in IMAGE_METHOD:
        return [*IMAGE_METHOD[option], *FAST_METHOD.get(option, [])]
    return [*TINY_TEXT, *TOY_SMALL, *FAST_METHOD.get(option, [])]


# Methods that need an image backbone: mnist3 with two tasks and a small backbone.
MNIST_TWO = ["data=mnist3", "data.tasks=[mnist,fashion]", "data.valid_size=16"]
IMAGE_METHOD = {
    "adashare": [*MNIST_TWO, "backbone=resnet", *TINY_RESNET],
    "tree_search": [*MNIST_TWO, "backbone=lenet_bn"],
}


# Searches shortened to one epoch per phase: the structure runs, the budget stays small.
FAST_METHOD = {
    "sparse_ste": ["method.search_epochs=1", "method.finetune_epochs=1", "method.warmup_epochs=1"],
    "sparse_imp": ["method.rounds=2", "method.prune_epochs=1", "method.final_density=0.25"],
    "single_subnet": ["method.rounds=2", "method.prune_epochs=1", "method.final_density=0.25"],
    "ste_fit": ["method.epochs=3", "method.dim=50", "method.n_samples=100"],
    "tree_search": [
        "method.n_splits=1",
        "method.peel_epochs=1",
        "method.max_stationary_epochs=1",
        "method.similarity_batches=1",
    ],
    "adashare": [
        "method.warmup_epochs=1",
        "method.curriculum_speed=1",
        "method.policy_epochs=5",
        "method.n_samples=2",
    ],
}


CASES = [(g, o) for g in GROUPS for o in _options(g)]


@pytest.mark.parametrize(("group", "option"), CASES, ids=[f"{g}={o}" for g, o in CASES])
def test_option_composes_and_validate_raises_nothing(compose_cfg, group: str, option: str) -> None:
    """The point is that nothing raises: composing fails on a bad YAML or schema key, and
    ``validate`` raises one ConfigError for any bad value (its messages are tested elsewhere)."""
    extra = ["data.missing_train=split_test"] if option.startswith("mnist3") else []
    cfg = compose_cfg([f"{group}={option}", *_fitting(group, option), *extra])
    validate(cfg)


RUN_CASES = [
    (g, o) for g in ("data", "backbone", "method", "balancer", "optim") for o in _options(g)
]


@pytest.mark.parametrize(("group", "option"), RUN_CASES, ids=[f"{g}={o}" for g, o in RUN_CASES])
def test_option_runs_on_tiny_data(compose_cfg, tmp_path: Path, group: str, option: str) -> None:
    cfg = compose_cfg(
        [
            f"{group}={option}",
            *_fitting(group, option),
            *QUICK,
            "trainer.max_epochs=1",
            "trainer.plots=false",
            "data.limit_train=16",
        ]
    )
    metrics = run(cfg, tmp_path)
    assert (tmp_path / "metrics.json").is_file()
    if "test" not in metrics:  # an experiment that trains no multi-task network (ste_fit)
        return
    assert set(metrics["test"]) == set(cfg.data.tasks)
    assert metrics["params"]["used"] > 0
    assert (tmp_path / "metrics.json").is_file()
