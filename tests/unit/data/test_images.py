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


def test_a_batch_larger_than_a_tasks_training_set_is_capped_at_it(fake_data_root: Path) -> None:
    data = mnist3_data(str(fake_data_root), tasks=["mnist", "fashion"], valid_size=16)
    data.data["train"]["fashion"] = tuple(t[:10] for t in data.data["train"]["fashion"])
    steps = list(data.train_steps(40, epoch=0, seed=0))
    assert [[len(y) for _, targets in groups for y in targets.values()] for groups in steps] == [
        [40, 10],
        [40, 10],
    ]  # mnist: 64 images, 2 steps of 40; fashion: its 10 images, each once, per step
    fashion = [groups[1][1]["fashion"] for groups in steps]
    assert all(
        sorted(y.tolist()) == sorted(data.data["train"]["fashion"][1].tolist()) for y in fashion
    )
    assert data.deviations == [
        "training batches of 10 fashion images (the whole training set, each once) instead of "
        "trainer.batch_size=40"
    ]


def test_random_affine_takes_every_seed_of_numpys_range(fake_data_root: Path) -> None:
    """The per-batch draw (seed·100003·1000003) passed torch's 2**64 limit for large seeds."""
    data = mnist3_data(
        str(fake_data_root), tasks=["mnist"], valid_size=16, random_affine={"mnist": 10}
    )
    ((images, _),) = next(data.train_steps(4, epoch=0, seed=2**32 - 1))
    assert images.shape == (4, 1, 28, 28)
