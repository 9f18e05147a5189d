"""The backbone protocol: a factory of blocks that sharing methods compose into paths."""

from __future__ import annotations

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
    """

    modality: str
    input_spec: InputSpec
    block_names: tuple[str, ...]

    def make_block(self, name: str) -> nn.Module: ...

    def make_head(self, task: Task, in_block: str | None = None) -> nn.Module: ...
