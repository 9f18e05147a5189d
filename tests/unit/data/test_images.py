"""Image tasks together: every task's images must fit the one backbone input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mtlrun.data.images import ImageTasksData, mnist3_data
from mtlrun.data.mnist3 import ImageSplits
from mtlrun.errors import DataError
from tests.helpers.fakedata import write_idx_images, write_mnist_family


def test_tasks_with_different_image_sizes_name_both_files(tmp_path: Path) -> None:
    write_mnist_family(tmp_path, tasks=("mnist", "fashion"), n_train=24, n_test=20)
    raw = tmp_path / "FashionMNIST" / "raw"
    for name, n in (("train-images-idx3-ubyte", 24), ("t10k-images-idx3-ubyte", 20)):
        write_idx_images(raw / name, torch.zeros(n, 32, 32, dtype=torch.uint8))
    with pytest.raises(DataError) as info:
        mnist3_data(str(tmp_path), tasks=["mnist", "fashion"], valid_size=8)
    mnist = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    assert str(info.value) == (
        f"{(raw / 'train-images-idx3-ubyte').resolve()}: images are 32x32 but "
        f"{mnist.resolve()} holds 28x28 images; every split of every task feeds the same "
        "backbone input, so all images must be the same size"
    )


def test_image_size_check_without_files() -> None:
    def splits(size: int) -> ImageSplits:
        pair = (torch.zeros(4, size, size, dtype=torch.uint8), torch.zeros(4, dtype=torch.long))
        return ImageSplits(train=pair, valid=pair, test=pair)

    with pytest.raises(DataError) as info:
        ImageTasksData("mnist3", {"mnist": splits(28), "kmnist": splits(14)})
    assert str(info.value) == (
        "kmnist: images are 14x14 but mnist images are 28x28; the tasks share one backbone input"
    )
    ImageTasksData("mnist3", {"mnist": splits(28), "kmnist": splits(28)})
