"""ExcessMTL per block (He et al. 2024, "Robust Multi-Task Learning with Excess Risks", ICML;
eq. 6, 7 and 9), as the authors' code and LibMTL compute it.

Each task's excess risk is estimated from its gradient g_t with an AdaGrad diagonal Hessian:
S_t += g_t², Ê_t = Σ_i g_{t,i}² / √(S_{t,i} + 1e-7) (eq. 6–7). The first step records Ê as the
baseline Ê⁰ and keeps the weights at 1; every later step rescales Ê_t / Ê⁰_t and takes an
exponentiated-gradient step w_t ← w_t exp(η Ê_t / Ê⁰_t), renormalised to Σ_t w_t = T (eq. 9,
η = ``robust_step_size``). The update is Σ_t w_t g_t.

Differences from LibMTL's code (``LibMTL/weighting/ExcessMTL.py``): S and w per shared block
(LibMTL: over all shared parameters, and its loss weights also scale the heads' gradients); the
exponentiated step in log space (no overflow to inf for large Ê ratios); a task whose baseline
Ê⁰ is 0 (a zero gradient at the first step) keeps its weight (LibMTL divides 0 by 0: NaN). torchjd's
``ExcessMTLWeighting`` differs more (weights start at 1/T, and its first call already steps), so
mtlrun uses this form.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from mtlrun.balancers.weighting import BlockStat, Weighting
from mtlrun.errors import ArgumentErrors

H_EPS = 1e-7  # the authors' guard inside √(S + ε)


class ExcessMTL(Weighting):
    """Per-block excess-risk weights (module docstring); state S (T, d), Ê⁰ and w."""

    stat = "rows"
    fixed_rows = True

    def __init__(self, robust_step_size: float = 0.01) -> None:
        errors = ArgumentErrors("balancer.weighting")
        ok = math.isfinite(robust_step_size) and robust_step_size > 0
        errors.require(ok, "robust_step_size", "> 0", robust_step_size)
        errors.raise_if_any()
        self.robust_step_size = float(robust_step_size)
        self.grad_sum: Tensor | None = None
        self.initial: Tensor | None = None
        self.weights: Tensor | None = None

    def __call__(self, s: BlockStat) -> Tensor:
        g = s.rows().detach()
        if self.grad_sum is None or self.grad_sum.shape != g.shape:
            if self.grad_sum is not None:
                raise ValueError(
                    f"ExcessMTL's state of block {s.block!r} has shape "
                    f"{tuple(self.grad_sum.shape)}; this step's gradients {tuple(g.shape)}"
                )
            self.grad_sum = torch.zeros_like(g)
        self.grad_sum += g * g
        excess = ((g * g) / (self.grad_sum + H_EPS).sqrt()).sum(dim=1).double()
        n = len(s.users)
        if self.initial is None:
            self.initial = excess.clone()
            self.weights = torch.ones(n, dtype=torch.float64, device=excess.device)
            return self.weights.clone()
        assert self.weights is not None
        ratio = torch.where(self.initial > 0, excess / self.initial.clamp_min(1e-300), 0.0)
        logits = self.weights.log() + self.robust_step_size * ratio
        self.weights = torch.softmax(logits, dim=0) * n
        return self.weights.clone()

    def state_dict(self) -> dict[str, Any]:
        return {
            "grad_sum": None if self.grad_sum is None else self.grad_sum.clone(),
            "initial": None if self.initial is None else self.initial.clone(),
            "weights": None if self.weights is None else self.weights.clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.grad_sum, self.initial = state["grad_sum"], state["initial"]
            self.weights = state["weights"]
