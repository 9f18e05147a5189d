"""train_subset: disjoint parts of each task's training set that together cover it; the
evaluation splits stay whole (AdaShare's policy split)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mtlrun.data.images import mnist3_data
from mtlrun.data.subset import split_indices
from mtlrun.data.tagging import toy_data
from mtlrun.errors import ConfigError


def test_split_indices_are_disjoint_cover_and_depend_on_the_seed() -> None:
    held = split_indices(50, 0.2, seed=3, part="held_out")
    rest = split_indices(50, 0.2, seed=3, part="rest")
    assert len(held) == 10 and len(rest) == 40
    assert not set(held.tolist()) & set(rest.tolist())
    assert sorted(held.tolist() + rest.tolist()) == list(range(50))
    assert torch.equal(held, split_indices(50, 0.2, seed=3, part="held_out"))
    assert not torch.equal(held, split_indices(50, 0.2, seed=4, part="held_out"))
    assert len(split_indices(3, 0.01, seed=0, part="held_out")) == 1  # both parts non-empty
    assert len(split_indices(3, 0.99, seed=0, part="rest")) == 1
    with pytest.raises(ConfigError, match="cannot split a training set of 1"):
        split_indices(1, 0.5, seed=0, part="rest")


def _rows(x: torch.Tensor) -> set[bytes]:
    return {row.numpy().tobytes() for row in x}


def test_image_parts_are_disjoint_per_task_and_eval_is_unchanged(fake_data_root: Path) -> None:
    data = mnist3_data(str(fake_data_root), tasks=["mnist", "fashion"], valid_size=16)
    held = data.train_subset(0.25, seed=0, part="held_out")
    rest = data.train_subset(0.25, seed=0, part="rest")
    for task, (x, _) in data.data["train"].items():
        a, b = held.data["train"][task][0], rest.data["train"][task][0]
        assert len(a) + len(b) == len(x) and len(a) == round(0.25 * len(x))
        rows = sorted(r.numpy().tobytes() for r in torch.cat([a, b]))
        assert rows == sorted(r.numpy().tobytes() for r in x)  # together: every image once
    assert held.sizes()["train"] == {"mnist": 16, "fashion": 16}
    assert held.sizes()["valid"] == data.sizes()["valid"]
    assert held.data["test"] is data.data["test"]
    assert data.sizes()["train"] == {"mnist": 64, "fashion": 64}  # the original is untouched
    steps = list(held.train_steps(8, epoch=0, seed=0))
    assert len(steps) == 2 and all(len(groups) == 2 for groups in steps)
    seen = _rows(torch.cat([g[0][0] for g in steps]))  # mnist's inputs over the epoch
    assert seen <= _rows(held.data["train"]["mnist"][0])


def test_text_parts_are_disjoint_and_cover_the_sentences() -> None:
    data = toy_data(tasks=["pos", "ner"], n_train=30, n_valid=10, n_test=10)
    held = data.train_subset(0.2, seed=1, part="held_out")
    rest = data.train_subset(0.2, seed=1, part="rest")
    ids = {id(s) for s in data.sentences["train"]}
    a = {id(s) for s in held.sentences["train"]}
    b = {id(s) for s in rest.sentences["train"]}
    assert not a & b and a | b == ids and len(a) == 6
    assert held.steps_per_epoch(4) == 2
    assert held.sentences["valid"] is data.sentences["valid"]
    assert held.input_spec == data.input_spec  # vocabularies of the whole training split


def test_adashare_names_its_keys_when_the_training_set_is_too_small_to_split() -> None:
    """A training set of 1 (``data.limit_train=1``) cannot give AdaShare its two parts."""
    from mtlrun.methods.adashare import policy_parts

    data = toy_data(n_train=3, n_valid=2, n_test=2, limit_train=1)
    with pytest.raises(ConfigError) as info:
        policy_parts(data, 0.2, seed=0)
    assert str(info.value) == (
        "`method.policy_split` (0.2) holds part of the training set out for the policy, and both "
        "parts need at least one example, but the training set has 1. Raise `data.limit_train` "
        "to 2 or more (or set it to null), or use a method without a policy split (e.g. "
        "method=hard)."
    )
    weights, policy = policy_parts(toy_data(n_train=2, n_valid=2, n_test=2), 0.2, seed=0)
    assert (weights.steps_per_epoch(1), policy.steps_per_epoch(1)) == (1, 1)
