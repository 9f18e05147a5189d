"""``balancer.group=all``: one weighting over the shared blocks of the same tasks together.

For hard sharing this is LibMTL's and the weightings' authors' grouping (all shared parameters
as one vector per task); checked against torchjd's aggregator on the concatenated Jacobian. On
a hierarchical network blocks with different users stay apart and a block of one task gets its
gradient; refused with block outputs; the per-block departure is recorded only per block.
"""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from mtlrun.balancers.db_mtl import DualBalancing
from mtlrun.balancers.imtl import IMTL
from mtlrun.balancers.mgda import MGDA
from mtlrun.balancers.min_norm import min_norm
from mtlrun.balancers.per_block import PerBlock
from mtlrun.errors import ConfigError
from mtlrun.model.paths import MultiTaskModel
from tests.unit.balancers.test_per_block import PER_BLOCK, TASKS, losses_of, model, reference, spec


def balancer(name: str, **over) -> PerBlock:
    node = spec(name)
    factory = instantiate(node["weighting"])
    return PerBlock(TASKS, factory, stat=node.get("stat", "auto"), name=name, **over)


def concatenated_jacobian(m: MultiTaskModel, losses: dict, blocks: list[str]) -> torch.Tensor:
    params = [p for b in blocks for p in m.blocks[b].parameters()]
    rows = []
    for t in losses:
        gs = torch.autograd.grad(losses[t], params, retain_graph=True)
        rows.append(torch.cat([g.flatten() for g in gs]))
    return torch.stack(rows)


def grads_of(m: MultiTaskModel, blocks: list[str]) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for b in blocks for p in m.blocks[b].parameters()])


@pytest.mark.parametrize("name", PER_BLOCK)
def test_all_shared_parameters_get_one_aggregation(name: str) -> None:
    ref = reference(name)
    if ref is None:
        pytest.skip(f"{name} is mtlrun's own weighting (tested in its own file)")
    m = model()
    losses = losses_of(m)
    j = concatenated_jacobian(m, losses, ["trunk", "mid"])
    torch.manual_seed(7)
    expected = ref(j)
    torch.manual_seed(7)
    b = balancer(name, group="all")
    b.backward(losses, m)
    torch.testing.assert_close(grads_of(m, ["trunk", "mid"]), expected, rtol=1e-6, atol=1e-9)
    assert list(b.weightings) == ["trunk+mid"]  # one weighting, named by its blocks


def test_one_group_differs_from_per_block_when_the_blocks_disagree() -> None:
    m = model()
    per_block = MGDA(TASKS, group="block")
    per_block.backward(losses_of(m), m)
    by_block = grads_of(m, ["trunk", "mid"])
    m.zero_grad(set_to_none=True)
    together = MGDA(TASKS, group="all")
    together.backward(losses_of(m), m)
    assert not torch.allclose(by_block, grads_of(m, ["trunk", "mid"]), atol=1e-6)


def hierarchical() -> MultiTaskModel:
    """trunk: a, b, c; mid and mid2: b, c; heads: one task each."""
    torch.manual_seed(0)
    blocks = {
        "trunk": nn.Linear(4, 5),
        "mid": nn.Linear(5, 5),
        "mid2": nn.Linear(5, 3),
        "head:a": nn.Linear(5, 1),
        "head:b": nn.Linear(3, 1),
        "head:c": nn.Linear(3, 1),
    }
    paths = {
        "a": ["trunk", "head:a"],
        "b": ["trunk", "mid", "mid2", "head:b"],
        "c": ["trunk", "mid", "mid2", "head:c"],
    }
    return MultiTaskModel(blocks, paths).double()


def test_blocks_with_other_users_stay_apart_and_heads_keep_their_gradient() -> None:
    m = hierarchical()
    losses = losses_of(m)
    trunk = concatenated_jacobian(m, losses, ["trunk"])
    deep = concatenated_jacobian(m, {t: losses[t] for t in ("b", "c")}, ["mid", "mid2"])
    head_b = concatenated_jacobian(m, {"b": losses["b"]}, ["head:b"])[0]
    b = MGDA(TASKS, group="all")
    b.backward(losses, m)
    assert sorted(b.weightings) == ["mid+mid2", "trunk"]
    for blocks, j in ((["trunk"], trunk), (["mid", "mid2"], deep)):
        alpha = min_norm(j, "projection").weights.to(j.dtype)
        torch.testing.assert_close(grads_of(m, blocks), alpha @ j, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(grads_of(m, ["head:b"]), head_b)


def test_group_all_is_refused_on_block_outputs() -> None:
    with pytest.raises(ConfigError, match=r"balancer\.group"):
        MGDA(TASKS, on="z", group="all")
    with pytest.raises(ConfigError, match=r"balancer\.group.*one of block, all"):
        MGDA(TASKS, group="layers")


def test_the_per_block_departure_is_recorded_only_per_block() -> None:
    assert any("per shared block" in d for d in IMTL(TASKS).deviations)
    assert not any("per shared block" in d for d in IMTL(TASKS, group="all").deviations)
    assert any("own Adam" in d for d in IMTL(TASKS, group="all").deviations)
    assert len(DualBalancing(TASKS).deviations) == 1
    assert DualBalancing(TASKS, group="all").deviations == []


def test_state_round_trip_under_the_group_name() -> None:
    m = model()
    first = DualBalancing(TASKS, group="all")
    first.backward(losses_of(m, 1), m)
    state = first.state_dict()
    assert list(state["blocks"]) == ["trunk+mid"]
    again = DualBalancing(TASKS, group="all")
    again.load_state_dict(state)
    for b, seed in ((first, 2), (again, 2)):
        m.zero_grad(set_to_none=True)
        b.backward(losses_of(m, seed), m)
        if b is first:
            expected = grads_of(m, ["trunk", "mid"])
    torch.testing.assert_close(grads_of(m, ["trunk", "mid"]), expected)
