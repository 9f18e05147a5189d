"""Errors that mtlrun reports to the user as one short message (no traceback)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class MtlrunError(Exception):
    """Base class: the CLI prints ``str(error)`` and exits with status 2."""


class ConfigError(MtlrunError):
    """A configuration value is wrong; the message names the key and the allowed values."""


class DataError(MtlrunError):
    """A data file is missing or malformed; the message names the file (and line)."""


class StorageError(MtlrunError):
    """A file could not be written (no space left, a file-size limit, no permission)."""


class DivergedError(MtlrunError):
    """Training produced a non-finite loss or gradient; the message names task, epoch and step."""


class ArgumentErrors:
    """The problems of one component's arguments, raised together as one ConfigError.

    A constructor records every check (:meth:`choice`, :meth:`require`, :meth:`add`) and raises
    once (:meth:`raise_if_any`), so ``balancer.solver=bad balancer.normalize=bad`` names both
    keys in one message (STYLE §7). ``group`` is the config group the keys belong to.
    """

    def __init__(self, group: str = "balancer") -> None:
        self.group = group
        self.problems: list[str] = []

    def add(self, problem: str) -> None:
        if problem not in self.problems:  # e.g. hybrid checks the keys it shares with both phases
            self.problems.append(problem)

    def require(self, ok: bool, key: str, should: str, value: Any) -> None:
        """Record "`<group>.<key>` should be <should>. Found …" unless ``ok``."""
        if not ok:
            full = f"{self.group}.{key}"
            self.add(f"`{full}` should be {should}. Found `{full} = {value}`.")

    def choice(self, key: str, value: str, allowed: Sequence[str]) -> None:
        self.require(value in allowed, key, f"one of {', '.join(allowed)}", value)

    def raise_if_any(self) -> None:
        if len(self.problems) == 1:
            raise ConfigError(self.problems[0])
        if self.problems:
            raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(self.problems))
