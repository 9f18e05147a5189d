"""LeNetBN blocks: shapes on 28x28 images and argument checks."""

from __future__ import annotations

import pytest
import torch

from mtlrun.backbones.lenet_bn import LeNetBN
from mtlrun.data.base import InputSpec, Task

SPEC = InputSpec("image", channels=1, height=28, width=28)
DIGITS = Task("mnist", "accuracy", tuple(str(i) for i in range(10)))


def test_default_shapes_on_28x28() -> None:
    backbone = LeNetBN(input_spec=SPEC)
    x = torch.randn(3, 1, 28, 28)
    h1 = backbone.make_block("conv1")(x)
    assert h1.shape == (3, 6, 14, 14)
    h2 = backbone.make_block("conv2")(h1)
    assert h2.shape == (3, 16, 5, 5)
    assert backbone.make_head(DIGITS)(h2).shape == (3, 10)
    assert backbone.make_head(DIGITS, "conv1")(h1).shape == (3, 10)


def test_head_is_one_linear_layer() -> None:
    head = LeNetBN(input_spec=SPEC).make_head(DIGITS)
    linears = [m for m in head.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(16 * 5 * 5, 10)]


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        ({"channels": [6]}, r"`channels` should be two integers >= 1. Found `channels = \[6\]`"),
        ({"channels": [6, 0]}, "`channels` should be two integers >= 1"),
        ({"kernel": 4}, "`kernel` should be an odd integer >= 1. Found `kernel = 4`"),
        ({"kernel": 15}, "28x28 images are too small for `kernel = 15`"),
        ({"modality": "text"}, "`modality` should be 'image'"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], text: str) -> None:
    with pytest.raises(ValueError, match=text):
        LeNetBN(input_spec=SPEC, **kwargs)  # type: ignore[arg-type]
