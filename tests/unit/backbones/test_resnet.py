"""ResNet blocks: layout by depth, residual shapes, the AdaShare skip path, argument checks."""

from __future__ import annotations

import pytest
import torch

from mtlrun.backbones.resnet import ResidualBlock, ResNet
from mtlrun.data.base import InputSpec, Task

SPEC = InputSpec("image", channels=1, height=28, width=28)
DIGITS = Task("mnist", "accuracy", tuple(str(i) for i in range(10)))


def test_depth_18_has_a_stem_and_eight_residual_blocks() -> None:
    backbone = ResNet(input_spec=SPEC)
    assert len(backbone.block_names) == 1 + 8
    assert backbone.block_names[:4] == ("stem", "layer1_0", "layer1_1", "layer2_0")
    assert backbone.block_names[-1] == "layer4_1"


def test_depth_34_and_layers_override() -> None:
    assert len(ResNet(input_spec=SPEC, depth=34).block_names) == 1 + 16
    assert len(ResNet(input_spec=SPEC, depth=50, layers=[1, 2, 1, 1]).block_names) == 1 + 5


def test_tiny_forward_and_skip_shapes() -> None:
    backbone = ResNet(input_spec=SPEC, layers=[1, 1, 1, 1], width=8)
    x = torch.randn(2, 1, 28, 28)
    sizes = {"stem": (8, 28), "layer1_0": (8, 28), "layer2_0": (16, 14), "layer3_0": (32, 7)}
    sizes["layer4_0"] = (64, 4)
    for name in backbone.block_names:
        block = backbone.make_block(name)
        if isinstance(block, ResidualBlock):
            assert block.skip(x).shape == block(x).shape
        x = block(x)
        channels, side = sizes[name]
        assert x.shape == (2, channels, side, side)
    assert backbone.make_head(DIGITS)(x).shape == (2, 10)


def test_downsample_only_where_the_shape_changes() -> None:
    backbone = ResNet(input_spec=SPEC, layers=[2, 2, 1, 1], width=8)
    with_shortcut = {
        n for n in backbone.block_names[1:] if backbone.make_block(n).downsample is not None
    }
    assert with_shortcut == {"layer2_0", "layer3_0", "layer4_0"}
    block = backbone.make_block("layer1_1")
    x = torch.randn(1, 8, 6, 6)
    assert block.skip(x) is x


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        ({"depth": 50}, r"`depth` should be one of \[18, 34\]"),
        ({"layers": [1, 1, 1]}, "`layers` should be 4 integers >= 1"),
        ({"layers": [1, 0, 1, 1]}, "`layers` should be 4 integers >= 1"),
        ({"width": 0}, "`width` should be >= 1"),
        ({"modality": "text"}, "`modality` should be 'image'"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], text: str) -> None:
    with pytest.raises(ValueError, match=text):
        ResNet(input_spec=SPEC, **kwargs)  # type: ignore[arg-type]


def test_rgb_32x32_images_size_the_stem_from_the_input_spec() -> None:
    """CIFAR-shaped inputs (data=vision): the stem reads 3 channels, the head any size."""
    backbone = ResNet(
        input_spec=InputSpec("image", channels=3, height=32, width=32), width=4, layers=[1, 1, 1, 1]
    )
    stem = backbone.make_block("stem")
    assert stem[0].in_channels == 3
    x = stem(torch.randn(2, 3, 32, 32))
    for name in backbone.block_names[1:]:
        x = backbone.make_block(name)(x)
    assert x.shape == (2, 32, 4, 4)  # 32 -> 32 -> 16 -> 8 -> 4
    assert backbone.make_head(DIGITS)(x).shape == (2, 10)
