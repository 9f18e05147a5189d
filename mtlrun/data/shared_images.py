"""Image tasks that read the same images: one input, one label per task (multi-label data).

A step is one group carrying every task's targets, as for text data, so the tasks share each
block's output Z and the representation-gradient balancers (MGDA-UB, ``balancer.on=z``) apply.
Built from a Python data set's :class:`~mtlrun.data.custom.SharedTensors`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Mapping, Sequence

import torch
from torch import Tensor

from mtlrun.data.base import Group, InputSpec, Task, capped_batch_size
from mtlrun.data.images import to_float
from mtlrun.data.subset import split_indices

SPLITS = ("train", "valid", "test")


class SharedImageData:
    """Images (N, C, H, W) and per-task labels (N,) per split; batches are index slices."""

    modality = "image"

    def __init__(
        self,
        name: str,
        splits: Mapping[str, tuple[Tensor, Mapping[str, Tensor]]],
        classes: Mapping[str, Sequence[str]],
        limit_train: int | None = None,
        limit_eval: int | None = None,
    ) -> None:
        self.name = name
        self.tasks = [Task(t, "accuracy", tuple(names)) for t, names in classes.items()]
        self.deviations: list[str] = []
        self.data: dict[str, tuple[Tensor, dict[str, Tensor]]] = {}
        for split in SPLITS:
            limit = limit_train if split == "train" else limit_eval
            images, labels = splits[split]
            if limit and limit < len(images):
                key = "train" if split == "train" else "eval"
                self.deviations.append(
                    f"{split} cut to the first {limit} images (data.limit_{key})"
                )
            cut = slice(None, limit or None)
            self.data[split] = (to_float(images[cut]), {t: labels[t][cut] for t in classes})
        _, c, h, w = self.data["train"][0].shape
        self.input_spec = InputSpec(modality="image", channels=c, height=h, width=w)

    def sizes(self) -> dict[str, dict[str, int]]:
        return {split: {"images": len(x)} for split, (x, _) in self.data.items()}

    def steps_per_epoch(self, batch_size: int) -> int:
        return math.ceil(len(self.data["train"][0]) / batch_size)

    def train_steps(
        self, batch_size: int, epoch: int, seed: int, steps: int | None = None
    ) -> Iterator[list[Group]]:
        x, labels = self.data["train"]
        size = capped_batch_size(batch_size, len(x), f"{self.name} images", self.deviations)
        n_steps = steps or self.steps_per_epoch(size)
        g = torch.Generator().manual_seed(seed * 100_003 + epoch)
        passes = math.ceil(n_steps * size / len(x))
        order = torch.cat([torch.randperm(len(x), generator=g) for _ in range(passes)])
        for step in range(n_steps):
            idx = order[step * size : (step + 1) * size]
            yield [(x[idx], {t: y[idx] for t, y in labels.items()})]

    def train_subset(self, fraction: float, seed: int, part: str) -> SharedImageData:
        """A view with one part of the training images (:func:`split_indices`)."""
        x, labels = self.data["train"]
        idx = split_indices(len(x), fraction, seed, part)
        view = copy.copy(self)
        view.data = {**self.data, "train": (x[idx], {t: y[idx] for t, y in labels.items()})}
        return view

    def eval_order(self, split: str) -> None:
        """Images of one size: the file order is as fast as any."""
        return None

    def eval_groups(
        self, split: str, batch_size: int, order: Sequence[int] | None = None
    ) -> Iterator[Group]:
        if order is not None:
            raise ValueError("image tasks are evaluated in file order (eval_order is None)")
        x, labels = self.data[split]
        for k in range(0, len(x), batch_size):
            yield x[k : k + batch_size], {t: y[k : k + batch_size] for t, y in labels.items()}
