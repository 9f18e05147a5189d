"""Image classification tasks from torchvision's data sets (``data=vision``, docs/data-images.md).

Each task names a class of :mod:`torchvision.datasets` (``MNIST``, ``FashionMNIST``,
``KMNIST``, ``EMNIST``, ``CIFAR10``, ``CIFAR100``, ``SVHN``, …) that takes a ``train`` flag or a
``split`` name; the class reads its own files under the task's ``root`` (``download=True`` lets
it fetch them). Validation is the last ``valid_size`` training images, test the class's test
set; ``missing_train="split_test"`` builds all three from the test set when the training set is
absent (:mod:`mtlrun.data.vision_read`). Every task has its own input stream (one batch of each
task per step, :class:`~mtlrun.data.images.ImageTasksData`), and all tasks feed one backbone
input, so they must agree in channels and size, or be converted (``channels``, ``size``).
``data=mnist3`` is this data set with the tasks ``mnist``, ``fashion`` and ``kmnist``
(:func:`mtlrun.data.images.mnist3_data`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mtlrun.data.images import ImageTasksData, affine_degrees
from mtlrun.data.mnist3 import ImageSplits, image_size
from mtlrun.data.vision_read import load_vision_splits
from mtlrun.data.vision_tasks import parse_tasks
from mtlrun.errors import ArgumentErrors, DataError

CHANNELS = (1, 3)


def check_one_input(splits: Mapping[str, ImageSplits]) -> None:
    """Every task feeds the same backbone input: one channel count, one size. A mismatch is
    refused with the option that converts it."""
    (first, reference), *others = splits.items()
    ref = reference.train[0]
    for task, split in others:
        x = split.train[0]
        if x.shape[1:] == ref.shape[1:]:
            continue
        fix = []
        if x.shape[1] != ref.shape[1]:
            fix.append(f"data.channels={ref.shape[1]}")
        if x.shape[2:] != ref.shape[2:]:
            fix.append(f"data.size=[{ref.shape[2]},{ref.shape[3]}]")
        raise DataError(
            f"{task}: images are {image_size(x)} but {first} images are {image_size(ref)}; the "
            f"tasks share one backbone input. Convert them with {' and '.join(fix)} (or another "
            "channel count and size)"
        )


def vision_data(
    tasks: Mapping[str, Any],
    root: str,
    download: bool = False,
    verify: bool = True,
    valid_size: int = 5000,
    missing_train: str = "error",
    split_seed: int = 0,
    channels: int | None = None,
    size: Sequence[int] | None = None,
    random_affine: Mapping[str, float] | None = None,
    limit_train: int | None = None,
    limit_eval: int | None = None,
    name: str = "vision",
    modality: str = "image",
) -> ImageTasksData:
    """Image tasks from torchvision's data sets (``data=vision``, docs/data-images.md).

    ``tasks``: task name -> a class name of :mod:`torchvision.datasets`, or a mapping of
    :data:`~mtlrun.data.vision_tasks.TASK_KEYS` (:class:`~mtlrun.data.vision_tasks.VisionTask`). ``download``: let each class fetch its files
    (online). ``verify=False`` builds the classes with their checksum checks reduced to "the
    file exists" (recorded). ``channels`` (1 or 3) and ``size`` ([H, W]) convert every task's
    images; without them, tasks that differ are refused. The other arguments are those of
    ``data=mnist3``.
    """
    errors = ArgumentErrors("data")
    errors.require(modality == "image", "modality", "image", modality)
    errors.require(channels is None or channels in CHANNELS, "channels", "null, 1 or 3", channels)
    ok_size = size is None or (
        isinstance(size, Sequence)
        and len(size) == 2
        and all(isinstance(v, int) and v >= 1 for v in size)
    )
    errors.require(ok_size, "size", "null or [H, W] with integers >= 1", size)
    specs = parse_tasks(tasks, errors)
    errors.raise_if_any()
    affine = affine_degrees(random_affine, list(specs))
    splits, notes = load_vision_splits(
        specs, root, download, verify, valid_size, missing_train, split_seed, channels, size
    )
    check_one_input(splits)
    data = ImageTasksData(name, splits, limit_train, limit_eval, affine)
    data.deviations += notes
    return data
