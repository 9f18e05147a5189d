"""Image classification tasks with one input stream each (``data=vision``, ``data=mnist3``,
tensors of a Python data set).

Every training step draws one batch of each task (seed 001 §4.5): the tasks read different
images, so a step is a list of one group per task.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mtlrun.data.base import Group, InputSpec, Task, capped_batch_size
from mtlrun.data.mnist3 import (
    FOLDERS,
    MNIST3_TASKS,
    ImageSplits,
    check_files,
    check_same_size,
    check_split_arguments,
    image_size,
)
from mtlrun.data.subset import split_indices
from mtlrun.data.vision_read import load_vision_splits
from mtlrun.data.vision_tasks import VisionTask
from mtlrun.errors import ConfigError, DataError

CLASS_NAMES = {
    "mnist": tuple(str(i) for i in range(10)),
    "fashion": (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
    "kmnist": ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
}


def _degrees(value: object) -> bool:
    """A number of degrees >= 0 (``data.random_affine`` values)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0


def affine_degrees(random_affine: Any, tasks: Sequence[str]) -> dict[str, float]:
    """``data.random_affine`` checked: null, or a mapping of some of ``tasks`` to degrees >= 0.
    Anything else is a ConfigError naming the key."""
    ok = random_affine is None or (
        isinstance(random_affine, Mapping)
        and all(t in tasks and _degrees(v) for t, v in random_affine.items())
    )
    if not ok:
        shown = dict(random_affine) if isinstance(random_affine, Mapping) else random_affine
        raise ConfigError(
            f"`data.random_affine` should map tasks of `data.tasks` to degrees >= 0. "
            f"Found `data.random_affine = {shown}`."
        )
    return {str(t): float(v) for t, v in (random_affine or {}).items()}


def random_affine(images: Tensor, degrees: float, generator_seed: int) -> Tensor:
    """Each image of (N, 1, H, W) floats in [-1, 1] through its own
    ``torchvision.transforms.RandomAffine(degrees, shear=degrees)`` (the authors'
    ``configs/trinist/*.yaml`` transforms; nearest interpolation, black fill), drawn from a
    torch RNG seeded with ``generator_seed`` (the global RNG is left as it was)."""
    from torchvision.transforms import RandomAffine

    affine = RandomAffine(degrees=degrees, shear=degrees, fill=-1.0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(generator_seed)
        return torch.stack([affine(img) for img in images])


def to_float(images: Tensor) -> Tensor:
    """uint8 (N, H, W) or (N, C, H, W) -> float (N, C, H, W) scaled to [-1, 1]; float images
    (a Python data set's) are kept as they are, as float32."""
    if images.dim() == 3:
        images = images.unsqueeze(1)
    if images.is_floating_point():
        return images.float()
    return (images.float() / 127.5) - 1.0


def _check_sizes(splits: dict[str, ImageSplits]) -> None:
    """All tasks feed one backbone input: their images must have one size (names both files)."""
    (first_task, first), *others = splits.items()
    for task, other in others:
        if first.images_file is not None and other.images_file is not None:
            check_same_size(first.images_file, first.train[0], other.images_file, other.train[0])
        elif first.train[0].shape[1:] != other.train[0].shape[1:]:
            raise DataError(
                f"{task}: images are {image_size(other.train[0])} but {first_task} images are "
                f"{image_size(first.train[0])}; the tasks share one backbone input"
            )


class ImageTasksData:
    """Per-task image splits held as float tensors; batches are index slices."""

    modality = "image"

    def __init__(
        self,
        name: str,
        splits: dict[str, ImageSplits],
        limit_train: int | None = None,
        limit_eval: int | None = None,
        affine: dict[str, float] | None = None,
    ) -> None:
        _check_sizes(splits)
        self.name = name
        # task -> RandomAffine degrees (= shear) applied to its training batches; {}: none
        self.affine = {t: float(v) for t, v in (affine or {}).items() if v}
        self.tasks = [
            Task(t, "accuracy", s.classes or CLASS_NAMES.get(t, tuple(map(str, range(10)))))
            for t, s in splits.items()
        ]
        self.deviations = [s.deviation for s in splits.values() if s.deviation]
        limits = {"train": limit_train, "valid": limit_eval, "test": limit_eval}
        self.data: dict[str, dict[str, tuple[Tensor, Tensor]]] = {}
        for split, limit in limits.items():
            self.data[split] = {}
            for task, s in splits.items():
                x, y = getattr(s, split)
                self.data[split][task] = (
                    to_float(x[:limit] if limit else x),
                    y[:limit] if limit else y,
                )
        for split, limit in limits.items():
            cut = [t for t, sp in splits.items() if limit and limit < len(getattr(sp, split)[1])]
            if cut:
                key = "train" if split == "train" else "eval"
                self.deviations.append(
                    f"{split} of {', '.join(cut)} cut to the first {limit} images (data.limit_{key})"
                )
        if self.affine:
            self.deviations.append(
                "data.random_affine augments training batches only (the authors' toy.py also "
                "passes the test images through the RandomAffine)"
            )
        first = next(iter(self.data["train"].values()))[0]
        self.input_spec = InputSpec(
            modality="image", channels=first.shape[1], height=first.shape[2], width=first.shape[3]
        )

    def sizes(self) -> dict[str, dict[str, int]]:
        return {split: {t: len(y) for t, (_, y) in d.items()} for split, d in self.data.items()}

    def steps_per_epoch(self, batch_size: int) -> int:
        """One pass over the largest task; smaller tasks start another shuffled pass."""
        return max(math.ceil(len(y) / batch_size) for _, y in self.data["train"].values())

    def train_steps(
        self, batch_size: int, epoch: int, seed: int, steps: int | None = None
    ) -> Iterator[list[Group]]:
        n_steps = steps or self.steps_per_epoch(batch_size)
        orders: dict[str, Tensor] = {}
        sizes: dict[str, int] = {}  # per task: a task smaller than a batch gives all its images
        for k, (task, (_, y)) in enumerate(self.data["train"].items()):
            what = f"{task} images"
            sizes[task] = size = capped_batch_size(batch_size, len(y), what, self.deviations)
            g = torch.Generator().manual_seed(seed * 100_003 + epoch * 101 + k)
            passes = math.ceil(n_steps * size / len(y))
            orders[task] = torch.cat([torch.randperm(len(y), generator=g) for _ in range(passes)])
        for step in range(n_steps):
            groups: list[Group] = []
            for k, (task, (x, y)) in enumerate(self.data["train"].items()):
                size = sizes[task]
                idx = orders[task][step * size : (step + 1) * size]
                images = x[idx]
                if task in self.affine:
                    # torch takes seeds below 2**64; the modulo changes none below it
                    draw = ((seed * 100_003 + epoch * 101 + k) * 1_000_003 + step) % 2**64
                    images = random_affine(images, self.affine[task], draw)
                groups.append((images, {task: y[idx]}))
            yield groups

    def train_subset(self, fraction: float, seed: int, part: str) -> ImageTasksData:
        """A view with one part of each task's training images (drawn per task from ``seed``);
        see :func:`mtlrun.data.subset.split_indices`. Validation and test are shared."""
        view = copy.copy(self)
        train = {}
        for k, (task, (x, y)) in enumerate(self.data["train"].items()):
            idx = split_indices(len(y), fraction, seed * 1_000_003 + k, part)
            train[task] = (x[idx], y[idx])
        view.data = {**self.data, "train": train}
        return view

    def eval_order(self, split: str) -> None:
        """Images of one size: the file order is as fast as any."""
        return None

    def eval_groups(
        self, split: str, batch_size: int, order: Sequence[int] | None = None
    ) -> Iterator[Group]:
        if order is not None:
            raise ValueError("image tasks are evaluated in file order (eval_order is None)")
        for task, (x, y) in self.data[split].items():
            for k in range(0, len(y), batch_size):
                yield x[k : k + batch_size], {task: y[k : k + batch_size]}


def mnist3_data(
    root: str,
    tasks: Sequence[str] = MNIST3_TASKS,
    valid_size: int = 5000,
    missing_train: str = "error",
    split_seed: int = 0,
    limit_train: int | None = None,
    limit_eval: int | None = None,
    name: str = "mnist3",
    modality: str = "image",
    random_affine: Mapping[str, float] | None = None,
) -> ImageTasksData:
    """MNIST + Fashion-MNIST + KMNIST (METHODS §2) from torchvision's raw layout under ``root``:
    ``data=vision`` (:func:`mtlrun.data.vision.vision_data`) with the tasks ``mnist: MNIST``,
    ``fashion: FashionMNIST``, ``kmnist: KMNIST`` (class names as the thesis writes them).

    Every selected task's files are checked before any is read into training tensors.
    ``random_affine``: task -> degrees of a RandomAffine(degrees, shear=degrees) on its training
    batches (the authors' configs/trinist: mnist 10, fashion 10, kmnist 20); empty: none.
    """
    affine = affine_degrees(random_affine, tasks)
    unknown = [t for t in tasks if t not in MNIST3_TASKS]
    if unknown or not tasks:
        raise ConfigError(
            f"`data.tasks` should be a non-empty subset of {list(MNIST3_TASKS)}. "
            f"Found `data.tasks = {list(tasks)}`."
        )
    check_split_arguments(valid_size, missing_train)
    for t in tasks:  # the mnist3 way on for a missing file: data.tasks=[<the others>]
        check_files(Path(root), t, missing_train)
    specs = {t: VisionTask(dataset=FOLDERS[t]) for t in tasks}
    splits, _ = load_vision_splits(
        specs, root, valid_size=valid_size, missing_train=missing_train, split_seed=split_seed
    )
    splits = {t: replace(s, classes=CLASS_NAMES[t]) for t, s in splits.items()}
    return ImageTasksData(name, splits, limit_train, limit_eval, affine)
