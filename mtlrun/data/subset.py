"""Disjoint parts of a training set (AdaShare's policy split: seed 002 §3, training strategy).

A data set's ``train_subset(fraction, seed, part)`` keeps only one part of each task's training
examples; validation and test are unchanged. ``part="held_out"`` is a ``fraction`` of the
examples drawn with ``seed``, ``part="rest"`` the others: the two parts are disjoint and together
cover the training set.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mtlrun.data.base import TooSmallToSplit
from mtlrun.errors import ConfigError

PARTS = ("held_out", "rest")


def split_indices(n: int, fraction: float, seed: int, part: str) -> Tensor:
    """Sorted indices of one part of ``range(n)`` (see the module docstring).

    The held-out part has round(fraction · n) examples, at least 1 and at most n − 1, so both
    parts are non-empty; ``n`` must be at least 2.
    """
    if part not in PARTS:
        raise ValueError(f"part should be one of {', '.join(PARTS)}; found {part!r}")
    if not 0 < fraction < 1:
        raise ConfigError(f"a training-set fraction should be in (0, 1); found {fraction}")
    if n < 2:
        raise TooSmallToSplit(n)
    k = min(n - 1, max(1, round(fraction * n)))
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    chosen = order[:k] if part == "held_out" else order[k:]
    return chosen.sort().values
