"""Device choice and batch moving."""

from __future__ import annotations

import pytest
import torch

from mtlrun.data.base import TextInputs
from mtlrun.errors import ConfigError
from mtlrun.training.device import pick_device, to_device


def test_pick_device_cpu_and_auto() -> None:
    assert pick_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert pick_device("auto").type == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_cuda_without_a_gpu_is_a_config_error(name: str) -> None:
    with pytest.raises(ConfigError) as err:
        pick_device(name)
    assert str(err.value) == (
        f"`trainer.device` is `{name}` but no CUDA device is available; "
        "use trainer.device=auto or trainer.device=cpu."
    )


def test_to_device_keeps_lengths_on_the_cpu() -> None:
    batch = TextInputs(
        torch.ones(2, 3, dtype=torch.long),
        torch.ones(2, 3, 4, dtype=torch.long),
        torch.tensor([3, 2]),
    )
    moved = to_device(batch, torch.device("meta"))
    assert isinstance(moved, TextInputs)
    assert moved.words.device.type == "meta" and moved.chars.device.type == "meta"
    assert moved.lengths is batch.lengths
    assert to_device(torch.zeros(2), torch.device("meta")).device.type == "meta"
    marker = object()
    assert to_device(marker, torch.device("meta")) is marker
