"""Tiny backbones and batches shared by the sharing-method tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from mtlrun.backbones.base import Backbone
from mtlrun.backbones.cnn_bilstm import CNNBiLSTM
from mtlrun.backbones.lenet_bn import LeNetBN
from mtlrun.data.base import InputSpec, Task, TextInputs

TASKS = [Task(n, "accuracy", ("x", "y", "z")) for n in ("a", "b", "c")]


def text_batch() -> TextInputs:
    lengths = torch.tensor([5, 3])
    words = torch.randint(2, 20, (2, 5)) * (torch.arange(5) < lengths[:, None])
    chars = torch.randint(2, 10, (2, 5, 4)) * (words[..., None] > 0)
    return TextInputs(words, chars, lengths)


def image_batch() -> torch.Tensor:
    return torch.randn(4, 1, 28, 28)


CASES: dict[str, tuple[Callable[[], Backbone], Callable[[], Any], tuple[str, ...]]] = {
    "cnn_bilstm": (
        lambda: CNNBiLSTM(
            input_spec=InputSpec("text", n_words=20, n_chars=10),
            word_dim=8,
            char_dim=4,
            char_filters=4,
            hidden=6,
        ),
        text_batch,
        ("embed", "bilstm"),
    ),
    "lenet_bn": (
        lambda: LeNetBN(input_spec=InputSpec("image", channels=1, height=28, width=28)),
        image_batch,
        ("conv1", "conv2"),
    ),
}


def grads_by_block(model: Any) -> dict[str, list[torch.Tensor | None]]:
    return {name: [p.grad for p in block.parameters()] for name, block in model.blocks.items()}


def has_signal(grads: list[torch.Tensor | None]) -> bool:
    """Some parameter of the block received a non-zero gradient."""
    return any(g is not None and bool(g.abs().sum() > 0) for g in grads)


def untouched(grads: list[torch.Tensor | None]) -> bool:
    """No parameter of the block received any gradient (not even zeros)."""
    return all(g is None for g in grads)
