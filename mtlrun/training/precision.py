"""Mixed precision of the training steps (``trainer.precision``): autocast and fp16 loss scaling.

``fp32`` changes nothing. ``bf16`` runs each training step's forward pass and losses under
:func:`torch.autocast` with bfloat16, on a GPU or a CPU; bfloat16 has float32's exponent range,
so gradients need no scaling. ``fp16`` (a CUDA device only) autocasts to float16 and scales the
gradients with :class:`torch.amp.GradScaler`: a step whose gradients overflowed is skipped and the
scale halved, otherwise the scale doubles every 2,000 steps. Weights, optimiser states,
validation and testing stay in float32.

The scale enters the backward pass only (:class:`_ScaledBackward`): a balancer reads the true
loss values (uncertainty weighting, DWA, FAMO see the same numbers as in fp32), and every
gradient it sees is ``scale`` times larger. The update is unscaled before clipping, so a balancer
whose update scales with the gradients makes fp32's update. Measured on one toy batch (scale
2^12 against 1, three steps): 25 of the 29 balancer options agree to 2e-5 or better; fairgrad,
moco, modo and nash_mtl do not (their weights depend on gradient magnitudes, e.g. Nash-MTL's α
solves Gα = 1/α): use ``bf16`` with those. A step whose scaled gradients a balancer refuses as
non-finite (MGDA's min-norm solver) counts as an overflow too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from mtlrun.errors import ConfigError

PRECISIONS = ("fp32", "bf16", "fp16")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse a precision the device cannot train in, in one line naming the key."""
    if precision not in PRECISIONS:
        raise ConfigError(
            f"`trainer.precision` should be one of {', '.join(PRECISIONS)}. "
            f"Found `trainer.precision = {precision}`."
        )
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError(
            f"`trainer.precision=fp16` needs a CUDA device; this run is on {device.type}. "
            "Use trainer.precision=bf16 (autocast on the CPU too) or fp32, or a GPU "
            "(trainer.device=cuda)."
        )
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(
            f"`trainer.precision=bf16`: {torch.cuda.get_device_name(device)} has no bfloat16 "
            "support; use trainer.precision=fp16 (loss scaling) or fp32."
        )


class _ScaledBackward(torch.autograd.Function):
    """The identity on the forward pass; multiplies the incoming gradient by ``scale``."""

    @staticmethod
    def forward(ctx: Any, loss: Tensor, scale: Tensor) -> Tensor:  # noqa: ANN401
        ctx.save_for_backward(scale)
        return loss.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:  # noqa: ANN401
        (scale,) = ctx.saved_tensors
        return grad * scale.to(grad.dtype), None


class MixedPrecision:
    """Autocast and (fp16) loss scaling for the weight updates of one training phase.

    Per step: forward under :meth:`autocast`, :meth:`scale` the losses before the balancer's
    backward, :meth:`unscale` before clipping, :meth:`step` each optimiser, then :meth:`update`.
    ``scaler`` is None unless ``precision`` is ``fp16``.
    """

    def __init__(self, precision: str, device: torch.device, init_scale: float = 2.0**16) -> None:
        self.precision, self.device = precision, device
        self.dtype = DTYPES.get(precision)
        self.scaler = (
            torch.amp.GradScaler(device.type, init_scale=init_scale)
            if precision == "fp16"
            else None
        )

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        if self.dtype is None:
            yield
            return
        with torch.autocast(self.device.type, dtype=self.dtype):
            yield

    def scale(self, losses: dict[str, Tensor]) -> dict[str, Tensor]:
        """The losses with their backward pass scaled (values unchanged)."""
        if self.scaler is None:
            return losses
        scale = self.scaler.scale(torch.ones((), device=self.device))
        return {t: _ScaledBackward.apply(loss, scale) for t, loss in losses.items()}

    def scale_one(self, loss: Tensor) -> Tensor:
        return self.scale({"": loss})[""]

    def unscale(self, optimizers: Sequence[torch.optim.Optimizer]) -> None:
        """Divide the optimisers' gradients by the scale (and note whether they overflowed)."""
        if self.scaler is not None:
            for optimizer in optimizers:
                self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """``optimizer.step()``, skipped under fp16 when its gradients overflowed."""
        if self.scaler is None:
            optimizer.step()
        else:
            self.scaler.step(optimizer)

    def update(self) -> None:
        if self.scaler is not None:
            self.scaler.update()

    def overflowed(self) -> bool:
        """After a balancer refused non-finite gradients of finite losses: under fp16 with a
        scale above 1, an overflow of the scaled gradients; the step is skipped and the scale
        backed off, as :class:`~torch.amp.GradScaler` does. False otherwise (then the gradients
        are not finite unscaled either: the run diverged)."""
        if self.scaler is None or self.scaler.get_scale() <= 1.0:
            return False
        self.scaler.update(self.scaler.get_scale() * self.scaler.get_backoff_factor())
        return True

    def state_dict(self) -> dict[str, Any] | None:
        return self.scaler.state_dict() if self.scaler is not None else None

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
