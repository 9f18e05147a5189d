"""A Python data set (``data=python``): one's own tasks from a Python function.

``data.factory`` names a function, ``package.module:function`` (importable from the Python
path) or ``path/to/file.py:function`` (a file, relative to the launch folder). mtlrun calls it
with ``data.args`` as keyword arguments, and it returns one of

- a mapping of task name -> :class:`TaskTensors`: each task its own images and labels for
  train, valid and test, trained as ``data=vision`` tasks are (one input stream per task, one
  batch of each task per step; :class:`~mtlrun.data.images.ImageTasksData`);
- :class:`SharedTensors`: one set of images with a label per task (multi-label data; one batch
  carries every task, :class:`~mtlrun.data.shared_images.SharedImageData`);
- an object implementing :class:`~mtlrun.data.base.MultiTaskData` (any input, e.g. text),
  used as it is.

docs/data-python.md shows each, with an example module.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mtlrun.data.images import ImageTasksData
from mtlrun.data.mnist3 import ImageSplits
from mtlrun.data.shared_images import SharedImageData
from mtlrun.errors import ConfigError, DataError

SPLITS = ("train", "valid", "test")
# What mtlrun reads of a MultiTaskData object (mtlrun/data/base.py).
PROTOCOL = (
    "name",
    "tasks",
    "input_spec",
    "deviations",
    "sizes",
    "steps_per_epoch",
    "train_steps",
    "eval_order",
    "eval_groups",
    "train_subset",
)


@dataclass(frozen=True)
class TaskTensors:
    """One task's examples: ``(images, labels)`` for each split.

    images: (N, C, H, W) (or (N, H, W), one channel), uint8 in 0..255 (scaled to [-1, 1] as
    torchvision sets are) or floats (used as they are); labels: (N,) integers in
    ``0..n_classes-1``. ``classes`` names the labels (default: "0", "1", … up to the largest).
    Every task's images must have one shape (C, H, W): the tasks share one backbone input.
    """

    train: tuple[Tensor, Tensor]
    valid: tuple[Tensor, Tensor]
    test: tuple[Tensor, Tensor]
    classes: Sequence[str] | None = None


@dataclass(frozen=True)
class SharedTensors:
    """Tasks that label the same images: ``(images, {task: labels})`` for each split.

    Images and labels as in :class:`TaskTensors`; every task has a label for every image.
    ``classes`` maps a task to its label names (default: "0", "1", … up to the largest).
    """

    train: tuple[Tensor, Mapping[str, Tensor]]
    valid: tuple[Tensor, Mapping[str, Tensor]]
    test: tuple[Tensor, Mapping[str, Tensor]]
    classes: Mapping[str, Sequence[str]] | None = None


def load_factory(factory: str | None) -> Callable[..., Any]:
    """The function named by ``data.factory`` (see the module docstring); ConfigError if none."""
    text = factory or ""
    where, _, attr = text.rpartition(":") if ":" in text else text.rpartition(".")
    if not where or not attr.isidentifier():
        raise ConfigError(
            "`data.factory` should be `package.module:function` or `path/to/file.py:function`. "
            f"Found `data.factory = {factory}`."
        )
    if where.endswith(".py"):
        module = _module_from_file(Path(where), text)
    else:
        try:
            module = importlib.import_module(where)
        except ModuleNotFoundError as e:
            raise ConfigError(
                f"`data.factory = {factory}`: importing {where} failed ({e}). Put its folder on "
                f"PYTHONPATH, or name the file: data.factory=path/to/{where.split('.')[-1]}.py:"
                f"{attr}."
            ) from None
    function = getattr(module, attr, None)
    if not callable(function):
        raise ConfigError(f"`data.factory = {factory}`: {where} has no function {attr}.")
    return function


def _module_from_file(path: Path, factory: str) -> Any:
    if not path.is_file():
        raise ConfigError(f"`data.factory = {factory}`: no file {path.resolve()}.")
    name = f"mtlrun_data_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None  # a .py file always has both
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look their module up by name
    spec.loader.exec_module(module)
    return module


def _check_pair(task: str, split: str, pair: Any, factory: str) -> tuple[Tensor, Tensor]:
    where = f"`data.factory = {factory}`: {task} {split}"
    ok = isinstance(pair, tuple | list) and len(pair) == 2
    if not ok or not all(isinstance(t, Tensor) for t in pair):
        raise DataError(f"{where} should be a pair (images, labels) of tensors")
    images, labels = pair
    if images.dim() not in (3, 4) or not (
        images.dtype == torch.uint8 or images.is_floating_point()
    ):
        raise DataError(
            f"{where} images should be uint8 or float (N, C, H, W) or (N, H, W); found "
            f"{images.dtype} {tuple(images.shape)}"
        )
    if labels.dim() != 1 or labels.is_floating_point() or labels.dtype == torch.bool:
        raise DataError(
            f"{where} labels should be integers (N,); found {labels.dtype} {tuple(labels.shape)}"
        )
    if len(labels) != len(images) or not len(labels):
        raise DataError(f"{where} holds {len(images)} images and {len(labels)} labels")
    return images.unsqueeze(1) if images.dim() == 3 else images, labels.long()


def _classes(
    task: str, pairs: Mapping[str, tuple[Tensor, Tensor]], names: Any, factory: str
) -> tuple[str, ...]:
    """The task's label names, its labels checked against them and its images against one
    shape (C, H, W) over the splits."""
    top = max(int(y.max()) for _, y in pairs.values())
    classes = tuple(map(str, names if names is not None else range(top + 1)))
    shape = pairs["train"][0].shape[1:]
    for split, (images, labels) in pairs.items():
        where = f"`data.factory = {factory}`: {task} {split}"
        if int(labels.min()) < 0 or int(labels.max()) >= len(classes):
            raise DataError(
                f"{where} labels should be in 0..{len(classes) - 1} ({len(classes)} classes); "
                f"found {int(labels.min())}..{int(labels.max())}"
            )
        if images.shape[1:] != shape:
            raise DataError(
                f"{where} images are {tuple(images.shape[1:])} but its train images are "
                f"{tuple(shape)}; every split feeds the same backbone input"
            )
    return classes


def _per_task(result: Mapping[str, Any], chosen: list[str], factory: str) -> dict[str, ImageSplits]:
    splits = {}
    for task in chosen:
        value = result[task]
        if not isinstance(value, TaskTensors):
            raise DataError(
                f"`data.factory = {factory}`: task {task} is a {type(value).__name__}, not a "
                "mtlrun.data.custom.TaskTensors"
            )
        pairs = {s: _check_pair(task, s, getattr(value, s), factory) for s in SPLITS}
        classes = _classes(task, pairs, value.classes, factory)
        splits[task] = ImageSplits(pairs["train"], pairs["valid"], pairs["test"], classes=classes)
    return splits


def _shared_pair(result: SharedTensors, split: str, factory: str) -> tuple[Any, Mapping]:
    value = getattr(result, split)
    if not (isinstance(value, tuple | list) and len(value) == 2 and isinstance(value[1], Mapping)):
        raise DataError(
            f"`data.factory = {factory}`: SharedTensors.{split} should be a pair "
            "(images, {task: labels})"
        )
    return value[0], value[1]


def _shared(
    result: SharedTensors, tasks: Sequence[str] | None, factory: str
) -> tuple[dict[str, tuple[Tensor, dict[str, Tensor]]], dict[str, tuple[str, ...]]]:
    """The chosen tasks' splits as ``(images, {task: labels})`` and their label names."""
    pairs = {split: _shared_pair(result, split, factory) for split in SPLITS}
    chosen = _chosen([str(t) for t in pairs["train"][1]], tasks)
    splits: dict[str, tuple[Tensor, dict[str, Tensor]]] = {}
    for split, (images, labels) in pairs.items():
        missing = [t for t in chosen if t not in labels]
        if missing:
            raise DataError(
                f"`data.factory = {factory}`: SharedTensors.{split} has no labels of {missing}"
            )
        checked = {t: _check_pair(t, split, (images, labels[t]), factory) for t in chosen}
        splits[split] = (checked[chosen[0]][0], {t: y for t, (_, y) in checked.items()})
    names = dict(result.classes or {})
    classes = {
        t: _classes(t, {s: (x, ys[t]) for s, (x, ys) in splits.items()}, names.get(t), factory)
        for t in chosen
    }
    return splits, classes


def _chosen(available: list[str], tasks: Sequence[str] | None) -> list[str]:
    chosen = list(available) if tasks is None else [str(t) for t in tasks]
    unknown = [t for t in chosen if t not in available]
    if unknown or not chosen or len(set(chosen)) != len(chosen):
        raise ConfigError(
            f"`data.tasks` should be null or a non-empty subset of {available} (the tasks "
            f"`data.factory` returned) without repeats. Found `data.tasks = {chosen}`."
        )
    return chosen


def _object(
    data: Any,
    factory: str,
    modality: str,
    tasks: Sequence[str] | None,
    limits: dict[str, int | None],
) -> Any:
    """A MultiTaskData the factory built, checked against the config."""
    missing = [a for a in PROTOCOL if not hasattr(data, a)]
    if missing:
        raise ConfigError(
            f"`data.factory = {factory}` returned a {type(data).__name__}, which lacks "
            f"{', '.join(missing)}: return a mapping of task name -> TaskTensors, or an object "
            "implementing mtlrun.data.base.MultiTaskData (docs/data-python.md)"
        )
    if data.input_spec.modality != modality:
        raise ConfigError(
            f"`data.modality` should be {data.input_spec.modality}, the modality of the data "
            f"set `data.factory = {factory}` returned (with a fitting backbone). Found "
            f"`data.modality = {modality}`."
        )
    names = [t.name for t in data.tasks]
    if tasks is not None and list(tasks) != names:
        raise ConfigError(
            f"`data.tasks` should be null or {names} (the tasks of the data set "
            f"`data.factory` returned). Found `data.tasks = {list(tasks)}`."
        )
    for key, value in limits.items():
        if value is not None:
            raise ConfigError(
                f"`data.{key}` applies to TaskTensors; the data set "
                f"`data.factory` returned sizes itself. Found `data.{key} = {value}`."
            )
    return data


def python_data(
    factory: str | None,
    args: Mapping[str, Any] | None = None,
    tasks: Sequence[str] | None = None,
    name: str = "python",
    modality: str = "image",
    limit_train: int | None = None,
    limit_eval: int | None = None,
) -> Any:
    """The data set ``factory(**args)`` returns (see the module docstring).

    ``tasks``: the tasks to train, in this order (None: all the factory returns);
    ``limit_train``/``limit_eval``: keep the first N examples of each task's splits.
    """
    function = load_factory(factory)
    factory = str(factory)
    kwargs = dict(args or {})
    try:
        inspect.signature(function).bind(**kwargs)
    except TypeError as e:
        raise ConfigError(f"`data.args` do not fit `data.factory = {factory}`: {e}.") from None
    result = function(**kwargs)
    if not isinstance(result, Mapping | SharedTensors):
        limits = {"limit_train": limit_train, "limit_eval": limit_eval}
        return _object(result, factory, modality, tasks, limits)
    if modality != "image":
        raise ConfigError(
            f"`data.modality` should be image for {type(result).__name__}. Found "
            f"`data.modality = {modality}`."
        )
    if isinstance(result, SharedTensors):
        splits, classes = _shared(result, tasks, factory)
        return SharedImageData(name, splits, classes, limit_train, limit_eval)
    chosen = _chosen([str(t) for t in result], tasks)
    return ImageTasksData(name, _per_task(result, chosen, factory), limit_train, limit_eval)
