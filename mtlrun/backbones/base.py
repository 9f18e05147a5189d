"""The backbone protocol: a factory of blocks that sharing methods compose into paths."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol

from torch import Tensor, nn

from mtlrun.data.base import InputSpec, Task


class SeqState(NamedTuple):
    """The state passed between text blocks: features (B, L, D) and lengths (B,) on the CPU."""

    x: Tensor
    lengths: Tensor


class Backbone(Protocol):
    """Builds fresh blocks; a sharing method decides which tasks share which copies.

    ``block_names`` is the trunk in order (the input of block k is the output of block k-1);
    ``make_head(task, in_block)`` builds the task's output layer that reads the output of
    trunk block ``in_block``. Blocks may name submodules in an ``uncounted`` class attribute
    (embedding tables): those parameters are outside the thesis's "# Params" unit.
    ``deviations``: every way the network, with its options, departs from its authors' code
    (metrics.json ``fidelity.backbone``; README *Fidelity*).
    """

    modality: str
    input_spec: InputSpec
    block_names: tuple[str, ...]
    deviations: Sequence[str]

    def make_block(self, name: str) -> nn.Module: ...

    def make_head(self, task: Task, in_block: str | None = None) -> nn.Module: ...


def require(owner: str, ok: bool, message: str) -> None:
    """Raise ``ValueError("<owner>: <message>")`` unless ``ok`` (the runner shows it as a config error)."""
    if not ok:
        raise ValueError(f"{owner}: {message}")


def check_modality(owner: str, expected: str, modality: str, input_spec: InputSpec) -> None:
    """The configured ``modality`` and the data's must both be the backbone's own."""
    require(
        owner,
        modality == expected,
        f"`modality` should be {expected!r}. Found `modality = {modality!r}`.",
    )
    require(
        owner,
        input_spec.modality == expected,
        f"needs {expected} data; the data set's modality is {input_spec.modality!r}.",
    )
