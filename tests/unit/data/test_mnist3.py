"""MNIST-family idx loading: splits, missing files, split_test fallback, corrupt files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torchvision.datasets.mnist import read_image_file, read_label_file

from mtlrun.data.mnist3 import FOLDERS, MNIST3_TASKS, load_image_task, split_test_set
from mtlrun.errors import ConfigError, DataError
from tests.helpers.fakedata import (
    class_images,
    write_idx_images,
    write_idx_labels,
    write_mnist_family,
)


def test_reads_fake_idx_files_and_valid_is_last_n(tmp_path: Path) -> None:
    write_mnist_family(tmp_path, n_train=64, n_test=40)
    raw = tmp_path / "MNIST" / "raw"
    all_images = read_image_file(str(raw / "train-images-idx3-ubyte"))
    all_labels = read_label_file(str(raw / "train-labels-idx1-ubyte"))
    splits = load_image_task(tmp_path, "mnist", valid_size=16)
    assert splits.deviation is None
    assert splits.train[0].dtype == torch.uint8 and splits.train[1].dtype == torch.int64
    assert splits.train[0].shape == (48, 28, 28) and splits.test[0].shape == (40, 28, 28)
    assert torch.equal(splits.valid[0], all_images[48:])
    assert torch.equal(splits.valid[1], all_labels[48:])
    assert torch.equal(splits.train[0], all_images[:48])
    assert set(splits.test[1].tolist()) == set(range(10))


def test_missing_train_images_error_message(tmp_path: Path) -> None:
    write_mnist_family(tmp_path, missing={"kmnist": ["train-images-idx3-ubyte"]})
    with pytest.raises(DataError) as info:
        load_image_task(tmp_path, "kmnist")
    message = str(info.value)
    assert str((tmp_path / "KMNIST" / "raw" / "train-images-idx3-ubyte").resolve()) in message
    assert "data.missing_train=split_test" in message
    assert "data.tasks=[mnist,fashion]" in message
    assert "data.root=PATH" in message
    assert "train-labels" not in message  # only the missing file is named


def test_missing_test_file_always_fails(tmp_path: Path) -> None:
    write_mnist_family(
        tmp_path, tasks=("fashion",), missing={"fashion": ["t10k-labels-idx1-ubyte"]}
    )
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte") as info:
        load_image_task(tmp_path, "fashion", valid_size=8, missing_train="split_test")
    assert "split_test" not in str(info.value)


def test_split_test_fallback(tmp_path: Path) -> None:
    write_mnist_family(tmp_path, n_test=200, missing={"kmnist": ["train-images-idx3-ubyte"]})
    splits = load_image_task(tmp_path, "kmnist", missing_train="split_test", seed=0)
    sizes = [part[1].shape[0] for part in (splits.train, splits.valid, splits.test)]
    assert sizes == [160, 20, 20]
    for part in (splits.valid, splits.test):
        assert torch.equal(torch.bincount(part[1], minlength=10), torch.full((10,), 2))
    assert splits.deviation == (
        "kmnist: train images missing; train/valid/test = 160/20/20 stratified split "
        "of the official test set (seed 0)"
    )
    again = load_image_task(tmp_path, "kmnist", missing_train="split_test", seed=0)
    assert torch.equal(again.valid[0], splits.valid[0])
    other = load_image_task(tmp_path, "kmnist", missing_train="split_test", seed=1)
    assert not torch.equal(other.valid[0], splits.valid[0])


def test_split_test_is_disjoint_partition() -> None:
    # Unequal classes: quotas stay proportional and the totals exact.
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate([30, 25, 20, 15, 10])])
    images = torch.arange(labels.shape[0]).view(-1, 1, 1).expand(-1, 2, 2).to(torch.int64)
    train, valid, test = split_test_set(images, labels, seed=5)
    ids = [part[0][:, 0, 0] for part in (train, valid, test)]
    assert [len(i) for i in ids] == [80, 10, 10]
    joined = torch.cat(ids)
    assert torch.equal(joined.sort().values, torch.arange(100))
    for part in (train, valid, test):
        assert torch.equal(labels[part[0][:, 0, 0]], part[1])
    assert torch.bincount(valid[1], minlength=5).tolist() == [3, 3, 2, 1, 1]


def test_corrupt_files_name_the_file(tmp_path: Path) -> None:
    write_mnist_family(tmp_path, tasks=("mnist",))
    raw = tmp_path / "MNIST" / "raw"
    images = raw / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-100])
    with pytest.raises(DataError, match="not a readable idx file") as info:
        load_image_task(tmp_path, "mnist", valid_size=8)
    assert str(images.resolve()) in str(info.value)
    write_mnist_family(tmp_path, tasks=("mnist",))
    write_idx_labels(raw / "t10k-labels-idx1-ubyte", torch.zeros(7, dtype=torch.long))
    with pytest.raises(DataError, match="7 labels but"):
        load_image_task(tmp_path, "mnist", valid_size=8)


def test_label_out_of_range_names_file_index_and_value(tmp_path: Path) -> None:
    write_mnist_family(tmp_path, tasks=("fashion",), n_train=64, n_test=40)
    path = tmp_path / "FashionMNIST" / "raw" / "train-labels-idx1-ubyte"
    labels = torch.arange(64) % 10
    labels[5] = 12
    write_idx_labels(path, labels)
    with pytest.raises(DataError) as info:
        load_image_task(tmp_path, "fashion", valid_size=8)
    assert str(info.value) == f"{path.resolve()}: label 12 at index 5 is outside 0..9"
    labels[40] = 255
    write_idx_labels(path, labels)
    with pytest.raises(DataError) as info:
        load_image_task(tmp_path, "fashion", valid_size=8)
    assert str(info.value) == (
        f"{path.resolve()}: label 12 at index 5 is outside 0..9 (2 labels out of range)"
    )


def test_train_and_test_images_of_different_sizes(tmp_path: Path) -> None:
    write_mnist_family(tmp_path, tasks=("mnist",), n_train=64, n_test=40)
    raw = tmp_path / "MNIST" / "raw"
    write_idx_images(raw / "t10k-images-idx3-ubyte", torch.zeros(40, 32, 32, dtype=torch.uint8))
    with pytest.raises(DataError) as info:
        load_image_task(tmp_path, "mnist", valid_size=8)
    assert str(info.value) == (
        f"{(raw / 't10k-images-idx3-ubyte').resolve()}: images are 32x32 but "
        f"{(raw / 'train-images-idx3-ubyte').resolve()} holds 28x28 images; every split of "
        "every task feeds the same backbone input, so all images must be the same size"
    )


def test_argument_checks(tmp_path: Path) -> None:
    write_mnist_family(tmp_path, tasks=("mnist",))
    with pytest.raises(ConfigError, match="data.missing_train"):
        load_image_task(tmp_path, "mnist", missing_train="skip")
    with pytest.raises(ConfigError, match="data.tasks"):
        load_image_task(tmp_path, "cifar")
    with pytest.raises(DataError, match="data.valid_size=64"):
        load_image_task(tmp_path, "mnist", valid_size=64)


def test_fake_images_depend_on_class() -> None:
    labels = torch.arange(10)
    images = class_images(labels, torch.Generator().manual_seed(0)).float()
    centers = images.flatten(1).argmax(1)
    assert len(set(centers.tolist())) == 10
    assert set(FOLDERS) == set(MNIST3_TASKS)


def _real_root() -> Path:
    root = os.environ.get("MTLRUN_DATA")
    if not root or not Path(root).is_dir():
        pytest.skip("set MTLRUN_DATA to the shared data folder")
    return Path(root)


@pytest.mark.realdata
@pytest.mark.parametrize("task", ["mnist", "fashion"])
def test_real_full_sets(task: str) -> None:
    splits = load_image_task(_real_root(), task)
    assert splits.train[0].shape == (55000, 28, 28)
    assert splits.valid[0].shape == (5000, 28, 28)
    assert splits.test[0].shape == (10000, 28, 28)
    assert splits.deviation is None


@pytest.mark.realdata
def test_real_kmnist_missing_train() -> None:
    root = _real_root()
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        load_image_task(root, "kmnist")
    splits = load_image_task(root, "kmnist", missing_train="split_test")
    assert [p[1].shape[0] for p in (splits.train, splits.valid, splits.test)] == [8000, 1000, 1000]
    assert torch.bincount(splits.valid[1]).tolist() == [100] * 10
    assert splits.deviation is not None and "8000/1000/1000" in splits.deviation
