"""split(F, i, π) and C_F(i) of seed 001 §3 on a tiny LeNet+BN tree."""

from __future__ import annotations

import pytest
import torch

from mtlrun.backbones.lenet_bn import LeNetBN
from mtlrun.data.base import InputSpec, Task
from mtlrun.methods.hard import HardSharing
from mtlrun.model.paths import MultiTaskModel

SPEC = InputSpec("image", channels=1, height=28, width=28)
TASKS = [Task(n, "accuracy", tuple(str(i) for i in range(10))) for n in ("a", "b", "c")]


def hard_tree() -> MultiTaskModel:
    torch.manual_seed(0)
    return HardSharing().build(LeNetBN(input_spec=SPEC, channels=[3, 4]), TASKS)


def outputs(model: MultiTaskModel, x: torch.Tensor) -> dict[str, torch.Tensor]:
    model.eval()
    with torch.no_grad():
        return model(x)


def test_child_blocks_follow_the_paths() -> None:
    model = hard_tree()
    assert model.child_blocks("conv1") == ["conv2"]
    assert model.child_blocks("conv2") == ["head:a", "head:b", "head:c"]
    assert model.child_blocks("head:a") == []


def test_split_keeps_outputs_and_updates_paths() -> None:
    model = hard_tree()
    x = torch.randn(5, 1, 28, 28)
    before = outputs(model, x)
    names = model.split("conv2", [["head:a", "head:c"], ["head:b"]])
    assert names == ["conv2-1", "conv2-2"]
    assert list(model.blocks)[:3] == ["conv1", "conv2-1", "conv2-2"]
    assert model.paths == {
        "a": ("conv1", "conv2-1", "head:a"),
        "b": ("conv1", "conv2-2", "head:b"),
        "c": ("conv1", "conv2-1", "head:c"),
    }
    after = outputs(model, x)
    for t in before:
        assert torch.equal(before[t], after[t])
    # the next level becomes splittable, and nested copies get nested names
    assert model.child_blocks("conv1") == ["conv2-1", "conv2-2"]
    assert model.split("conv1", [["conv2-1"], ["conv2-2"]]) == ["conv1-1", "conv1-2"]
    assert model.paths["b"] == ("conv1-2", "conv2-2", "head:b")
    after2 = outputs(model, x)
    for t in before:
        assert torch.equal(before[t], after2[t])


def test_each_copy_gets_only_its_groups_gradients() -> None:
    model = hard_tree()
    model.split("conv2", [["head:a"], ["head:b", "head:c"]])
    model.train()
    out = model(torch.randn(4, 1, 28, 28), tasks=["a"])
    out["a"].sum().backward()
    assert all(p.grad is not None for p in model.blocks["conv2-1"].parameters())
    assert all(p.grad is None for p in model.blocks["conv2-2"].parameters())
    model.zero_grad(set_to_none=True)
    out = model(torch.randn(4, 1, 28, 28), tasks=["b", "c"])
    (out["b"].sum() + out["c"].sum()).backward()
    assert all(p.grad is None for p in model.blocks["conv2-1"].parameters())
    assert all(p.grad is not None for p in model.blocks["conv2-2"].parameters())


def test_copies_are_independent_parameters() -> None:
    model = hard_tree()
    model.split("conv2", [["head:a"], ["head:b", "head:c"]])
    w1 = model.blocks["conv2-1"][0].weight
    w2 = model.blocks["conv2-2"][0].weight
    assert torch.equal(w1, w2) and w1.data_ptr() != w2.data_ptr()


@pytest.mark.parametrize(
    "groups",
    [[["head:a"], ["head:b"]], [["head:a", "head:b", "head:c"], []], [["conv1"], ["head:a"]], []],
)
def test_split_refuses_a_non_partition(groups: list[list[str]]) -> None:
    with pytest.raises(ValueError, match="should be a partition of its children"):
        hard_tree().split("conv2", groups)
