"""A task's training and test sets from a :mod:`torchvision.datasets` class, as tensors.

The class reads its own file format (CIFAR pickles, SVHN ``.mat``, EMNIST idx, …) and checks
the files its own way (md5 sums for CIFAR and SVHN); this module builds it for the training and
the test set (:func:`read_class`), turns what it holds into uint8 images (N, C, H, W) and int64
labels (N,), and turns every failure into one :class:`~mtlrun.errors.ConfigError` (a wrong
argument) or :class:`~mtlrun.errors.DataError` (missing or unreadable files) that names the
task, the class and the folder.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision.datasets as tvd
from PIL import Image
from torch import Tensor
from torchvision.transforms.v2.functional import pil_to_tensor, resize

from mtlrun.data.mnist3 import RawTask
from mtlrun.errors import ConfigError, DataError

# Keywords mtlrun passes itself; a task's ``args`` may not set them (nor the split keyword).
OWN_KEYWORDS = ("root", "download", "transform", "target_transform", "transforms")


def dataset_class(name: str) -> type | None:
    """``torchvision.datasets.<name>`` when it is a VisionDataset class, else None."""
    cls = getattr(tvd, name, None)
    if isinstance(cls, type) and issubclass(cls, tvd.VisionDataset):
        return cls
    return None


def dataset_names() -> list[str]:
    """Every VisionDataset class of torchvision.datasets (for suggestions)."""
    return sorted(n for n in tvd.__all__ if dataset_class(n) is not None)


def init_keywords(cls: type) -> set[str]:
    """The keyword arguments of ``cls(...)``, following ``**kwargs`` to the parent classes
    (``EMNIST(root, split, **kwargs)`` passes ``train`` on to ``MNIST``)."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = vars(klass).get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        names |= {p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return names - {"self"}


def split_keyword(cls: type) -> str | None:
    """How ``cls`` picks its training or test set: ``"train"`` (a bool), ``"split"`` (a name),
    or None when it takes neither."""
    keywords = init_keywords(cls)
    return "train" if "train" in keywords else "split" if "split" in keywords else None


def idx_layout(cls: type) -> bool:
    """True for MNIST and the classes that keep its four raw idx files (FashionMNIST, KMNIST):
    mtlrun reads those file by file (:func:`mtlrun.data.mnist3.read_idx_task`)."""
    if not issubclass(cls, tvd.MNIST):
        return False
    return (
        getattr(cls, "_load_data", None) is tvd.MNIST._load_data
        and getattr(cls, "_check_exists", None) is tvd.MNIST._check_exists
        and len(getattr(cls, "resources", ())) == 4
    )


@contextlib.contextmanager
def checksums_off(cls: type) -> Iterator[None]:
    """While building ``cls``, torchvision's ``check_integrity(path, md5)`` only asks whether
    the file exists (``data.verify=false``: a copy that is not byte-identical to the
    published archives, e.g. re-encoded or generated in the real layout)."""

    def exists(fpath: str | os.PathLike[str], md5: str | None = None) -> bool:
        return os.path.isfile(fpath)

    modules = {sys.modules[k.__module__] for k in cls.__mro__ if k.__module__ in sys.modules}
    patched = [m for m in modules if callable(getattr(m, "check_integrity", None))]
    saved = [m.check_integrity for m in patched]
    try:
        for module in patched:
            module.check_integrity = exists  # type: ignore[attr-defined]
        yield
    finally:
        for module, original in zip(patched, saved, strict=True):
            module.check_integrity = original  # type: ignore[attr-defined]


def check_arguments(task: str, cls: type, kwargs: Mapping[str, Any]) -> None:
    """A ConfigError naming ``data.tasks.<task>.args`` unless ``cls`` takes ``kwargs``."""
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError as e:
        name = f"torchvision.datasets.{cls.__name__}"
        raise ConfigError(f"`data.tasks.{task}.args`: {name}: {e}") from None


def build(
    task: str,
    cls: type,
    kwargs: Mapping[str, Any],
    verify: bool,
    ways: str,
) -> Any:
    """``cls(**kwargs)``: a wrong argument is a ConfigError naming ``data.tasks.<task>.args``,
    anything else the class raises (files missing, corrupt, a failed download) a DataError
    naming the class, the folder, the class's own message and ``ways`` on."""
    name = f"torchvision.datasets.{cls.__name__}"
    check_arguments(task, cls, kwargs)
    try:
        with contextlib.nullcontext() if verify else checksums_off(cls):
            return cls(**kwargs)
    except ValueError as e:
        if str(e).startswith("Unknown value"):  # torchvision's verify_str_arg (a split, args)
            raise ConfigError(f"`data.tasks.{task}`: {name}: {e}") from None
        raise DataError(_failure(task, name, kwargs, e, ways)) from None
    except Exception as e:  # noqa: BLE001 - formats fail in many ways (pickle, scipy, zlib, …)
        raise DataError(_failure(task, name, kwargs, e, ways)) from None


def _failure(task: str, name: str, kwargs: Mapping[str, Any], e: Exception, ways: str) -> str:
    what = ", ".join(f"{k}={v!r}" for k, v in kwargs.items() if k != "root")
    reason = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    root = os.path.abspath(str(kwargs.get("root", ".")))
    return f"{task}: {name}({what}) under {root} failed ({reason.strip()}). Ways on: {ways}."


def _image_tensor(image: Any, where: str) -> Tensor:
    """A PIL image as uint8 (C, H, W); modes other than L and RGB are converted to RGB."""
    if not isinstance(image, Image.Image):
        raise DataError(f"{where} gives {type(image).__name__} images, not PIL images")
    if image.mode not in ("L", "RGB"):
        image = image.convert("RGB")
    return pil_to_tensor(image)


def _label(target: Any, where: str) -> int:
    if isinstance(target, Tensor) and target.numel() == 1:
        target = target.item()
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        return int(target)
    raise DataError(
        f"{where} gives targets like {target!r}; an image task needs one class index per image"
    )


def _stored(ds: Any, first: Tensor, last: Tensor) -> Tensor | None:
    """The class's ``data`` array as uint8 (N, C, H, W) when it holds exactly the images that
    indexing gives (checked on the first and last image), else None."""
    data = getattr(ds, "data", None)
    if not isinstance(data, np.ndarray | Tensor):
        return None
    array = torch.as_tensor(np.asarray(data))
    if array.dtype != torch.uint8 or array.shape[0] != len(ds) or array.dim() not in (3, 4):
        return None
    # (N, H, W) grayscale; (N, H, W, C) as CIFAR keeps it, or (N, C, H, W) as SVHN does
    candidates = [array.unsqueeze(1)] if array.dim() == 3 else [array.permute(0, 3, 1, 2), array]
    for images in candidates:
        same = images.shape[1:] == first.shape and torch.equal(images[0], first)
        if same and torch.equal(images[-1], last):
            return images.contiguous()
    return None


def _stored_labels(ds: Any, first: int, last: int) -> Tensor | None:
    for attr in ("targets", "labels"):
        values = getattr(ds, attr, None)
        if isinstance(values, list | np.ndarray | Tensor) and len(values) == len(ds):
            labels = torch.as_tensor(np.asarray(values)).to(torch.int64).flatten()
            if len(labels) == len(ds) and int(labels[0]) == first and int(labels[-1]) == last:
                return labels
    return None


def to_tensors(ds: Any, where: str, size: tuple[int, int] | None = None) -> tuple[Tensor, Tensor]:
    """Every image of ``ds`` as uint8 (N, C, H, W) and its label as int64 (N,).

    Read from the class's ``data`` and ``targets``/``labels`` arrays when they hold what
    indexing gives, else image by image (``size``: resize images of different sizes to it)."""
    n = len(ds)
    if n == 0:
        raise DataError(f"{where} holds no images")
    (first, y0), (last, y1) = ds[0], ds[n - 1]
    first_t, last_t = _image_tensor(first, where), _image_tensor(last, where)
    images = _stored(ds, first_t, last_t)
    labels = _stored_labels(ds, _label(y0, where), _label(y1, where))
    if images is not None and labels is not None:
        return images, labels
    items = [ds[i] for i in range(n)]
    pictures = [_image_tensor(x, where) for x, _ in items]
    if any(p.shape[0] != pictures[0].shape[0] for p in pictures):  # some grayscale, some RGB
        pictures = [p.expand(3, -1, -1) if p.shape[0] == 1 else p for p in pictures]
    shapes = {tuple(p.shape[1:]) for p in pictures}
    if len(shapes) > 1:
        if size is None:
            raise DataError(
                f"{where} holds images of {len(shapes)} sizes (e.g. "
                f"{' and '.join('x'.join(map(str, s)) for s in sorted(shapes)[:2])}); "
                "set data.size=[H,W] to resize them to one"
            )
        pictures = [resize(p, list(size), antialias=True) for p in pictures]
    return torch.stack(pictures), torch.tensor([_label(y, where) for _, y in items])


def class_names(ds_or_cls: Any) -> tuple[str, ...] | None:
    """The class's ``classes`` as names, or None when it has none (SVHN)."""
    names = getattr(ds_or_cls, "classes", None)
    if isinstance(names, list | tuple) and names:
        return tuple(str(n) for n in names)
    return None


@dataclass(frozen=True)
class ReadOptions:
    """How every task is read: ``download`` (let the class fetch its files), ``verify`` (its
    checksum checks, else "the file exists"), ``missing_train`` (``error`` | ``split_test``)
    and ``size`` (resize images of different sizes within a set to (H, W))."""

    download: bool = False
    verify: bool = True
    missing_train: str = "error"
    size: tuple[int, int] | None = None


def ways_on(task: str, opts: ReadOptions, train: bool) -> str:
    """What a user can do when a task's class finds no usable files."""
    ways = [] if opts.download else ["data.download=true to let torchvision fetch it (online)"]
    if opts.verify:
        ways.append(
            "data.verify=false for a complete copy whose files differ from torchvision's checksums"
        )
    if train and opts.missing_train == "error":
        ways.append("data.missing_train=split_test to build train/valid/test from its test set")
    ways.append(f"data.tasks.{task}.root=PATH or data.root=PATH to read another folder")
    return ", ".join(ways) + f", or drop the task with ~data.tasks.{task}"


def _check_labels(labels: Tensor, n_classes: int, where: str) -> None:
    bad = ((labels < 0) | (labels >= n_classes)).nonzero().flatten()
    if bad.numel():
        i = int(bad[0])
        raise DataError(
            f"{where}: label {int(labels[i])} at index {i} is outside 0..{n_classes - 1}"
        )


def _split_kwargs(cls: type, part: str, split_names: tuple[str, str]) -> dict[str, Any]:
    if split_keyword(cls) == "train":
        return {"train": part == "train"}
    return {"split": split_names[0] if part == "train" else split_names[1]}


def read_class(
    task: str,
    cls: type,
    root: Path,
    args: Mapping[str, Any],
    split_names: tuple[str, str],
    opts: ReadOptions,
) -> tuple[RawTask, tuple[str, ...]]:
    """A task's training set (None when the class finds none and ``split_test`` is allowed)
    and test set, built with ``cls(root, train=…)`` or ``cls(root, split=…)`` and ``args``,
    and its class names (the class's ``classes``, else "0", "1", …)."""
    sets: dict[str, Any] = {}
    for part in ("train", "test"):
        kwargs = {"root": str(root), **args, **_split_kwargs(cls, part, split_names)}
        if "download" in init_keywords(cls):
            kwargs["download"] = opts.download
        try:
            sets[part] = build(task, cls, kwargs, opts.verify, ways_on(task, opts, part == "train"))
        except DataError:
            if part == "test" or opts.missing_train != "split_test":
                raise
    name = f"torchvision.datasets.{cls.__name__}"
    where = {p: f"{task} ({name} {p} set under {root.resolve()})" for p in sets}
    pairs = {p: to_tensors(ds, where[p], opts.size) for p, ds in sets.items()}
    top = max(int(y.max()) for _, y in pairs.values())
    names = class_names(sets["test"]) or tuple(str(i) for i in range(top + 1))
    for part, (_, labels) in pairs.items():
        _check_labels(labels, len(names), where[part])
    train, test = pairs.get("train"), pairs["test"]
    missing = None if train is not None else "training set"
    return RawTask(train, test, where.get("train", where["test"]), missing=missing), names
