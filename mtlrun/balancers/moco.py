"""MoCo per block (Fernando et al. 2023, "Mitigating Gradient Bias in Multi-objective Learning:
A Provably Convergent Approach", ICLR; Alg. 1, eq. 6–7).

MoCo corrects the bias of stochastic MGDA by tracking each task's gradient and moving the task
weights λ by a step on the tracked gradients' Gram matrix instead of solving a min-norm problem
on one mini-batch. At step k, for the users of one shared block, with LibMTL's (the authors'
code's) normalisation of each gradient to the length of its loss:

  h_t = g_t / (‖g_t‖ + ε) · L_t                      (ε = 1e-8)
  y_t ← y_t − β_k (y_t − h_t),          β_k = β / k^{β_σ},  y starts at 0      (eq. 6)
  λ ← softmax(λ − γ_k (Y Yᵀ + ρ I) λ),  γ_k = γ / k^{γ_σ},  λ starts at 1/T    (eq. 7)
  update = Yᵀ λ = Σ_t λ_t y_t

The update combines tracked, not current, gradients, so :class:`MoCo` reads the rows and
returns the direction (``stat = "direction"``), keeping y, λ and k per block. It logs
``weight/<task>`` = λ_t (what LibMTL returns as the task weights).

The paper projects λ onto the simplex after the step (eq. 7); LibMTL's code, followed here,
maps the step through a softmax instead.

Differences from LibMTL's code:

* y, λ and the normalisation ‖g_t‖ per shared block (LibMTL: over all shared parameters
  concatenated);
* Y Yᵀ in float64 (LibMTL: in the gradients' dtype);
* a block output whose size changes between steps (``on=z`` with a smaller last batch) is an
  error (LibMTL refuses ``rep_grad`` altogether).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from mtlrun.balancers.base import ArgumentErrors
from mtlrun.balancers.db_mtl import finite, tracked
from mtlrun.balancers.weighting import BlockStat, Weighting

EPS = 1e-8  # LibMTL's ε in g_t / (‖g_t‖ + ε)


def check_moco(
    errors: ArgumentErrors, beta: float, beta_sigma: float, gamma: float, gamma_sigma: float,
    rho: float,
) -> None:  # fmt: skip
    """MoCo's arguments: 0 < β ≤ 1 (β = 0 would keep y at 0), γ, ρ and the decays ≥ 0."""
    errors.require(math.isfinite(beta) and 0 < beta <= 1, "beta", "in (0, 1]", beta)
    for key, value in (("beta_sigma", beta_sigma), ("gamma", gamma),
                       ("gamma_sigma", gamma_sigma), ("rho", rho)):  # fmt: skip
        errors.require(math.isfinite(value) and value >= 0, key, ">= 0", value)


class MoCo(Weighting):
    """MoCo's direction on one block (module docstring). Defaults: LibMTL's ``MoCo_beta`` 0.5,
    ``MoCo_beta_sigma`` 0.5, ``MoCo_gamma`` 0.1, ``MoCo_gamma_sigma`` 0.5, ``MoCo_rho`` 0."""

    stat = "direction"
    fixed_rows = True

    def __init__(
        self, beta: float = 0.5, beta_sigma: float = 0.5, gamma: float = 0.1,
        gamma_sigma: float = 0.5, rho: float = 0.0,
    ) -> None:  # fmt: skip
        errors = ArgumentErrors("balancer.weighting")
        check_moco(errors, beta, beta_sigma, gamma, gamma_sigma, rho)
        errors.raise_if_any()
        self.beta, self.beta_sigma = beta, beta_sigma
        self.gamma, self.gamma_sigma, self.rho = gamma, gamma_sigma, rho
        self.step = 0
        self.users: list[str] | None = None
        self.y: Tensor | None = None  # (T, d) in the gradients' dtype
        self.lambd: Tensor | None = None  # (T,) float64
        self._logs: dict[str, float] = {}

    def __call__(self, s: BlockStat) -> Tensor:
        rows = s.rows().detach()
        y = tracked(self.y, self.users, s, rows, "MoCo")
        norms = torch.linalg.vector_norm(rows, dim=1, dtype=torch.float64)
        losses = s.losses.to(norms.device)
        h = rows * (losses / (norms + EPS)).to(rows.dtype)[:, None]
        self.step += 1
        y = y - self.beta / self.step**self.beta_sigma * (y - h)
        n = len(s.users)
        lambd = torch.full((n,), 1.0 / n, dtype=torch.float64, device=norms.device)
        if self.lambd is not None:
            lambd = self.lambd.to(norms.device)
        yd = y.double()
        gram = yd @ yd.T + self.rho * torch.eye(n, dtype=torch.float64, device=norms.device)
        rate = self.gamma / self.step**self.gamma_sigma
        self.lambd = torch.softmax(lambd - rate * (gram @ lambd), dim=0)
        self.y, self.users = y, list(s.users)
        self._logs = {f"weight/{t}": a for t, a in zip(s.users, self.lambd.tolist(), strict=True)}
        return finite(self.lambd.to(y.dtype) @ y, s, "MoCo")

    def logs(self) -> dict[str, float]:
        return self._logs

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "users": self.users, "y": self.y, "lambd": self.lambd}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.step, self.users = state["step"], state["users"]
            self.y, self.lambd = state["y"], state["lambd"]
