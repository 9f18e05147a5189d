"""Blocks + per-task paths: the multi-task network every sharing method builds."""

from mtlrun.model.paths import MultiTaskModel

__all__ = ["MultiTaskModel"]
