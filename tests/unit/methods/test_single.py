"""Single-task learning: a full private network per task; gradients never cross tasks."""

from __future__ import annotations

import pytest
import torch

from mtlrun.backbones.accounting import count_parameters
from mtlrun.methods.single import SingleTask
from tests.unit.methods._cases import CASES, TASKS, grads_by_block, has_signal, untouched


@pytest.mark.parametrize("case", list(CASES))
def test_blocks_paths_and_no_sharing(case: str) -> None:
    make_backbone, _, trunk = CASES[case]
    model = SingleTask().build(make_backbone(), TASKS)
    expected = [name for t in "abc" for name in (*(f"{b}:{t}" for b in trunk), f"head:{t}")]
    assert list(model.blocks) == expected
    assert model.paths == {t: (*(f"{b}:{t}" for b in trunk), f"head:{t}") for t in "abc"}
    assert model.shared_blocks() == []
    for name in model.blocks:
        assert len(model.users(name)) == 1
    # Every task's copy has the same size, and the copies are distinct modules.
    for b in trunk:
        sizes = {count_parameters(model.blocks[f"{b}:{t}"]) for t in "abc"}
        assert len(sizes) == 1
        assert len({id(model.blocks[f"{b}:{t}"]) for t in "abc"}) == 3


@pytest.mark.parametrize("case", list(CASES))
def test_copies_are_initialised_independently(case: str) -> None:
    torch.manual_seed(0)
    make_backbone, _, trunk = CASES[case]
    model = SingleTask().build(make_backbone(), TASKS)
    first = next(iter(model.blocks[f"{trunk[-1]}:a"].parameters()))
    second = next(iter(model.blocks[f"{trunk[-1]}:b"].parameters()))
    assert first.shape == second.shape and not torch.equal(first, second)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("task", ["a", "b"])
def test_one_task_loss_reaches_only_its_own_blocks(case: str, task: str) -> None:
    torch.manual_seed(0)
    make_backbone, make_batch, trunk = CASES[case]
    model = SingleTask().build(make_backbone(), TASKS)
    out = model(make_batch())
    out[task].pow(2).mean().backward()
    grads = grads_by_block(model)
    for name in model.blocks:
        if model.users(name) == [task]:
            assert has_signal(grads[name]), name
        else:
            assert untouched(grads[name]), name
    assert sum(has_signal(g) for g in grads.values()) == len(trunk) + 1
