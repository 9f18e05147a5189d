"""Fast Adaptive Multitask Optimization (Liu, Liu, Stone & Liu 2023, "FAMO: Fast Adaptive
Multitask Optimization", NeurIPS; Algorithm 1).

FAMO keeps task logits ξ (zeros at the start) and weights z = softmax(ξ). A step descends

    Σ_t z_t log D_t / c,   D_t = L_t − L*_t + ε,  c = Σ_s z_s / D_s   (z and c held constant),

so the weight on L_t is z_t / (c D_t) (the weights sum to 1), with L* = 0 and ε = 1e-8 as in the
authors' code. The logits then learn from how much each log loss fell over the step,
δ_t = log D_t(before) − log D_t(after): their gradient is Jᵀδ with J = diag(z) − z zᵀ the
Jacobian of the softmax (the closed form of the authors' ``autograd.grad`` of z with grad
outputs δ), and their own Adam takes it with learning rate ``w_lr`` (default 0.025) and weight
decay ``gamma`` (default 1e-3; PyTorch's L2 form, as theirs), so tasks whose loss falls slowly
gain weight.

When the update happens. The authors' trainers and LibMTL's ``Trainer`` re-run the forward pass
on the *same* mini-batch after the optimiser step (under ``no_grad``, the model in training
mode) and update ξ with those losses at once: ``update=same_batch`` (default) does the same
through the trainer's ``after_step`` hook. ``update=next_batch`` saves that extra forward: it
stores the step's losses in ``after_backward`` and updates ξ at the start of the next step's
``objective``, with δ from the
stored losses and the new step's losses, before computing that step's weights. The weights of
step k+1 therefore come from the same ξ sequence in time (one Adam step per optimiser step, the
update of step k applied before the weights of step k+1), but δ compares the losses of two
*different* mini-batches (batch k at θ_k against batch k+1 at θ_{k+1}), not one batch at θ_k
and θ_{k+1}; the noise between batches enters δ, and the extra forward pass is saved. The first
step has no update (as in theirs), and the last step's losses never update ξ.

Differences from LibMTL's code (``LibMTL/weighting/FAMO.py``, ``--FAMO_w_lr 0.025
--FAMO_w_gamma 1e-3``; the authors' ``famo.py`` defaults ``gamma`` to 0.01 and clips the shared
gradients to norm 1 inside ``backward``, which LibMTL does not): none with the default
``update=same_batch`` but these: z is detached in the objective (LibMTL lets the objective's gradient reach ξ and then
overwrites it before Adam's step, so nothing changes); the logged weights are z_t / (c D_t)
(LibMTL logs none); the Adam learning rate is set at construction (LibMTL starts it at 0 and
sets it on the first step, before any Adam step, so the same).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from mtlrun.balancers.base import to_device
from mtlrun.balancers.loss_based import LossWeighting
from mtlrun.errors import ArgumentErrors

UPDATES = ("same_batch", "next_batch")
EPS = 1e-8  # the authors' guard: D_t = L_t − L*_t + ε
MIN_LOSS = 0.0  # L*_t, the lower bound of every loss (the authors' ``min_losses``)


class FAMO(LossWeighting):
    """FAMO's learned weights softmax(ξ), ξ updated by Adam from the fall of the log losses."""

    def __init__(
        self,
        tasks: Sequence[str],
        w_lr: float = 0.025,
        gamma: float = 1e-3,
        update: str = "same_batch",
    ) -> None:
        errors = ArgumentErrors("balancer.weighting")
        errors.require(math.isfinite(w_lr) and w_lr > 0, "w_lr", "> 0", w_lr)
        errors.require(math.isfinite(gamma) and gamma >= 0, "gamma", ">= 0", gamma)
        errors.choice("update", update, UPDATES)
        errors.raise_if_any()
        super().__init__(tasks)
        self.update = update
        self.w_lr, self.gamma = float(w_lr), float(gamma)
        self.logits = torch.zeros(len(self.tasks), requires_grad=True)
        self.optimizer = self._adam()
        self.prev: Tensor | None = None  # the last step's losses, detached

    def _adam(self) -> torch.optim.Adam:
        return torch.optim.Adam([self.logits], lr=self.w_lr, weight_decay=self.gamma)

    def _to(self, device: torch.device) -> None:
        self.logits, self.optimizer = to_device(
            self.logits, self.optimizer, device,
            lambda p: torch.optim.Adam([p], lr=self.w_lr, weight_decay=self.gamma),
        )  # fmt: skip

    def objective(self, losses: Tensor) -> tuple[Tensor, Tensor]:
        self._to(losses.device)
        if self.update == "next_batch" and self.prev is not None:
            self._update(self.prev.to(losses), losses.detach())
        z = torch.softmax(self.logits.detach(), dim=-1).to(losses.dtype)
        d = losses - MIN_LOSS + EPS
        c = (z / d.detach()).sum()
        return (z * d.log()).sum() / c, z / (c * d.detach())

    def after_backward(self, losses: Tensor) -> None:
        self.prev = losses.detach().clone()

    def after_step(self, recompute: Callable[[], Tensor]) -> None:
        """``update=same_batch``: the step's mini-batch forwarded again after the update (no
        gradient, the model in training mode, as the authors' and LibMTL's trainers do)."""
        if self.update == "same_batch" and self.prev is not None:
            after = recompute()
            self._update(self.prev.to(after), after.detach())
            self.prev = None

    def _update(self, before: Tensor, after: Tensor) -> None:
        """One Adam step on ξ with gradient Jᵀδ, δ = log D(before) − log D(after)."""
        delta = ((before - MIN_LOSS + EPS).log() - (after - MIN_LOSS + EPS).log()).to(self.logits)
        with torch.no_grad():
            z = torch.softmax(self.logits, dim=-1)
            grad = z * (delta - (z * delta).sum())
        self.optimizer.zero_grad(set_to_none=True)
        self.logits.grad = grad
        self.optimizer.step()

    def state_dict(self) -> dict[str, Any]:
        return {
            "logits": self.logits.detach().cpu().clone(),
            # A copy: Adam updates its moments in place, and a saved state must not follow them.
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "prev": None if self.prev is None else self.prev.cpu().clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self.logits = state["logits"].detach().clone().requires_grad_(True)
        self.optimizer = self._adam()
        self.optimizer.load_state_dict(state["optimizer"])
        self.prev = None if state["prev"] is None else state["prev"].clone()
