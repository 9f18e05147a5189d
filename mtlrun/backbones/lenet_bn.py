"""Trimmed LeNet with batch normalisation (seed 001 §4.5) as a factory of blocks.

Two convolutional blocks and one fully-connected layer per task; no shared fully-connected
layer, so the whole trunk is the two conv blocks.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from mtlrun.backbones.base import check_modality, require
from mtlrun.data.base import InputSpec, Task


def _require(ok: bool, message: str) -> None:
    require("LeNetBN", ok, message)


def _conv_block(in_channels: int, out_channels: int, kernel: int, padding: int) -> nn.Sequential:
    """Conv2d -> BatchNorm2d -> ReLU -> MaxPool2d(2)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, padding=padding),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )


class LeNetBN:
    """Trimmed LeNet+BN of seed 001 §4.5 (the 2019 "Hydra" thesis's MNIST backbone).

    Blocks (fresh parameters on every call, from the global torch RNG):
    ``conv1``: images (B, C_in, H, W) -> (B, channels[0], H/2, W/2) ("same" padding, pool 2);
    ``conv2``: -> (B, channels[1], (H/2 - kernel + 1)/2, ...) (no padding, pool 2).
    28x28 inputs with the defaults: (B, 6, 14, 14), then (B, 16, 5, 5).
    Heads: Flatten -> Linear -> logits (B, n_classes).
    """

    modality = "image"
    block_names = ("conv1", "conv2")
    deviations: tuple[str, ...] = ()

    def __init__(
        self,
        *,
        input_spec: InputSpec,
        modality: str = "image",
        channels: Sequence[int] = (6, 16),
        kernel: int = 5,
    ) -> None:
        check_modality("LeNetBN", "image", modality, input_spec)
        channels = tuple(int(c) for c in channels)
        _require(
            len(channels) == 2 and min(channels) >= 1,
            f"`channels` should be two integers >= 1. Found `channels = {list(channels)}`.",
        )
        _require(
            kernel >= 1 and kernel % 2 == 1,
            f"`kernel` should be an odd integer >= 1. Found `kernel = {kernel}`.",
        )
        self.input_spec = input_spec
        self.channels = channels
        self.kernel = kernel
        self.out_shapes = self._out_shapes()

    def _out_shapes(self) -> dict[str, tuple[int, int, int]]:
        """(channels, height, width) of each block's output."""
        spec, k = self.input_spec, self.kernel
        h1, w1 = spec.height // 2, spec.width // 2
        h2, w2 = (h1 - k + 1) // 2, (w1 - k + 1) // 2
        _require(
            h2 >= 1 and w2 >= 1,
            f"{spec.height}x{spec.width} images are too small for `kernel = {k}`.",
        )
        return {"conv1": (self.channels[0], h1, w1), "conv2": (self.channels[1], h2, w2)}

    def make_block(self, name: str) -> nn.Module:
        """A fresh ``conv1`` or ``conv2`` block (see the class docstring)."""
        _require(
            name in self.block_names, f"no block {name!r}; blocks are {list(self.block_names)}."
        )
        if name == "conv1":
            return _conv_block(
                self.input_spec.channels, self.channels[0], self.kernel, self.kernel // 2
            )
        return _conv_block(self.channels[0], self.channels[1], self.kernel, 0)

    def make_head(self, task: Task, in_block: str | None = None) -> nn.Module:
        """A fresh Flatten -> Linear head for ``task`` reading ``in_block`` (default: ``conv2``)."""
        source = in_block or self.block_names[-1]
        _require(
            source in self.out_shapes,
            f"a head cannot read block {source!r}; blocks are {list(self.block_names)}.",
        )
        c, h, w = self.out_shapes[source]
        return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, task.n_classes))
