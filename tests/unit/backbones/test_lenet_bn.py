"""LeNetBN blocks: the authors' layout (hav4ik/Hydra src/models/lenet.py), the earlier layout,
shapes on 28x28 images and argument checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mtlrun.backbones.lenet_bn import LeNetBN
from mtlrun.data.base import InputSpec, Task
from mtlrun.methods.tree_search import last_bn

SPEC = InputSpec("image", channels=1, height=28, width=28)
DIGITS = Task("mnist", "accuracy", tuple(str(i) for i in range(10)))


def test_default_is_the_authors_lenet() -> None:
    # lenet.py: conv(1, 20, 5) -> ReLU -> pool 2 -> BN pillow; conv(20, 50, 5) -> ReLU ->
    # pool 2 -> BN pillow; heads Linear(4*4*50, n)
    backbone = LeNetBN(input_spec=SPEC)
    x = torch.randn(3, 1, 28, 28)
    conv1, conv2 = backbone.make_block("conv1"), backbone.make_block("conv2")
    for block in (conv1, conv2):
        assert [type(m) for m in block] == [nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.BatchNorm2d]
        assert block[0].padding == (0, 0) and block[0].kernel_size == (5, 5)
        assert last_bn(block) is block[-1]  # Z̃ is read where the block ends (§5.2.1)
    h1 = conv1(x)
    assert h1.shape == (3, 20, 12, 12)
    h2 = conv2(h1)
    assert h2.shape == (3, 50, 4, 4)
    head = backbone.make_head(DIGITS)
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(4 * 4 * 50, 10)]
    assert head(h2).shape == (3, 10)
    assert backbone.make_head(DIGITS, "conv1")(h1).shape == (3, 10)
    assert backbone.deviations == []


def test_bn_scales_start_uniform_in_0_1_as_the_bn_pillow() -> None:
    # hydra_base.py BatchNormPillow: weight = empty(c).uniform_(), bias = zeros(c)
    torch.manual_seed(0)
    bn = last_bn(LeNetBN(input_spec=SPEC).make_block("conv2"))
    assert bn.weight.shape == (50,) and bool(((bn.weight >= 0) & (bn.weight < 1)).all())
    assert float(bn.weight.detach().std()) > 0.1  # not the constant 1 of PyTorch's default
    assert torch.equal(bn.bias, torch.zeros(50))


def test_earlier_layout_is_an_option() -> None:
    backbone = LeNetBN(input_spec=SPEC, layout="bn_relu_pool", channels=[6, 16])
    x = torch.randn(3, 1, 28, 28)
    conv1 = backbone.make_block("conv1")
    assert [type(m) for m in conv1] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d]
    assert torch.equal(conv1[1].weight, torch.ones(6))
    h1 = conv1(x)
    assert h1.shape == (3, 6, 14, 14)
    h2 = backbone.make_block("conv2")(h1)
    assert h2.shape == (3, 16, 5, 5)
    assert backbone.make_head(DIGITS)(h2).shape == (3, 10)
    assert len(backbone.deviations) == 2
    assert "layout=bn_relu_pool" in backbone.deviations[0]
    assert "channels=[6, 16]" in backbone.deviations[1]


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        ({"channels": [6]}, r"`channels` should be two integers >= 1. Found `channels = \[6\]`"),
        ({"channels": [6, 0]}, "`channels` should be two integers >= 1"),
        ({"kernel": 4}, "`kernel` should be an odd integer >= 1. Found `kernel = 4`"),
        ({"kernel": 13}, "28x28 images are too small for `kernel = 13`"),
        ({"modality": "text"}, "`modality` should be 'image'"),
        (
            {"layout": "bn_pool"},
            "`layout` should be one of relu_pool_bn, bn_relu_pool. Found `layout = bn_pool`",
        ),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], text: str) -> None:
    with pytest.raises(ValueError, match=text):
        LeNetBN(input_spec=SPEC, **kwargs)  # type: ignore[arg-type]


def test_rgb_32x32_images_size_conv1_and_the_heads_from_the_input_spec() -> None:
    """CIFAR-shaped inputs (data=vision): conv1 reads 3 channels; 32 -> 28 -> 14 -> 10 -> 5,
    so the heads read 5·5·50 features (4·4·50 on 28x28)."""
    backbone = LeNetBN(input_spec=InputSpec("image", channels=3, height=32, width=32))
    conv1, conv2 = backbone.make_block("conv1"), backbone.make_block("conv2")
    assert conv1[0].in_channels == 3
    h = conv2(conv1(torch.randn(2, 3, 32, 32)))
    assert h.shape == (2, 50, 5, 5)
    head = backbone.make_head(DIGITS)
    assert head[1].in_features == 5 * 5 * 50 and head(h).shape == (2, 10)
    assert backbone.out_shapes == {"conv1": (20, 14, 14), "conv2": (50, 5, 5)}
