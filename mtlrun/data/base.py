"""What every data set hands to the rest of mtlrun: tasks, input spec, batches."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from torch import Tensor

from mtlrun.errors import ConfigError

log = logging.getLogger(__name__)

IGNORE_INDEX = -100  # target value of padding positions (ignored by the loss and the metrics)


@dataclass(frozen=True)
class Task:
    """One prediction task.

    ``metric`` is the task's primary score: ``"accuracy"`` (token or image accuracy) or
    ``"f1"`` (entity-level micro F1, conlleval-compatible, via seqeval).
    ``labels[i]`` is the name of class ``i``. ``scheme`` is the span tag scheme of the labels of
    an ``"f1"`` task (``"bio"`` or ``"bioes"``, see :mod:`mtlrun.data.tags`); it is scored in BIO.
    """

    name: str
    metric: str
    labels: tuple[str, ...]
    scheme: str = "bio"

    @property
    def n_classes(self) -> int:
        return len(self.labels)


class TextInputs(NamedTuple):
    """A padded batch of sentences.

    words: (B, L) word ids (0 = padding, 1 = unknown); chars: (B, L, C) char ids
    (0 = padding, 1 = unknown); lengths: (B,) sentence lengths (on the CPU, for packing).
    """

    words: Tensor
    chars: Tensor
    lengths: Tensor


@dataclass(frozen=True)
class InputSpec:
    """What a backbone needs to know about its inputs to size its first block."""

    modality: str  # "text" | "image"
    n_words: int = 0
    n_chars: int = 0
    words: tuple[str, ...] = ()  # id -> word form (for pretrained embeddings)
    # Word ids >= n_train_words are forms seen only in valid/test (None: every id is a training
    # form). A model maps them to the unknown word unless pretrained vectors know them.
    n_train_words: int | None = None
    channels: int = 0
    height: int = 0
    width: int = 0


# One group of a step: the inputs and the targets of the tasks that read them.
# CoNLL and toy have one group carrying every task; mnist3 has one group per task.
Group = tuple[Any, dict[str, Tensor]]


class MultiTaskData(Protocol):
    """A data set ready for training: see :mod:`mtlrun.data.tagging` and :mod:`mtlrun.data.images`."""

    name: str
    tasks: list[Task]
    input_spec: InputSpec
    deviations: list[str]

    def sizes(self) -> dict[str, dict[str, int]]:
        """Examples per split (and per task where tasks have their own inputs)."""
        ...

    def steps_per_epoch(self, batch_size: int) -> int: ...

    def train_steps(
        self, batch_size: int, epoch: int, seed: int, steps: int | None = None
    ) -> Iterator[list[Group]]:
        """The training steps of one epoch; the order depends only on (seed, epoch)."""
        ...

    def eval_order(self, split: str) -> list[int] | None:
        """An order of the split's examples that evaluates fastest (text: shortest sentences
        first, so batches carry little padding), or None for the file order."""
        ...

    def eval_groups(
        self, split: str, batch_size: int, order: Sequence[int] | None = None
    ) -> Iterator[Group]:
        """The split in batches, in file order or in ``order`` (from :meth:`eval_order`)."""
        ...

    def train_subset(self, fraction: float, seed: int, part: str) -> MultiTaskData:
        """The same data with one part of each task's training examples (validation and test
        unchanged): ``"held_out"``, a ``fraction`` drawn with ``seed``, or ``"rest"``, the
        others (see :mod:`mtlrun.data.subset`); :class:`TooSmallToSplit` when a training set
        has fewer than 2 examples."""
        ...


def capped_batch_size(batch_size: int, n: int, what: str, deviations: list[str]) -> int:
    """``batch_size``, or ``n`` when the training set (``n`` ``what``) is smaller.

    A larger batch would repeat examples within itself (and allocate ``batch_size`` of them:
    100000 on the toy set took 22 GB). A cap is a departure from the configured protocol: it is
    logged once and recorded in ``deviations`` (``data.deviations`` of metrics.json).
    """
    if n < 1 or batch_size <= n:
        return batch_size
    note = (
        f"training batches of {n} {what} (the whole training set, each once) instead of "
        f"trainer.batch_size={batch_size}"
    )
    if note not in deviations:
        deviations.append(note)
        log.warning("%s: the batch size is capped at the training set's size", note)
    return n


class TooSmallToSplit(ConfigError):
    """``train_subset`` cannot split a training set of ``n`` < 2 examples into two non-empty
    parts; the method that asked for the parts names its keys (it knows which chose them)."""

    def __init__(self, n: int) -> None:
        super().__init__(f"cannot split a training set of {n} example(s) into two parts")
        self.n = n


@dataclass
class Predictions:
    """Gold and predicted label names of one split, per task, one list per example."""

    gold: dict[str, list[list[str]]] = field(default_factory=dict)
    pred: dict[str, list[list[str]]] = field(default_factory=dict)
    words: list[list[str]] = field(default_factory=list)


def task_names(tasks: Sequence[Task]) -> list[str]:
    return [t.name for t in tasks]
