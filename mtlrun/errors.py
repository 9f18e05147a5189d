"""Errors that mtlrun reports to the user as one short message (no traceback)."""

from __future__ import annotations


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
