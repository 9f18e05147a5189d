"""The sharing-method protocol: build the multi-task network from a backbone's blocks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from mtlrun.backbones.base import Backbone
from mtlrun.data.base import Task
from mtlrun.model.paths import MultiTaskModel


class SharingMethod(Protocol):
    """Decides which tasks share which blocks (METHODS §4)."""

    def build(self, backbone: Backbone, tasks: Sequence[Task]) -> MultiTaskModel: ...


def head_name(task: str) -> str:
    return f"head:{task}"
