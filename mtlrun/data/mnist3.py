"""MNIST, Fashion-MNIST and KMNIST read from torchvision's raw idx layout.

Each task lives in ``<root>/<Folder>/raw/`` as the four unpacked idx files, read with
torchvision's own idx readers. Validation is the last ``valid_size`` training images; test is
the official t10k set. When a task's training files are missing, ``missing_train="split_test"``
builds train/valid/test from its official test set (80/10/10 %, stratified by class:
8000/1000/1000 for the 10,000-image test sets) and records that as a deviation from the paper's
protocol. ``data=vision`` reads every torchvision class of this layout (``<Folder>`` is the class
name) through these functions, and shares :func:`split_train` with the others
(:mod:`mtlrun.data.vision_read`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from mtlrun.errors import ConfigError, DataError

MNIST3_TASKS: tuple[str, ...] = ("mnist", "fashion", "kmnist")
FOLDERS: dict[str, str] = {"mnist": "MNIST", "fashion": "FashionMNIST", "kmnist": "KMNIST"}
TRAIN_FILES: tuple[str, str] = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
TEST_FILES: tuple[str, str] = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
MISSING_TRAIN_MODES: tuple[str, ...] = ("error", "split_test")
N_CLASSES = 10  # every task of the family: labels are 0..9
_DESCRIPTIONS = {TRAIN_FILES[0]: "train images", TRAIN_FILES[1]: "train labels"}


Pair = tuple[Tensor, Tensor]


@dataclass
class ImageSplits:
    """One task's splits as ``(images, labels int64 (N,))`` pairs.

    Images are uint8 (N, H, W) or (N, C, H, W) (scaled to [-1, 1] by
    :class:`mtlrun.data.images.ImageTasksData`), or floats (N, C, H, W) used as they are (a
    Python data set, :mod:`mtlrun.data.custom`). ``deviation`` is a one-line note when the
    splits differ from the official protocol; ``images_file`` is the idx file the training
    images came from (for messages); ``classes`` names the labels (None: the task's defaults).
    """

    train: Pair
    valid: Pair
    test: Pair
    deviation: str | None = None
    images_file: Path | None = None
    classes: tuple[str, ...] | None = None


def raw_dir(root: Path, task: str, folder: str | None = None) -> Path:
    """The folder holding ``task``'s idx files: ``<root>/<Folder>/raw`` (``folder``: the
    torchvision class name, by default ``task``'s in :data:`FOLDERS`)."""
    return Path(root) / (folder or FOLDERS[task]) / "raw"


def _missing_message(task: str, missing: list[Path], train_only: bool, drop: str) -> str:
    files = ", ".join(str(p.resolve()) for p in missing)
    ways = [f"drop the task with {drop}"]
    if train_only:
        ways.append(
            "or build train/valid/test from its official test set with "
            "data.missing_train=split_test (recorded as a deviation)"
        )
    ways.append("or point data.root=PATH at a folder with a full copy")
    return f"{task}: missing data file(s): {files}. Ways on: {', '.join(ways)}."


def check_files(
    root: Path,
    task: str,
    missing_train: str = "error",
    folder: str | None = None,
    drop: str | None = None,
) -> list[Path]:
    """Check a task's four idx files before anything is read; return the missing train files.

    Missing test files always stop the run; missing train files only with
    ``missing_train="error"``. The message names every missing file and the ways on (``drop``:
    how to leave the task out, by default ``data.tasks=[<the other mnist3 tasks>]``).
    """
    raw = raw_dir(root, task, folder)
    if drop is None:
        drop = f"data.tasks=[{','.join(t for t in MNIST3_TASKS if t != task)}]"
    missing_test = [raw / n for n in TEST_FILES if not (raw / n).is_file()]
    missing_train_files = [raw / n for n in TRAIN_FILES if not (raw / n).is_file()]
    if missing_test:
        raise DataError(_missing_message(task, missing_test + missing_train_files, False, drop))
    if missing_train_files and missing_train == "error":
        raise DataError(_missing_message(task, missing_train_files, True, drop))
    return missing_train_files


def _read_pair(
    images_path: Path, labels_path: Path, n_classes: int = N_CLASSES
) -> tuple[Tensor, Tensor]:
    """Read an idx image file and its label file; any problem names the file (and value).

    Checks that the files hold as many labels as images and labels in ``0..n_classes-1``.
    """
    # torchvision.datasets imports torchvision.models (2 s): only when files are read, so that
    # composing or checking a config (mtlrun --help, a refused run) stays quick
    from torchvision.datasets.mnist import read_image_file, read_label_file

    pair: list[Tensor] = []
    for path, reader in ((images_path, read_image_file), (labels_path, read_label_file)):
        try:
            pair.append(reader(str(path)))
        except Exception as exc:  # noqa: BLE001 - torchvision reports corruption many ways
            raise DataError(
                f"{path.resolve()}: not a readable idx file (truncated or corrupt: "
                f"{type(exc).__name__}{': ' + str(exc) if str(exc) else ''})"
            ) from None
    images, labels = pair
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{labels_path.resolve()}: {labels.shape[0]} labels but {images_path.resolve()} "
            f"holds {images.shape[0]} images (truncated or mismatched files)"
        )
    bad = torch.nonzero((labels < 0) | (labels >= n_classes)).flatten()
    if bad.numel():
        index = int(bad[0])
        others = f" ({bad.numel()} labels out of range)" if bad.numel() > 1 else ""
        raise DataError(
            f"{labels_path.resolve()}: label {int(labels[index])} at index {index} is outside "
            f"0..{n_classes - 1}{others}"
        )
    return images, labels


def image_size(images: Tensor) -> str:
    """``"HxW"`` of images (N, H, W) or (N, 1, H, W); ``"HxW, C channels"`` of (N, C, H, W)."""
    size = "x".join(str(d) for d in images.shape[-2:])
    channels = images.shape[1] if images.dim() == 4 else 1
    return size if channels == 1 else f"{size}, {channels} channels"


def check_same_size(first: Path, first_images: Tensor, other: Path, other_images: Tensor) -> None:
    """Raise a DataError naming both files when their images differ in size."""
    if first_images.shape[1:] != other_images.shape[1:]:
        raise DataError(
            f"{other.resolve()}: images are {image_size(other_images)} but "
            f"{first.resolve()} holds {image_size(first_images)} images; every split of "
            "every task feeds the same backbone input, so all images must be the same size"
        )


def _class_quotas(counts: Tensor, total: int) -> Tensor:
    """Split ``total`` over classes in proportion to ``counts`` (largest remainder), shape (C,)."""
    exact = counts.double() * total / counts.sum()
    quotas = exact.floor().long()
    short = total - int(quotas.sum())
    # Stable sort so ties go to the lower class index, keeping the split deterministic.
    order = torch.argsort(exact - quotas.double(), descending=True, stable=True)
    quotas[order[:short]] += 1
    return quotas


def split_test_set(
    images: Tensor, labels: Tensor, seed: int = 0
) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """Stratified 80/10/10 % split of one set into train/valid/test (images (N,H,W), labels (N,)).

    valid and test get ``N // 10`` items each (1000 for N = 10,000), shared out over classes in
    proportion to their counts; train gets the rest. Deterministic in ``seed``.
    """
    generator = torch.Generator().manual_seed(seed)
    classes, counts = torch.unique(labels, return_counts=True)
    n_eval = labels.shape[0] // 10
    valid_q, test_q = _class_quotas(counts, n_eval), _class_quotas(counts, n_eval)
    parts: dict[str, list[Tensor]] = {"train": [], "valid": [], "test": []}
    for cls, n_valid, n_test in zip(
        classes.tolist(), valid_q.tolist(), test_q.tolist(), strict=True
    ):
        idx = torch.nonzero(labels == cls).flatten()
        idx = idx[torch.randperm(idx.shape[0], generator=generator)]
        parts["valid"].append(idx[:n_valid])
        parts["test"].append(idx[n_valid : n_valid + n_test])
        parts["train"].append(idx[n_valid + n_test :])
    splits = []
    for name in ("train", "valid", "test"):
        idx = torch.cat(parts[name])
        # Mix the classes so a split read in order is not sorted by label.
        idx = idx[torch.randperm(idx.shape[0], generator=generator)]
        splits.append((images[idx], labels[idx]))
    return splits[0], splits[1], splits[2]


def _check_arguments(task: str, valid_size: int, missing_train: str) -> None:
    if task not in FOLDERS:
        raise ConfigError(
            f"`data.tasks` entries should be one of {list(MNIST3_TASKS)}. Found `{task}`."
        )
    check_split_arguments(valid_size, missing_train)


def check_split_arguments(valid_size: int, missing_train: str) -> None:
    """``data.valid_size`` >= 1 and ``data.missing_train`` one of :data:`MISSING_TRAIN_MODES`."""
    if missing_train not in MISSING_TRAIN_MODES:
        raise ConfigError(
            f"`data.missing_train` should be one of {list(MISSING_TRAIN_MODES)}. "
            f"Found `data.missing_train = {missing_train}`."
        )
    if valid_size < 1:
        raise ConfigError(
            f"`data.valid_size` should be >= 1. Found `data.valid_size = {valid_size}`."
        )


@dataclass
class RawTask:
    """One task's images before the train/valid split (pairs as in :class:`ImageSplits`).

    ``train`` is None when its files are missing (``missing`` says which: "train images");
    ``source`` names the training set in messages (its labels file, or the torchvision class
    and folder); ``images_file`` is the idx file of the images the backbone input is sized by.
    """

    train: Pair | None
    test: Pair
    source: str
    images_file: Path | None = None
    missing: str | None = None


def read_idx_task(
    root: Path,
    task: str,
    missing_train: str = "error",
    folder: str | None = None,
    drop: str | None = None,
    n_classes: int = N_CLASSES,
) -> RawTask:
    """Read a task's idx files from ``<root>/<folder>/raw/`` (see :func:`check_files`), with
    torchvision's idx readers: images uint8 (N, H, W), labels int64 (N,) in ``0..n_classes-1``.
    """
    missing_train_files = check_files(root, task, missing_train, folder, drop)
    raw = raw_dir(root, task, folder)
    train_paths = [raw / name for name in TRAIN_FILES]
    test_paths = [raw / name for name in TEST_FILES]
    test = _read_pair(test_paths[0], test_paths[1], n_classes)
    if missing_train_files:
        what = " and ".join(_DESCRIPTIONS[p.name] for p in missing_train_files)
        return RawTask(None, test, str(raw.resolve()), images_file=test_paths[0], missing=what)
    train = _read_pair(train_paths[0], train_paths[1], n_classes)
    check_same_size(train_paths[0], train[0], test_paths[0], test[0])
    return RawTask(train, test, str(train_paths[1].resolve()), images_file=train_paths[0])


def split_train(task: str, raw: RawTask, valid_size: int, seed: int = 0) -> ImageSplits:
    """Train/valid/test of one task: validation is the last ``valid_size`` training images,
    test the official test set; without a training set, :func:`split_test_set` of the test set
    with ``seed`` (recorded in ``deviation``)."""
    if raw.train is None:
        train, valid, test = split_test_set(*raw.test, seed=seed)
        deviation = (
            f"{task}: {raw.missing or 'training set'} missing; train/valid/test = "
            f"{train[1].shape[0]}/{valid[1].shape[0]}/{test[1].shape[0]} stratified split of "
            f"the official test set (seed {seed})"
        )
        return ImageSplits(train, valid, test, deviation=deviation, images_file=raw.images_file)
    images, labels = raw.train
    if valid_size >= labels.shape[0]:
        raise DataError(
            f"{raw.source}: holds {labels.shape[0]} training images, too few for "
            f"data.valid_size={valid_size} (lower data.valid_size)"
        )
    cut = labels.shape[0] - valid_size
    return ImageSplits(
        train=(images[:cut], labels[:cut]),
        valid=(images[cut:], labels[cut:]),
        test=raw.test,
        images_file=raw.images_file,
    )


def load_image_task(
    root: Path, task: str, valid_size: int = 5000, missing_train: str = "error", seed: int = 0
) -> ImageSplits:
    """Load one task's train/valid/test from ``<root>/<Folder>/raw/`` (see module docstring).

    Images come back as uint8 (N, 28, 28), labels as int64 (N,). ``seed`` only matters for the
    ``split_test`` fallback.
    """
    _check_arguments(task, valid_size, missing_train)
    return split_train(task, read_idx_task(Path(root), task, missing_train), valid_size, seed)
