"""Device choice and moving batches."""

from __future__ import annotations

from typing import Any

import torch

from mtlrun.data.base import TextInputs
from mtlrun.errors import ConfigError


def pick_device(name: str) -> torch.device:
    """``auto`` → cuda when available, else cpu; ``cuda`` without a GPU is a ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"`trainer.device` is `{name}` but no CUDA device is available; "
            "use trainer.device=auto or trainer.device=cpu."
        )
    return torch.device(name)


def to_device(obj: Any, device: torch.device) -> Any:
    """Move a batch input to ``device``; sentence lengths stay on the CPU (packing needs them).

    Copies are ``non_blocking``: from a fresh CPU tensor the copy is staged at once and the host
    does not wait for the GPU's queue, so a step never stalls on its inputs.
    """
    if isinstance(obj, TextInputs):
        return TextInputs(
            obj.words.to(device, non_blocking=True),
            obj.chars.to(device, non_blocking=True),
            obj.lengths,
        )
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    return obj
