"""Dynamic Weight Average (Liu, Johns & Davison 2019, "End-to-End Multi-Task Learning with
Attention", CVPR, eq. 1).

Each task's weight follows how fast its loss fell over the last two epochs:

    w_t(e) = T · softmax_t(r(e−1) / τ),   r_t(e−1) = L_t(e−1) / L_t(e−2),

where L_t(e) is task t's mean training loss in epoch e (the trainer's ``train_losses``), T the
number of tasks and τ the temperature (``temperature``, default 2). A task whose loss fell
slowly (r near 1) gets more weight than one whose loss fell fast. The weights are 1 for the
first two epochs, which have no ratio yet. The objective is Σ_t w_t L_t.

The ratio is undefined when a task's mean loss was 0 in the earlier epoch: :meth:`DWA.epoch_end`
then raises a ValueError that names the task, rather than train on with NaN weights (the
authors' and LibMTL's code would divide by zero). An epoch whose ``train_losses`` lacks a task
(a phase that trained only some tasks) does not enter the history.

Differences from LibMTL's code (``LibMTL/weighting/DWA.py``, ``--T 2.0``): none in the weights.
LibMTL keeps every epoch's mean loss and indexes them by the epoch number; this module keeps the
last two epochs that trained every task, which is the same in a run of joint epochs. The zero
loss error above is new.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from mtlrun.balancers.loss_based import LossWeighting
from mtlrun.errors import ArgumentErrors


class DWA(LossWeighting):
    """DWA's weights T·softmax(r/τ) from the last two epochs' mean training losses (eq. 1)."""

    def __init__(self, tasks: Sequence[str], temperature: float = 2.0) -> None:
        errors = ArgumentErrors("balancer.weighting")
        errors.require(
            math.isfinite(temperature) and temperature > 0, "temperature", "> 0", temperature
        )
        errors.raise_if_any()
        super().__init__(tasks)
        self.temperature = float(temperature)
        # Mean training losses of the last two epochs that trained every task, oldest first.
        self.history: list[list[float]] = []
        self.weights = self._weights()

    def _weights(self) -> Tensor:
        """(T,) float64: 1 before two epochs, else T·softmax(r/τ) (eq. 1)."""
        n = len(self.tasks)
        if len(self.history) < 2:
            return torch.ones(n, dtype=torch.float64)
        before, last = (torch.tensor(h, dtype=torch.float64) for h in self.history)
        ratio = last / before
        return n * torch.softmax(ratio / self.temperature, dim=0)

    def objective(self, losses: Tensor) -> tuple[Tensor, Tensor]:
        weights = self.weights.to(losses)
        return (weights * losses).sum(), weights

    def epoch_end(self, epoch: int, train_losses: dict[str, float]) -> dict[str, float]:
        if not all(t in train_losses for t in self.tasks):
            return {}
        means = [float(train_losses[t]) for t in self.tasks]
        history = [*self.history, means][-2:]
        if len(history) == 2:
            before, last = history
            bad = [
                t
                for t, b, a in zip(self.tasks, before, last, strict=True)
                if not (b > 0 and math.isfinite(b) and math.isfinite(a))
            ]
            if bad:
                shown = {t: (before[self.tasks.index(t)], last[self.tasks.index(t)]) for t in bad}
                raise ValueError(
                    f"DWA (balancer.weighting): the ratio of the mean training losses of epochs "
                    f"{epoch + 1} and {epoch} that sets the next weights (Liu et al. 2019, eq. 1) "
                    f"is undefined for task(s) {bad} (their losses in epochs {epoch} and "
                    f"{epoch + 1}: {shown}); DWA needs positive, finite losses"
                )
        self.history = history
        self.weights = self._weights()
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {"history": [list(h) for h in self.history]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self.history = [[float(v) for v in h] for h in state["history"]]
        self.weights = self._weights()
