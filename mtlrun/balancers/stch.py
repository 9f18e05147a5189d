"""Smooth Tchebycheff scalarisation (Lin et al. 2024, "Smooth Tchebycheff Scalarization for
Multi-Objective Optimization", ICML), in the multi-task form of LibMTL's ``STCH``.

The Tchebycheff scalarisation max_t λ_t (f_t − z*_t) is smoothed into
μ log Σ_t exp(λ_t (f_t − z*_t) / μ) (smoothing ``mu``; μ → 0 gives the max back). For multi-task
learning the objectives are log losses normalised by a reference point n (LibMTL calls it the
nadir vector), f_t = log(L_t / n_t + ε), with ε = 1e-20 and λ_t = 1, and the sum is scaled by T:

    objective = T · μ · log Σ_t exp(f_t / μ),   weight on L_t = T · s_t / (L_t + ε n_t),

with s = softmax(f / μ) (the max f is subtracted before the exponential; being detached, it
shifts the value by T·max f but leaves the gradient as is). The task with the largest
normalised loss gets most of the weight.

The reference point comes from a warm-up (``warmup_epoch``, default 4; epochs counted from 0 as
the trainer's ``epoch_end`` does): in epochs 0 … ``warmup_epoch`` the objective is
Σ_t log(L_t + ε) (weight 1/(L_t + ε)); in epoch ``warmup_epoch`` the step losses are averaged,
and that average becomes n at the first step after it and stays fixed. The logged weight is
always the effective weight on L_t above.

A zero loss is finite throughout (log ε ≈ −46); during the warm-up its weight is 1/ε = 1e20,
as in LibMTL (gradient clipping, ``trainer.grad_clip``, bounds the step). A reference point that
cannot be formed (no step in the warm-up epoch trained all tasks, or a task's mean loss there
is 0) is a ValueError naming the tasks.

Differences from LibMTL's code (``LibMTL/weighting/STCH.py``, ``--STCH_mu 1.0
--STCH_warmup_epoch 4``): the objective, its gradient, the warm-up and the reference point are
the same; LibMTL logs weights of 1 in every step, where this module logs the weight each loss
had in the gradient; LibMTL divides by a zero reference point (inf/NaN gradients), where this
module raises the error above.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from mtlrun.balancers.loss_based import LossWeighting
from mtlrun.errors import ArgumentErrors

EPS = 1e-20  # LibMTL's guard inside every log


class STCH(LossWeighting):
    """Smooth Tchebycheff scalarisation of log losses after a warm-up (Lin et al. 2024)."""

    def __init__(self, tasks: Sequence[str], mu: float = 1.0, warmup_epoch: int = 4) -> None:
        errors = ArgumentErrors("balancer.weighting")
        errors.require(math.isfinite(mu) and mu > 0, "mu", "> 0", mu)
        errors.require(
            isinstance(warmup_epoch, int)
            and not isinstance(warmup_epoch, bool)
            and warmup_epoch >= 0,
            "warmup_epoch",
            "an integer >= 0",
            warmup_epoch,
        )
        errors.raise_if_any()
        super().__init__(tasks)
        self.mu = float(mu)
        self.warmup_epoch = warmup_epoch
        self.epoch = 0  # the epoch now training, counted from 0
        self.loss_sum: Tensor | None = None  # Σ of the step losses of epoch ``warmup_epoch``
        self.loss_count = 0
        self.nadir: Tensor | None = None  # the reference point n, fixed after the warm-up

    def objective(self, losses: Tensor) -> tuple[Tensor, Tensor]:
        if self.epoch <= self.warmup_epoch:
            shifted = losses + EPS
            return shifted.log().sum(), 1.0 / shifted.detach()
        nadir = self._nadir().to(losses)
        ratio = losses / nadir + EPS
        f = ratio.log()
        top = f.detach().max()
        n = len(self.tasks)
        total = n * self.mu * torch.logsumexp((f - top) / self.mu, dim=0)
        s = torch.softmax(f.detach() / self.mu, dim=0)
        return total, n * s / ratio.detach() / nadir

    def after_backward(self, losses: Tensor) -> None:
        if self.epoch == self.warmup_epoch:
            step = losses.detach()
            self.loss_sum = step.clone() if self.loss_sum is None else self.loss_sum.to(step) + step
            self.loss_count += 1

    def _nadir(self) -> Tensor:
        """The mean step loss of epoch ``warmup_epoch``, formed at the first step after it."""
        if self.nadir is None:
            if self.loss_sum is None or self.loss_count == 0:
                raise ValueError(
                    f"STCH (balancer.weighting): no step of epoch {self.warmup_epoch + 1} "
                    f"(warmup_epoch = {self.warmup_epoch}, counted from 0) trained all the tasks "
                    f"{self.tasks}, so there is no reference point to normalise the losses by"
                )
            nadir = self.loss_sum / self.loss_count
            bad = [t for t, v in zip(self.tasks, nadir.tolist(), strict=True) if not v > 0]
            if bad:
                raise ValueError(
                    f"STCH (balancer.weighting): the mean loss of task(s) {bad} in the warm-up "
                    f"epoch {self.warmup_epoch + 1} is {nadir.tolist()}; STCH divides every loss "
                    "by it, so it must be positive"
                )
            self.nadir = nadir
        return self.nadir

    def epoch_end(self, epoch: int, train_losses: dict[str, float]) -> dict[str, float]:
        self.epoch = epoch + 1
        return {}

    def state_dict(self) -> dict[str, Any]:
        def cpu(x: Tensor | None) -> Tensor | None:
            return None if x is None else x.detach().cpu().clone()

        return {
            "epoch": self.epoch,
            "loss_sum": cpu(self.loss_sum),
            "loss_count": self.loss_count,
            "nadir": cpu(self.nadir),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self.epoch = int(state["epoch"])
        self.loss_sum = None if state["loss_sum"] is None else state["loss_sum"].clone()
        self.loss_count = int(state["loss_count"])
        self.nadir = None if state["nadir"] is None else state["nadir"].clone()
