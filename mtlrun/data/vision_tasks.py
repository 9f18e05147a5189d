"""``data.tasks`` of ``data=vision``: which torchvision data set each task reads, checked.

A task is a class name of :mod:`torchvision.datasets` (``cifar: CIFAR10``) or a mapping of
:data:`TASK_KEYS` (``letters: {dataset: EMNIST, args: {split: letters}, classes: [a, b]}``).
Every problem of every task is reported at once, in the user's key names.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mtlrun.data import torchvision_sets as tvs
from mtlrun.errors import ArgumentErrors

TASK_KEYS = ("dataset", "root", "classes", "args", "train_split", "test_split")


@dataclass(frozen=True)
class VisionTask:
    """One task of ``data.tasks``: a torchvision data set and the part of it to use.

    ``dataset``: the class name in :mod:`torchvision.datasets`; ``root``: the folder given to
    the class (None: ``data.root``); ``classes``: the classes to keep, by index or name, in the
    order of the task's labels (None: all); ``args``: more keyword arguments of the class (e.g.
    ``{split: letters}`` for EMNIST); ``train_split``/``test_split``: the ``split`` names of a
    class that takes one instead of a ``train`` flag (SVHN, STL10, …).
    """

    dataset: str
    root: str | None = None
    classes: tuple[int | str, ...] | None = None
    args: Mapping[str, Any] = field(default_factory=dict)
    train_split: str = "train"
    test_split: str = "test"


def _check_keys(key: str, spec: Mapping[str, Any], errors: ArgumentErrors) -> None:
    for bad in [k for k in spec if k not in TASK_KEYS]:
        near = difflib.get_close_matches(str(bad), TASK_KEYS, n=1)
        hint = f"; did you mean `{key}.{near[0]}`?" if near else ""
        allowed = ", ".join(TASK_KEYS)
        errors.add(f"`{key}.{bad}` is not a key of a vision task{hint} (allowed: {allowed}).")
    for split_key, default in (("train_split", "train"), ("test_split", "test")):
        value = spec.get(split_key, default)
        errors.require(isinstance(value, str), f"{key[5:]}.{split_key}", "a string", value)


def _dataset(key: str, name: Any, errors: ArgumentErrors) -> type | None:
    """The torchvision class ``name`` when it has a training and a test set."""
    cls = tvs.dataset_class(name) if isinstance(name, str) else None
    if cls is None:
        near = difflib.get_close_matches(str(name), tvs.dataset_names(), n=3)
        errors.add(
            f"`{key}.dataset` should name a torchvision.datasets class"
            + (f" (did you mean {', '.join(near)}?)" if near else "")
            + f". Found `{key}.dataset = {name}`."
        )
    elif tvs.split_keyword(cls) is None:
        errors.add(
            f"`{key}.dataset = {name}`: torchvision.datasets.{name} takes neither `train` nor "
            "`split`, so it has no test set to tell apart; bring such data as a Python data "
            "set (docs/data-python.md)."
        )
        return None
    return cls


def _classes_ok(classes: Any) -> bool:
    return classes is None or (
        isinstance(classes, Sequence)
        and not isinstance(classes, str)
        and len(classes) > 0
        and len(set(classes)) == len(classes)
        and all(isinstance(c, int | str) and not isinstance(c, bool) for c in classes)
    )


def _args(key: str, args: Any, cls: type | None, errors: ArgumentErrors) -> dict[str, Any]:
    """The class's extra keyword arguments; mtlrun's own (root, the split, …) are refused."""
    if not isinstance(args, Mapping):
        errors.require(False, f"{key[5:]}.args", "a mapping of keyword arguments", args)
        return {}
    own = {*tvs.OWN_KEYWORDS, (tvs.split_keyword(cls) if cls else None) or ""}
    for bad in [k for k in args if k in own]:
        errors.add(
            f"`{key}.args.{bad}` is set by mtlrun (use `data.root`, `data.download`, "
            f"`{key}.root` or `{key}.train_split`/`test_split`)."
        )
    return dict(args)


def _parse_task(task: str, value: Any, errors: ArgumentErrors) -> VisionTask | None:
    key = f"data.tasks.{task}"
    spec = {"dataset": value} if isinstance(value, str) else value
    if not isinstance(spec, Mapping):
        errors.add(
            f"`{key}` should be a torchvision data set name or {{dataset: NAME, ...}}. "
            f"Found `{key} = {value}`."
        )
        return None
    _check_keys(key, spec, errors)
    cls = _dataset(key, spec.get("dataset"), errors)
    classes = spec.get("classes")
    ok = _classes_ok(classes)
    errors.require(
        ok, f"tasks.{task}.classes", "null or class indices or names without repeats", classes
    )
    args = _args(key, spec.get("args") or {}, cls, errors)
    if cls is None or not ok:
        return None
    return VisionTask(
        dataset=cls.__name__,
        root=None if spec.get("root") is None else str(spec["root"]),
        classes=None if classes is None else tuple(classes),
        args=args,
        train_split=str(spec.get("train_split", "train")),
        test_split=str(spec.get("test_split", "test")),
    )


def parse_tasks(tasks: Any, errors: ArgumentErrors | None = None) -> dict[str, VisionTask]:
    """``data.tasks`` (task name -> a class name, or a mapping of :data:`TASK_KEYS`) as
    :class:`VisionTask` specs. Problems are added to ``errors`` (raised here without one)."""
    own = errors is None
    errors = errors or ArgumentErrors("data")
    if not isinstance(tasks, Mapping) or not tasks:
        errors.add(
            "`data.tasks` should map task names to torchvision data sets, e.g. "
            f"{{cifar: CIFAR10, svhn: {{dataset: SVHN, root: PATH}}}}. Found `data.tasks = {tasks}`."
        )
        tasks = {}
    specs = {str(t): _parse_task(str(t), v, errors) for t, v in tasks.items()}
    if own:
        errors.raise_if_any()
    return {t: s for t, s in specs.items() if s is not None}
