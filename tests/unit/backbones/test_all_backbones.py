"""Properties every backbone must have: fresh blocks, seeded determinism, gradients, accounting."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from mtlrun.backbones.accounting import count_parameters, counted_parameters
from mtlrun.backbones.base import Backbone
from mtlrun.backbones.cnn_bilstm import CNNBiLSTM
from mtlrun.backbones.lenet_bn import LeNetBN
from mtlrun.backbones.resnet import ResNet
from mtlrun.data.base import InputSpec, Task, TextInputs

TEXT = InputSpec("text", n_words=20, n_chars=15)
IMAGE = InputSpec("image", channels=1, height=28, width=28)
TASK = Task("t", "accuracy", ("a", "b", "c"))


def text_batch() -> tuple[TextInputs, torch.Tensor]:
    lengths = torch.tensor([4, 2])
    words = torch.randint(2, 20, (2, 4)) * (torch.arange(4) < lengths[:, None])
    chars = torch.randint(2, 15, (2, 4, 5)) * (words[..., None] > 0)
    chars[..., 3:] = 0  # char padding inside the real words too
    targets = torch.randint(0, 3, (2, 4)).masked_fill(words == 0, -100)
    return TextInputs(words, chars, lengths), targets


def image_batch() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(4, 1, 28, 28), torch.randint(0, 3, (4,))


BACKBONES: dict[str, tuple[Callable[[], Backbone], Callable[[], tuple[Any, torch.Tensor]]]] = {
    "cnn_bilstm": (
        lambda: CNNBiLSTM(
            input_spec=TEXT, word_dim=4, char_dim=3, char_filters=5, hidden=6, dropout=0.0
        ),
        text_batch,
    ),
    "lenet_bn": (lambda: LeNetBN(input_spec=IMAGE, channels=[2, 3]), image_batch),
    "resnet": (lambda: ResNet(input_spec=IMAGE, layers=[1, 1, 1, 1], width=4), image_batch),
}


@pytest.fixture(params=list(BACKBONES))
def case(request: pytest.FixtureRequest) -> tuple[Backbone, Callable[[], tuple[Any, torch.Tensor]]]:
    make, batch = BACKBONES[request.param]
    return make(), batch


def flat(module: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in module.parameters()])


def test_every_block_is_fresh_and_seeded(case: tuple[Backbone, Any]) -> None:
    backbone, _ = case
    for name in backbone.block_names:
        torch.manual_seed(1)
        first, second = backbone.make_block(name), backbone.make_block(name)
        torch.manual_seed(1)
        again = backbone.make_block(name)
        assert not set(map(id, first.parameters())) & set(map(id, second.parameters()))
        assert not torch.equal(flat(first), flat(second)), name
        assert torch.equal(flat(first), flat(again)), name


def test_loss_reaches_every_counted_parameter(case: tuple[Backbone, Any]) -> None:
    backbone, make_batch = case
    torch.manual_seed(0)
    blocks = [backbone.make_block(name) for name in backbone.block_names]
    head = backbone.make_head(TASK)
    x, targets = make_batch()
    for block in blocks:
        x = block(x)
    logits = head(x)
    loss = nn.functional.cross_entropy(logits.reshape(-1, 3), targets.reshape(-1))
    loss.backward()
    for module in [*blocks, head]:
        for name, param in counted_parameters(module):
            assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_heads_are_fresh(case: tuple[Backbone, Any]) -> None:
    backbone, _ = case
    first, second = backbone.make_head(TASK), backbone.make_head(TASK)
    assert not torch.equal(flat(first), flat(second))


def test_unknown_block_is_refused(case: tuple[Backbone, Any]) -> None:
    backbone, _ = case
    with pytest.raises(ValueError, match="no block 'nope'"):
        backbone.make_block("nope")


class Inner(nn.Module):
    uncounted = ("table",)

    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Embedding(10, 3)  # 30, not counted
        self.proj = nn.Linear(3, 2)  # 8


class Outer(nn.Module):
    uncounted = ("skipped.0",)

    def __init__(self) -> None:
        super().__init__()
        self.inner = Inner()
        self.skipped = nn.Sequential(nn.Linear(4, 4))  # 20, not counted (dotted name)
        self.tied = nn.Linear(3, 2)
        self.tied.weight = self.inner.proj.weight  # counted once
        # 2 (tied.bias)


def test_accounting_respects_nested_uncounted_and_tied_parameters() -> None:
    names = [name for name, _ in counted_parameters(Outer())]
    assert names == ["inner.proj.weight", "inner.proj.bias", "tied.bias"]
    assert count_parameters(Outer()) == 8 + 2


def test_accounting_refuses_a_misspelt_uncounted_name() -> None:
    class Typo(nn.Module):
        uncounted = ("tabel",)

    with pytest.raises(ValueError, match="'tabel', which is not a submodule"):
        count_parameters(Typo())
