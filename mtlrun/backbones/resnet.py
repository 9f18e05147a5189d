"""ResNet with a CIFAR-style stem for small images (28x28 grayscale, 32x32 RGB, …), one block
per residual block (for AdaShare).

He et al. 2016 layout (torchvision's BasicBlock); AdaShare (Sun et al. 2020, seed 002) runs or
skips each residual block per task, so every residual block is its own block here and offers
:meth:`ResidualBlock.skip`.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, conv1x1, conv3x3

from mtlrun.backbones.base import check_modality, require
from mtlrun.data.base import InputSpec, Task

LAYERS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}  # residual blocks per stage, by depth
STRIDES = (1, 2, 2, 2)
WIDTH_FACTORS = (1, 2, 4, 8)


class ResidualBlock(BasicBlock):
    """torchvision's BasicBlock (two 3x3 convs + shortcut): x (B, C_in, H, W) -> (B, C, H/s, W/s).

    :meth:`skip` is what the block computes when a task skips it (AdaShare): the shortcut alone.
    """

    def skip(self, x: Tensor) -> Tensor:
        """The shortcut only: ``downsample(x)`` when the block changes shape, else ``x``.

        Same shape as ``forward(x)``, so later blocks run unchanged on a skipped block's output.
        """
        return self.downsample(x) if self.downsample is not None else x


def _require(ok: bool, message: str) -> None:
    require("ResNet", ok, message)


def _init_weights(module: nn.Module) -> nn.Module:
    """torchvision's ResNet initialisation: Kaiming-normal convs (fan_out), BN scale 1, shift 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return module


class ResNet:
    """ResNet-18/34 for small images (METHODS.md §3), the AdaShare backbone.

    Blocks (fresh parameters on every call, from the global torch RNG):
    ``stem``: images (B, C_in, H, W) -> (B, width, H, W) (3x3 conv stride 1, BN, ReLU; no
    max-pool; C_in is ``input_spec.channels``); ``layer{s}_{i}`` for stage s = 1..4 and block i:
    a :class:`ResidualBlock` with ``width * 2**(s-1)`` channels, the first block of stages 2-4
    halving H and W (stride 2). 28x28 inputs: 28 -> 28 -> 14 -> 7 -> 4; 32x32: 32 -> 32 -> 16
    -> 8 -> 4. Heads: global average pool -> Linear -> (B, n_classes), for any input size.
    ``depth`` 18 or 34 picks the blocks per stage; ``layers`` (4 ints) overrides it.
    """

    modality = "image"
    # AdaShare's own code (``models/deeplab_resnet.py``) runs a dilated DeepLab ResNet with
    # per-task ASPP heads for dense prediction; small-image classification needs this stem.
    deviations: Sequence[str] = (
        "ResNet for small images (3x3 stride-1 stem, no max-pool, pooled linear heads), not "
        "the authors' DeepLab-ResNet with ASPP heads (their tasks are dense prediction)",
    )

    def __init__(
        self,
        *,
        input_spec: InputSpec,
        modality: str = "image",
        depth: int = 18,
        layers: Sequence[int] | None = None,
        width: int = 64,
    ) -> None:
        check_modality("ResNet", "image", modality, input_spec)
        _require(width >= 1, f"`width` should be >= 1. Found `width = {width}`.")
        self.input_spec = input_spec
        self.width = width
        self.layers = self._layers(depth, layers)
        # name -> (in channels, out channels, stride) of each residual block
        self.residual_specs = self._residual_specs()
        self.block_names: tuple[str, ...] = ("stem", *self.residual_specs)

    @staticmethod
    def _layers(depth: int, layers: Sequence[int] | None) -> tuple[int, ...]:
        if layers is not None:
            counts = tuple(int(n) for n in layers)
            _require(
                len(counts) == 4 and min(counts) >= 1,
                f"`layers` should be 4 integers >= 1. Found `layers = {list(counts)}`.",
            )
            return counts
        _require(
            depth in LAYERS,
            f"`depth` should be one of {sorted(LAYERS)} (or set `layers`). Found `depth = {depth}`.",
        )
        return LAYERS[depth]

    def _residual_specs(self) -> dict[str, tuple[int, int, int]]:
        specs: dict[str, tuple[int, int, int]] = {}
        in_channels = self.width
        for stage, (count, stride, factor) in enumerate(
            zip(self.layers, STRIDES, WIDTH_FACTORS, strict=True), start=1
        ):
            out_channels = self.width * factor
            for i in range(count):
                specs[f"layer{stage}_{i}"] = (in_channels, out_channels, stride if i == 0 else 1)
                in_channels = out_channels
        return specs

    def make_block(self, name: str) -> nn.Module:
        """A fresh ``stem`` or residual block (see the class docstring)."""
        _require(
            name in self.block_names, f"no block {name!r}; blocks are {list(self.block_names)}."
        )
        if name == "stem":
            stem = nn.Sequential(
                conv3x3(self.input_spec.channels, self.width),
                nn.BatchNorm2d(self.width),
                nn.ReLU(),  # not in place: hooks on the BN output must see it unchanged
            )
            return _init_weights(stem)
        in_channels, out_channels, stride = self.residual_specs[name]
        downsample = None
        if stride != 1 or in_channels != out_channels:
            downsample = nn.Sequential(
                conv1x1(in_channels, out_channels, stride), nn.BatchNorm2d(out_channels)
            )
        return _init_weights(ResidualBlock(in_channels, out_channels, stride, downsample))

    def out_channels(self, name: str) -> int:
        """Channels of block ``name``'s output."""
        return self.width if name == "stem" else self.residual_specs[name][1]

    def make_head(self, task: Task, in_block: str | None = None) -> nn.Module:
        """A fresh pool -> Linear head for ``task`` reading ``in_block`` (default: the last block)."""
        source = in_block or self.block_names[-1]
        _require(
            source in self.block_names,
            f"a head cannot read block {source!r}; blocks are {list(self.block_names)}.",
        )
        return nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(self.out_channels(source), task.n_classes),
        )
