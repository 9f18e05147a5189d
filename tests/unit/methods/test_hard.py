"""Hard sharing: one trunk for every task, one head each; every task's loss reaches the trunk."""

from __future__ import annotations

import pytest
import torch

from mtlrun.methods.hard import HardSharing
from tests.unit.methods._cases import CASES, TASKS, grads_by_block, has_signal, untouched


@pytest.mark.parametrize("case", list(CASES))
def test_blocks_paths_and_sharing(case: str) -> None:
    make_backbone, _, trunk = CASES[case]
    model = HardSharing().build(make_backbone(), TASKS)
    assert list(model.blocks) == [*trunk, "head:a", "head:b", "head:c"]
    assert model.paths == {t: (*trunk, f"head:{t}") for t in "abc"}
    assert model.shared_blocks() == list(trunk)
    assert model.trunk_blocks() == list(trunk)
    # One module object per trunk block, not one per task.
    assert len({id(m) for m in model.blocks.values()}) == len(trunk) + 3


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("task", ["a", "c"])
def test_one_task_loss_reaches_the_trunk_and_only_its_head(case: str, task: str) -> None:
    torch.manual_seed(0)
    make_backbone, make_batch, trunk = CASES[case]
    model = HardSharing().build(make_backbone(), TASKS)
    out = model(make_batch())
    out[task].pow(2).mean().backward()
    grads = grads_by_block(model)
    for block in trunk:
        assert has_signal(grads[block]), block
    assert has_signal(grads[f"head:{task}"])
    for other in {"a", "b", "c"} - {task}:
        assert untouched(grads[f"head:{other}"]), other


@pytest.mark.parametrize("case", list(CASES))
def test_trunk_gradient_is_the_sum_of_the_task_gradients(case: str) -> None:
    """Shared blocks accumulate every task's gradient (nothing is detached per task)."""
    torch.manual_seed(0)
    make_backbone, make_batch, trunk = CASES[case]
    model = HardSharing().build(make_backbone(), TASKS).eval()  # deterministic (dropout, BN)
    batch = make_batch()
    params = [p for b in trunk for p in model.blocks[b].parameters()]
    out = model(batch)
    per_task = [torch.autograd.grad(out[t].pow(2).mean(), params, retain_graph=True) for t in "abc"]
    total = torch.autograd.grad(sum(out[t].pow(2).mean() for t in "abc"), params)
    for k, g in enumerate(total):
        assert torch.allclose(g, sum(pt[k] for pt in per_task), atol=1e-6)
