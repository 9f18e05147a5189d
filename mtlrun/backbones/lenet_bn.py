"""Trimmed LeNet with batch normalisation (seed 001 §4.5) as a factory of blocks.

Two convolutional blocks and one fully-connected layer per task; no shared fully-connected
layer, so the whole trunk is the two conv blocks.

Default layout ``relu_pool_bn``: the authors' ``LeHydra`` (hav4ik/Hydra ``src/models/lenet.py``
with ``hydra_base.py``'s ``Block(..., bn_pillow_planes=c)``): Conv2d(k, no padding) -> ReLU ->
MaxPool2d(2) -> BatchNorm, 20 then 50 channels, heads on 4·4·50 features. The block *ends* in
BatchNorm, as seed 001 §5.2.1 assumes when it reads Z̃ (eq. 5.5) there. The authors' BN
("BatchNormPillow") is an affine-free BatchNorm followed by its own scale γ ~ U(0, 1) and shift
β = 0; here a BatchNorm2d with those initial values (the same function and parameters).

Layout ``bn_relu_pool``: mtlrun's earlier block, Conv2d -> BatchNorm2d -> ReLU -> MaxPool2d(2),
conv1 with "same" padding, PyTorch's initial γ = 1 (use with ``channels=[6, 16]`` for the old net).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mtlrun.backbones.base import check_modality, require
from mtlrun.data.base import InputSpec, Task

LAYOUTS = ("relu_pool_bn", "bn_relu_pool")
AUTHORS_CHANNELS = (20, 50)


def _require(ok: bool, message: str) -> None:
    require("LeNetBN", ok, message)


def _authors_bn(channels: int) -> nn.BatchNorm2d:
    """BatchNorm2d with γ ~ U(0, 1), β = 0 (hydra_base.py ``BatchNormPillow.__init__``)."""
    bn = nn.BatchNorm2d(channels)
    with torch.no_grad():
        bn.weight.uniform_(0.0, 1.0)
        bn.bias.zero_()
    return bn


def _conv_block(
    layout: str, in_channels: int, out_channels: int, kernel: int, padding: int
) -> nn.Sequential:
    """One block in ``layout`` (see the module docstring)."""
    conv = nn.Conv2d(in_channels, out_channels, kernel, padding=padding)
    if layout == "relu_pool_bn":
        return nn.Sequential(conv, nn.ReLU(), nn.MaxPool2d(2), _authors_bn(out_channels))
    return nn.Sequential(conv, nn.BatchNorm2d(out_channels), nn.ReLU(), nn.MaxPool2d(2))


class LeNetBN:
    """Trimmed LeNet+BN of seed 001 §4.5 (the 2019 "Hydra" thesis's MNIST backbone).

    Blocks (fresh parameters on every call, from the global torch RNG), layout ``relu_pool_bn``:
    ``conv1``: images (B, C_in, H, W) -> (B, channels[0], (H - k + 1)/2, (W - k + 1)/2);
    ``conv2``: -> (B, channels[1], (H1 - k + 1)/2, ...). 28x28 inputs with the defaults:
    (B, 20, 12, 12), then (B, 50, 4, 4). Layout ``bn_relu_pool`` pads conv1 ("same"):
    (B, c0, H/2, W/2) first. Heads: Flatten -> Linear -> logits (B, n_classes).
    """

    modality = "image"
    block_names = ("conv1", "conv2")

    def __init__(
        self,
        *,
        input_spec: InputSpec,
        modality: str = "image",
        channels: Sequence[int] = AUTHORS_CHANNELS,
        kernel: int = 5,
        layout: str = "relu_pool_bn",
    ) -> None:
        check_modality("LeNetBN", "image", modality, input_spec)
        channels = tuple(int(c) for c in channels)
        _require(
            layout in LAYOUTS,
            f"`layout` should be one of {', '.join(LAYOUTS)}. Found `layout = {layout}`.",
        )
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
        self.layout = layout
        self.out_shapes = self._out_shapes()
        self.deviations = self._deviations()

    def _deviations(self) -> list[str]:
        out = []
        if self.layout != "relu_pool_bn":
            out.append(
                f"lenet_bn layout={self.layout} (mtlrun's earlier conv -> BN -> ReLU -> pool with "
                "a padded conv1, not the authors' conv -> ReLU -> pool -> BN of lenet.py)"
            )
        if self.channels != AUTHORS_CHANNELS:
            out.append(f"lenet_bn channels={list(self.channels)} (the authors' lenet.py: 20, 50)")
        if self.kernel != 5:
            out.append(f"lenet_bn kernel={self.kernel} (the authors' lenet.py: 5)")
        return out

    def _conv1_padding(self) -> int:
        return self.kernel // 2 if self.layout == "bn_relu_pool" else 0

    def _out_shapes(self) -> dict[str, tuple[int, int, int]]:
        """(channels, height, width) of each block's output."""
        spec, k, pad = self.input_spec, self.kernel, self._conv1_padding()
        h1, w1 = (spec.height + 2 * pad - k + 1) // 2, (spec.width + 2 * pad - k + 1) // 2
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
                self.layout,
                self.input_spec.channels,
                self.channels[0],
                self.kernel,
                self._conv1_padding(),
            )
        return _conv_block(self.layout, self.channels[0], self.channels[1], self.kernel, 0)

    def make_head(self, task: Task, in_block: str | None = None) -> nn.Module:
        """A fresh Flatten -> Linear head for ``task`` reading ``in_block`` (default: ``conv2``).

        The authors' head also ends in LogSoftmax under an NLL loss; mtlrun's cross-entropy on
        the logits is the same loss."""
        source = in_block or self.block_names[-1]
        _require(
            source in self.out_shapes,
            f"a head cannot read block {source!r}; blocks are {list(self.block_names)}.",
        )
        c, h, w = self.out_shapes[source]
        return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, task.n_classes))
