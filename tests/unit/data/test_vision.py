"""``data=vision``: tasks read through torchvision's own classes from generated files in their
real formats (CIFAR-10 pickles, SVHN ``.mat``, EMNIST and MNIST idx files)."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.error import URLError

import pytest
import torch
import torchvision.datasets as tvd
from PIL import Image
from torchvision.transforms.v2.functional import resize

from mtlrun.config.validate import validate
from mtlrun.data import torchvision_sets as tvs
from mtlrun.data.images import mnist3_data, to_float
from mtlrun.data.vision import vision_data
from mtlrun.errors import ConfigError, DataError
from tests.helpers.fakedata import write_mnist_family
from tests.helpers.fakevision import CIFAR10_CLASSES, write_cifar10, write_emnist, write_svhn


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CIFAR-10 (50 train, 20 test), SVHN under svhn/ (40/20), EMNIST letters (60/30), MNIST."""
    root = tmp_path_factory.mktemp("vision")
    write_cifar10(root, n_train=50, n_test=20)
    write_svhn(root / "svhn", "train", 40)
    write_svhn(root / "svhn", "test", 20, seed=1)
    write_emnist(root, "letters", n_train=60, n_test=30)
    write_mnist_family(root, tasks=("mnist",), n_train=64, n_test=40)
    return root


def test_cifar10_pickles_need_their_checksums_or_verify_false(root: Path) -> None:
    with pytest.raises(DataError) as info:
        vision_data({"cifar": "CIFAR10"}, str(root), valid_size=10)
    assert str(info.value) == (
        f"cifar: torchvision.datasets.CIFAR10(train=True, download=False) under {root} failed "
        "(RuntimeError: Dataset not found or corrupted. You can use download=True to download "
        "it). Ways on: data.download=true to let torchvision fetch it (online), "
        "data.verify=false for a complete copy whose files differ from torchvision's "
        "checksums, data.missing_train=split_test to build train/valid/test from its test "
        "set, data.tasks.cifar.root=PATH or data.root=PATH to read another folder, or drop "
        "the task with ~data.tasks.cifar."
    )
    assert tvd.cifar.check_integrity.__module__ == "torchvision.datasets.utils"  # restored


def test_cifar10_pickles_read_through_torchvision(root: Path) -> None:
    images = write_cifar10(root / "again", n_train=50, n_test=20)  # the same files, returned
    data = vision_data({"cifar": "CIFAR10"}, str(root), verify=False, valid_size=10)
    x, y = data.data["train"]["cifar"]
    assert x.shape == (40, 3, 32, 32) and data.sizes()["test"] == {"cifar": 20}
    assert torch.equal(x, to_float(images[:40]))  # HWC pickles back to CHW, scaled to [-1, 1]
    assert torch.equal(data.data["valid"]["cifar"][0], to_float(images[40:]))
    expected = tvd.CIFAR10  # the class's own labels for the same files
    with tvs.checksums_off(expected):
        assert y.tolist() == expected(str(root), train=True).targets[:40]
    assert data.tasks[0].labels == tuple(CIFAR10_CLASSES)
    spec = data.input_spec
    assert (spec.channels, spec.height, spec.width) == (3, 32, 32)
    assert data.deviations == [
        "cifar: torchvision.datasets.CIFAR10 files read without torchvision's checksum check "
        "(data.verify=false)"
    ]


def test_svhn_mat_files_with_a_root_and_split_names_per_task(root: Path) -> None:
    images = write_svhn(root / "svhn2", "extra", 30, seed=4)
    write_svhn(root / "svhn2", "test", 10, seed=5)
    task = {"dataset": "SVHN", "root": str(root / "svhn2"), "train_split": "extra"}
    data = vision_data({"svhn": task}, "/nonexistent", verify=False, valid_size=6)
    x, y = data.data["train"]["svhn"]
    assert torch.equal(x, to_float(images[:24]))
    labels = torch.arange(30) % 10  # write_svhn wrote 0 as 10; torchvision maps it back
    assert sorted(y.tolist() + data.data["valid"]["svhn"][1].tolist()) == sorted(labels.tolist())
    assert data.tasks[0].labels == tuple(str(i) for i in range(10))  # SVHN names no classes
    with pytest.raises(ConfigError) as info:
        vision_data({"svhn": {**task, "train_split": "val"}}, "/nonexistent", verify=False)
    assert str(info.value) == (
        "`data.tasks.svhn`: torchvision.datasets.SVHN: Unknown value 'val' for argument split. "
        "Valid values are {'train', 'test', 'extra'}."
    )


def test_a_missing_training_set_can_be_split_from_the_test_set(tmp_path: Path) -> None:
    write_svhn(tmp_path, "test", 40)
    task = {"svhn": "SVHN"}
    with pytest.raises(DataError, match=r"svhn: torchvision.datasets.SVHN\(split='train'"):
        vision_data(task, str(tmp_path), verify=False, valid_size=4)
    data = vision_data(task, str(tmp_path), verify=False, missing_train="split_test")
    assert data.sizes() == {"train": {"svhn": 32}, "valid": {"svhn": 4}, "test": {"svhn": 4}}
    assert data.deviations[0] == (
        "svhn: training set missing; train/valid/test = 32/4/4 stratified split of the "
        "official test set (seed 0)"
    )


def test_emnist_letters_and_a_choice_of_classes(root: Path) -> None:
    letters = {"dataset": "EMNIST", "args": {"split": "letters"}}
    full = vision_data({"letters": letters}, str(root), valid_size=5)
    assert full.tasks[0].labels[:3] == ("N/A", "a", "b")  # EMNIST's own names
    x, y = full.data["test"]["letters"]
    chosen = vision_data({"letters": {**letters, "classes": ["c", "a"]}}, str(root), valid_size=2)
    assert chosen.tasks[0].labels == ("c", "a")
    cx, cy = chosen.data["test"]["letters"]
    keep = (y == 3) | (y == 1)  # test images of c and a, in file order, relabelled c -> 0, a -> 1
    assert torch.equal(cx, x[keep])
    assert cy.tolist() == [0 if v == 3 else 1 for v in y[keep].tolist()]
    by_index = vision_data({"letters": {**letters, "classes": [3, 1]}}, str(root), valid_size=2)
    assert torch.equal(by_index.data["train"]["letters"][1], chosen.data["train"]["letters"][1])
    with pytest.raises(ConfigError) as info:
        vision_data({"letters": {**letters, "classes": ["a", "ß"]}}, str(root), valid_size=2)
    assert str(info.value) == (
        "`data.tasks.letters.classes`: 'ß' is not a class of torchvision.datasets.EMNIST "
        "(indices 0..26 or names: N/A, a, b, c, d, e, f, g, h, i, j, k, …)."
    )
    with pytest.raises(ConfigError) as info:
        vision_data({"letters": "EMNIST"}, str(root))
    assert str(info.value) == (
        "`data.tasks.letters.args`: torchvision.datasets.EMNIST: missing a required argument: "
        "'split'"
    )


def test_mnist_through_vision_is_mnist3s_tensors(root: Path) -> None:
    vision = vision_data({"digits": "MNIST"}, str(root), valid_size=16)
    preset = mnist3_data(str(root), tasks=["mnist"], valid_size=16)
    for split in ("train", "valid", "test"):
        for a, b in zip(vision.data[split]["digits"], preset.data[split]["mnist"], strict=True):
            assert torch.equal(a, b)
    assert vision.tasks[0].labels[0] == "0 - zero" and preset.tasks[0].labels[0] == "0"


def test_tasks_that_differ_in_channels_or_size_are_refused_or_converted(root: Path) -> None:
    tasks = {"mnist": "MNIST", "cifar": "CIFAR10"}
    with pytest.raises(DataError) as info:
        vision_data(tasks, str(root), verify=False, valid_size=10)
    assert str(info.value) == (
        "cifar: images are 32x32, 3 channels but mnist images are 28x28; the tasks share one "
        "backbone input. Convert them with data.channels=1 and data.size=[28,28] (or another "
        "channel count and size)"
    )
    gray = vision_data(tasks, str(root), verify=False, valid_size=10, channels=1, size=[28, 28])
    assert gray.input_spec.channels == 1 and gray.input_spec.height == 28
    cifar = write_cifar10(root / "again2", n_train=50, n_test=20)[:40]
    r, g, b = cifar.double().unbind(1)
    luma = 0.2989 * r + 0.587 * g + 0.114 * b  # ITU-R 601-2, torchvision's rgb_to_grayscale
    expected = resize(luma.round().clamp(0, 255).to(torch.uint8).unsqueeze(1), [28, 28])
    got = gray.data["train"]["cifar"][0]
    assert got.shape == (40, 1, 28, 28)
    assert (got - to_float(expected)).abs().max() <= 2 / 127.5  # rounding of two conversions
    assert gray.deviations[:2] == [
        "cifar: torchvision.datasets.CIFAR10 files read without torchvision's checksum check "
        "(data.verify=false)",
        "cifar: images converted from 3 to 1 channel(s) (data.channels=1)",
    ]
    assert "cifar: images resized from 32x32 to 28x28 (data.size=[28, 28])" in gray.deviations
    rgb = vision_data(tasks, str(root), verify=False, valid_size=10, channels=3, size=[32, 32])
    x = rgb.data["train"]["mnist"][0]
    assert x.shape == (54, 3, 32, 32) and torch.equal(x[:, 0], x[:, 2])  # gray copied to RGB


def test_every_config_problem_at_once(root: Path) -> None:
    tasks = {
        "a": {"dataset": "CIFAR11", "rot": "x", "classes": "ab"},
        "b": {"dataset": "ImageFolder"},
        "c": {"dataset": "SVHN", "args": {"split": "extra", "download": True}},
        "d": 3,
    }
    with pytest.raises(ConfigError) as info:
        vision_data(tasks, str(root), channels=2, size=[32])
    assert str(info.value).split("\n") == [
        "invalid configuration:",
        "  - `data.channels` should be null, 1 or 3. Found `data.channels = 2`.",
        "  - `data.size` should be null or [H, W] with integers >= 1. Found `data.size = [32]`.",
        "  - `data.tasks.a.rot` is not a key of a vision task; did you mean `data.tasks.a.root`? "
        "(allowed: dataset, root, classes, args, train_split, test_split).",
        "  - `data.tasks.a.dataset` should name a torchvision.datasets class (did you mean "
        "CIFAR10, CIFAR100, UCF101?). Found `data.tasks.a.dataset = CIFAR11`.",
        "  - `data.tasks.a.classes` should be null or class indices or names without repeats. "
        "Found `data.tasks.a.classes = ab`.",
        "  - `data.tasks.b.dataset = ImageFolder`: torchvision.datasets.ImageFolder takes "
        "neither `train` nor `split`, so it has no test set to tell apart; bring such data as "
        "a Python data set (docs/data-python.md).",
        "  - `data.tasks.c.args.split` is set by mtlrun (use `data.root`, `data.download`, "
        "`data.tasks.c.root` or `data.tasks.c.train_split`/`test_split`).",
        "  - `data.tasks.c.args.download` is set by mtlrun (use `data.root`, `data.download`, "
        "`data.tasks.c.root` or `data.tasks.c.train_split`/`test_split`).",
        "  - `data.tasks.d` should be a torchvision data set name or {dataset: NAME, ...}. Found "
        "`data.tasks.d = 3`.",
    ]
    with pytest.raises(ConfigError) as info:
        vision_data(None, str(root))  # type: ignore[arg-type]
    assert str(info.value) == (
        "`data.tasks` should map task names to torchvision data sets, e.g. {cifar: CIFAR10, "
        "svhn: {dataset: SVHN, root: PATH}}. Found `data.tasks = None`."
    )


def test_download_true_lets_the_class_fetch_its_files(tmp_path: Path, monkeypatch) -> None:
    calls: list[str] = []

    def fetch_svhn(self: tvd.SVHN) -> None:
        calls.append(f"SVHN {self.split} {self.root}")
        write_svhn(Path(self.root), self.split, 20)

    def fetch_mnist(self: tvd.MNIST) -> None:
        calls.append(f"MNIST {self.root}")
        write_mnist_family(Path(self.root), tasks=("mnist",), n_train=30, n_test=20)

    monkeypatch.setattr(tvd.SVHN, "download", fetch_svhn)
    monkeypatch.setattr(tvd.MNIST, "download", fetch_mnist)
    tasks = {"svhn": "SVHN", "digits": "MNIST"}
    kwargs = {"verify": False, "valid_size": 5, "channels": 1, "size": [28, 28]}
    with pytest.raises(DataError, match="missing data file"):  # offline by default
        vision_data(tasks, str(tmp_path), **kwargs)
    data = vision_data(tasks, str(tmp_path), download=True, **kwargs)
    assert calls == [f"SVHN train {tmp_path}", f"SVHN test {tmp_path}", f"MNIST {tmp_path}"]
    assert data.sizes()["train"] == {"svhn": 15, "digits": 25}

    def offline(self: tvd.SVHN) -> None:
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(tvd.SVHN, "download", offline)
    with pytest.raises(DataError) as info:
        vision_data({"svhn": "SVHN"}, str(tmp_path / "empty"), download=True, valid_size=5)
    message = str(info.value)
    assert message.startswith(
        "svhn: torchvision.datasets.SVHN(split='train', download=True) under "
        f"{tmp_path / 'empty'} failed (URLError: <urlopen error [Errno -3] Temporary failure"
    )
    assert "data.download=true" not in message and "data.verify=false" in message


def test_labels_outside_the_classes_name_the_set(tmp_path: Path) -> None:
    write_cifar10(tmp_path, n_train=10, n_test=10)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    import pickle

    entry = pickle.loads(batch.read_bytes())
    entry["labels"][1] = 12
    batch.write_bytes(pickle.dumps(entry))
    with pytest.raises(DataError) as info:
        vision_data({"cifar": "CIFAR10"}, str(tmp_path), verify=False, valid_size=2)
    assert str(info.value) == (
        f"cifar (torchvision.datasets.CIFAR10 train set under {tmp_path}): label 12 at index 3 "
        "is outside 0..9"
    )


class _Pictures(tvd.VisionDataset):
    """A data set whose images are only reachable by indexing (no ``data`` array)."""

    def __init__(self, sizes: list[tuple[int, int]]) -> None:
        super().__init__(".")
        self.sizes = sizes

    def __getitem__(self, i: int) -> tuple[Image.Image, int]:
        w, h = self.sizes[i]
        return Image.new("RGB" if i % 2 else "L", (w, h), color=40 * i), i % 3

    def __len__(self) -> int:
        return len(self.sizes)


def test_images_read_one_by_one_mixed_modes_and_sizes() -> None:
    same = tvs.to_tensors(_Pictures([(5, 4)] * 4), "pics")
    assert same[0].shape == (4, 3, 4, 5) and same[1].tolist() == [0, 1, 2, 0]
    assert same[0][2].unique().tolist() == [80]  # an L image copied to the three channels
    with pytest.raises(DataError, match=re.escape("pics holds images of 2 sizes (e.g. 4x5 and "
                                                  "6x6); set data.size=[H,W]")):  # fmt: skip
        tvs.to_tensors(_Pictures([(5, 4), (6, 6), (5, 4)]), "pics")
    resized = tvs.to_tensors(_Pictures([(5, 4), (6, 6)]), "pics", size=(3, 3))
    assert resized[0].shape == (2, 3, 3, 3)


def test_the_vision_option_composes_and_validates(compose_cfg) -> None:
    cfg = compose_cfg(["data=vision", "data.tasks={cifar:CIFAR10}", "+data.tasks.svhn=SVHN"])
    validate(cfg)
    assert dict(cfg.data.tasks) == {"cifar": "CIFAR10", "svhn": "SVHN"}
    assert cfg.backbone._target_.endswith("LeNetBN") and cfg.data.verify is True
    assert compose_cfg(["data=vision"]).data.tasks is None


def test_a_missing_idx_file_names_the_vision_way_to_drop_the_task(tmp_path: Path) -> None:
    write_mnist_family(tmp_path, tasks=("kmnist",), missing={"kmnist": ["train-labels-idx1-ubyte"]})
    with pytest.raises(DataError) as info:
        vision_data({"kanji": "KMNIST"}, str(tmp_path), valid_size=8)
    assert str(info.value) == (
        f"kanji: missing data file(s): {tmp_path / 'KMNIST/raw/train-labels-idx1-ubyte'}. Ways "
        "on: drop the task with ~data.tasks.kanji, or build train/valid/test from its official "
        "test set with data.missing_train=split_test (recorded as a deviation), or point "
        "data.root=PATH at a folder with a full copy."
    )
    data = vision_data({"kanji": "KMNIST"}, str(tmp_path), missing_train="split_test")
    assert data.deviations == [
        "kanji: train labels missing; train/valid/test = 32/4/4 stratified split of the "
        "official test set (seed 0)"
    ]
    assert data.tasks[0].labels[:2] == ("o", "ki")


def test_a_test_set_of_another_size_is_refused_or_resized(tmp_path: Path) -> None:
    from scipy.io import savemat

    write_svhn(tmp_path, "train", 20)
    small = torch.randint(0, 255, (24, 24, 3, 10), dtype=torch.uint8).numpy()
    savemat(
        tmp_path / "test_32x32.mat", {"X": small, "y": (torch.arange(10) + 1).view(-1, 1).numpy()}
    )
    with pytest.raises(DataError) as info:
        vision_data({"svhn": "SVHN"}, str(tmp_path), verify=False, valid_size=4)
    assert str(info.value) == (
        "svhn: its test images are 24x24, 3 channels but its training images are 32x32, 3 "
        "channels; convert them with data.channels=1|3 and/or data.size=[H,W]"
    )
    data = vision_data({"svhn": "SVHN"}, str(tmp_path), verify=False, valid_size=4, size=[32, 32])
    assert data.data["test"]["svhn"][0].shape == (10, 3, 32, 32)
    assert (
        data.deviations[-1] == "svhn: test images resized from 24x24 to 32x32 (data.size=[32, 32])"
    )
