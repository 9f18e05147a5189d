"""Reading ``data=vision``'s tasks: each through its torchvision class (or MNIST's idx files),
then the class choice, the train/valid split and the channel and size conversions.

Every task's images come out uint8 (N, C, H, W) in :class:`~mtlrun.data.mnist3.ImageSplits`;
:mod:`mtlrun.data.vision` (``data=vision``) and :func:`mtlrun.data.images.mnist3_data`
(``data=mnist3``) wrap them for training.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor
from torchvision.transforms.v2.functional import resize, rgb_to_grayscale

from mtlrun.data import torchvision_sets as tvs
from mtlrun.data.mnist3 import (
    ImageSplits,
    Pair,
    RawTask,
    check_files,
    check_split_arguments,
    image_size,
    read_idx_task,
    split_train,
)
from mtlrun.data.vision_tasks import VisionTask
from mtlrun.errors import ConfigError, DataError


def _select(
    task: str, raw: RawTask, names: tuple[str, ...], wanted: Sequence[int | str], dataset: str
) -> tuple[RawTask, tuple[str, ...]]:
    """Keep the images of the ``wanted`` classes, labelled by their place in ``wanted``."""
    index = []
    for w in wanted:
        i = w if isinstance(w, int) else names.index(w) if w in names else -1
        if not 0 <= i < len(names):
            shown = ", ".join(names[:12]) + (", …" if len(names) > 12 else "")
            raise ConfigError(
                f"`data.tasks.{task}.classes`: {w!r} is not a class of "
                f"torchvision.datasets.{dataset} (indices 0..{len(names) - 1} "
                f"or names: {shown})."
            )
        index.append(i)
    lookup = torch.full((len(names),), -1, dtype=torch.int64)
    lookup[torch.tensor(index)] = torch.arange(len(index))

    def keep(pair: Pair) -> Pair:
        new = lookup[pair[1]]
        mask = new >= 0
        if not bool(mask.any()):
            raise DataError(
                f"{task}: no images of data.tasks.{task}.classes={list(wanted)} in "
                f"one of its sets ({raw.source})"
            )
        return pair[0][mask], new[mask]

    train = None if raw.train is None else keep(raw.train)
    return replace(raw, train=train, test=keep(raw.test)), tuple(names[i] for i in index)


def _convert(
    task: str, images: Tensor, channels: int | None, size: tuple[int, int] | None
) -> Tensor:
    """uint8 images (N, H, W) or (N, C, H, W) as (N, C, H, W), converted to ``channels`` (RGB
    to gray by ITU-R 601-2 luma, gray to RGB by copies) and resized to ``size`` (bilinear,
    antialiased), each when given and different."""
    if images.dim() == 3:  # idx files: (N, H, W)
        images = images.unsqueeze(1)
    c = images.shape[1]
    if channels is not None and c != channels:
        if (c, channels) == (3, 1):
            images = rgb_to_grayscale(images)
        elif (c, channels) == (1, 3):
            images = images.expand(-1, 3, -1, -1).contiguous()
        else:
            raise DataError(
                f"{task}: images have {c} channels; data.channels converts between "
                "1 (grayscale) and 3 (RGB) only"
            )
    if size is not None and tuple(images.shape[-2:]) != size:
        images = resize(images, list(size), antialias=True)
    return images


def _conversion_notes(
    task: str, before: Mapping[str, Tensor], after: Mapping[str, Tensor]
) -> list[str]:
    """One note per conversion that changed some of a task's splits (``before``/``after``:
    split -> images), naming the splits unless it changed all three."""
    changes: dict[str, list[str]] = {}
    for split, x in before.items():
        y = after[split]
        c = x.shape[1] if x.dim() == 4 else 1
        if y.shape[1] != c:
            note = f"converted from {c} to {y.shape[1]} channel(s) (data.channels={y.shape[1]})"
            changes.setdefault(note, []).append(split)
        if x.shape[-2:] != y.shape[-2:]:
            h, w = y.shape[-2:]
            size = "x".join(map(str, x.shape[-2:]))
            changes.setdefault(f"resized from {size} to {h}x{w} (data.size=[{h}, {w}])", []).append(
                split
            )
    return [
        f"{task}: {'' if len(splits) == len(before) else ', '.join(splits) + ' '}images {note}"
        for note, splits in changes.items()
    ]


def _folder(spec: VisionTask, root: str) -> Path:
    """The ``root`` given to the task's class: its own, else ``data.root``."""
    return Path(spec.root if spec.root is not None else root)


def _read(
    task: str, spec: VisionTask, root: str, opts: tvs.ReadOptions
) -> tuple[RawTask, tuple[str, ...], list[str]]:
    """A task's training set (None when absent and ``split_test`` is allowed) and test set, its
    class names and notes for ``data.deviations``."""
    cls = tvs.dataset_class(spec.dataset)
    assert cls is not None  # parse_tasks checked the name
    folder = _folder(spec, root)
    if not tvs.idx_layout(cls):
        splits = (spec.train_split, spec.test_split)
        raw, names = tvs.read_class(task, cls, folder, spec.args, splits, opts)
        unchecked = (
            f"{task}: torchvision.datasets.{cls.__name__} files read without torchvision's "
            "checksum check (data.verify=false)"
        )
        return raw, names, [] if opts.verify else [unchecked]
    kwargs = {"root": str(folder), "train": True, "download": opts.download, **spec.args}
    if opts.download:  # the class fetches its four files; mtlrun then reads them
        tvs.build(task, cls, kwargs, True, tvs.ways_on(task, opts, True))
    else:  # only to check spec.args: nothing is read
        tvs.check_arguments(task, cls, kwargs)
    names = tvs.class_names(cls) or tuple(str(i) for i in range(10))
    drop = f"~data.tasks.{task}"
    raw = read_idx_task(folder, task, opts.missing_train, cls.__name__, drop, len(names))
    return raw, names, []


def load_vision_splits(
    specs: Mapping[str, VisionTask],
    root: str,
    download: bool = False,
    verify: bool = True,
    valid_size: int = 5000,
    missing_train: str = "error",
    split_seed: int = 0,
    channels: int | None = None,
    size: Sequence[int] | None = None,
) -> tuple[dict[str, ImageSplits], list[str]]:
    """Every task's train/valid/test (see the module docstring) and the notes for
    ``data.deviations`` (split_test fallbacks are in each split's ``deviation``).

    The idx files of every task are checked before any task is read, so a missing file stops
    the run before minutes of reading."""
    check_split_arguments(valid_size, missing_train)
    shape = None if size is None else (int(size[0]), int(size[1]))
    opts = tvs.ReadOptions(download, verify, missing_train, shape)
    for task, spec in specs.items():
        cls = tvs.dataset_class(spec.dataset)
        if cls is not None and tvs.idx_layout(cls) and not download:
            drop = f"~data.tasks.{task}"
            check_files(_folder(spec, root), task, missing_train, cls.__name__, drop)
    splits: dict[str, ImageSplits] = {}
    notes: list[str] = []
    for task, spec in specs.items():
        raw, names, read_notes = _read(task, spec, root, opts)
        if spec.classes is not None:
            raw, names = _select(task, raw, names, spec.classes, spec.dataset)
        split = split_train(task, raw, valid_size, split_seed)
        train, valid, test = (
            (_convert(task, x, channels, shape), y)
            for x, y in (split.train, split.valid, split.test)
        )
        if test[0].shape[1:] != train[0].shape[1:]:
            raise DataError(
                f"{task}: its test images are {image_size(test[0])} but its training images "
                f"are {image_size(train[0])}; convert them with data.channels=1|3 and/or "
                "data.size=[H,W]"
            )
        before = {"train": split.train[0], "valid": split.valid[0], "test": split.test[0]}
        after = {"train": train[0], "valid": valid[0], "test": test[0]}
        notes += read_notes + _conversion_notes(task, before, after)
        splits[task] = replace(split, train=train, valid=valid, test=test, classes=names)
    return splits, notes
