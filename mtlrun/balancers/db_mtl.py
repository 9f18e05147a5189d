"""DB-MTL per block (Lin et al. 2023, "Dual-Balancing for Multi-Task Learning", §3, Alg. 1).

Two balancings of the task gradients g_t on a shared block:

* loss scale: each task descends log L_t instead of L_t, i.e. its gradient is
  ∇ log(L_t + ε) = g_t / (L_t + ε) (ε = 1e-8, as in LibMTL's code);
* gradient magnitude: an EMA of each task's (log-loss) gradient vector,
  ĝ_t ← g_t + β_k (ĝ_t − g_t) with β_k = β / k^{β_σ} at step k (ĝ_t starts at 0), and the
  update Σ_t α_t ĝ_t with α_t = max_τ ‖ĝ_τ‖ / (‖ĝ_t‖ + ε): every task's tracked gradient is
  rescaled to the largest norm.

The update mixes past gradients, so it is no weighting of this step's g_t: :class:`DBMTL` reads
the rows and returns the direction (``stat = "direction"``), keeping ĝ per block. It logs
``weight/<task>`` = α_t (the factor on the task's tracked gradient; LibMTL returns ones).

Used as a weighting of the generic driver (``balancer.weighting``), DBMTL forms g_t / (L_t + ε)
from the plain gradients, and blocks used by one task get ∇L_t. :class:`DualBalancing` is the
whole method as LibMTL runs it: the driver back-propagates log(L_t + ε), so every block (heads
included) gets the log-loss gradient, and the shared blocks the balanced direction.

Differences from LibMTL's code:

* one EMA and one α per shared block (LibMTL: over all shared parameters concatenated);
* :class:`DBMTL` in the generic driver: blocks used by one task (heads) get ∇L_t, LibMTL
  ∇ log(L_t + ε) (:class:`DualBalancing` matches LibMTL there);
* norms are summed in float64 (LibMTL: in the gradients' dtype);
* ``on=z`` is refused by :class:`DualBalancing` (LibMTL refuses ``rep_grad``); in the generic
  driver a block output whose size changes between steps (a smaller last batch) is an error;
* a non-finite direction (an overflow) stops the run as diverged (LibMTL steps with it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from mtlrun.balancers.base import ArgumentErrors
from mtlrun.balancers.per_block import PerBlock
from mtlrun.balancers.weighting import BlockStat, NonFiniteWeights, Weighting
from mtlrun.errors import ConfigError
from mtlrun.model.paths import MultiTaskModel

EPS = 1e-8  # LibMTL's ε in log(L + ε) and in ‖ĝ_t‖ + ε
PAPER = "Lin et al. 2023, Dual-Balancing for Multi-Task Learning"


def check_db_mtl(errors: ArgumentErrors, beta: float, beta_sigma: float) -> None:
    """DB-MTL's arguments: 0 ≤ β < 1 (β = 1 would keep ĝ at 0 forever), β_σ ≥ 0."""
    errors.require(math.isfinite(beta) and 0 <= beta < 1, "beta", "in [0, 1)", beta)
    errors.require(math.isfinite(beta_sigma) and beta_sigma >= 0, "beta_sigma", ">= 0", beta_sigma)


class DBMTL(Weighting):
    """DB-MTL's direction on one block (module docstring); ``beta``/``beta_sigma``: LibMTL's
    ``DB_beta`` (0.9) and ``DB_beta_sigma`` (0). ``log_grad``: the rows are ∇L_t and DBMTL
    divides them by L_t + ε (True), or the driver already back-propagated log(L_t + ε) (False,
    :class:`DualBalancing`)."""

    stat = "direction"
    fixed_rows = True

    def __init__(self, beta: float = 0.9, beta_sigma: float = 0.0, log_grad: bool = True) -> None:
        errors = ArgumentErrors("balancer.weighting")
        check_db_mtl(errors, beta, beta_sigma)
        errors.raise_if_any()
        self.beta, self.beta_sigma, self.log_grad = beta, beta_sigma, log_grad
        self.step = 0
        self.users: list[str] | None = None
        self.buffer: Tensor | None = None  # ĝ, (T, d) in the gradients' dtype
        self._logs: dict[str, float] = {}

    def __call__(self, s: BlockStat) -> Tensor:
        rows = s.rows().detach()
        if self.log_grad:
            rows = rows / (s.losses.to(rows.device) + EPS).to(rows.dtype)[:, None]
        buffer = tracked(self.buffer, self.users, s, rows, "DB-MTL")
        self.step += 1
        rate = self.beta / self.step**self.beta_sigma
        self.buffer, self.users = rows + rate * (buffer - rows), list(s.users)
        norms = torch.linalg.vector_norm(self.buffer, dim=1, dtype=torch.float64)
        alpha = norms.max() / (norms + EPS)
        self._logs = {f"weight/{t}": a for t, a in zip(s.users, alpha.tolist(), strict=True)}
        return finite(alpha.to(rows.dtype) @ self.buffer, s, "DB-MTL")

    def logs(self) -> dict[str, float]:
        return self._logs

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "users": self.users, "buffer": self.buffer}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.step, self.users, self.buffer = state["step"], state["users"], state["buffer"]


def tracked(
    state: Tensor | None, users: list[str] | None, s: BlockStat, rows: Tensor, method: str
) -> Tensor:
    """The block's tracked gradients (zeros at the first step) on ``rows``' device and dtype.

    They are kept for one set of users and one gradient size: another set or size would mix
    unrelated vectors, so it stops the run (``on=z`` with a smaller last batch, for instance).
    """
    if state is None:
        return torch.zeros_like(rows)
    if users != s.users or state.shape != rows.shape:
        raise ConfigError(
            f"{method} tracks each task's gradient on block {s.block!r} across steps, so the "
            f"block's tasks and gradient size must stay the same: it had {users} with "
            f"{state.shape[1]} entries, this step {s.users} with {rows.shape[1]}. Use "
            "`balancer.on=params` (a block output's size changes with the batch)."
        )
    return state.to(rows.device, rows.dtype)


def finite(direction: Tensor, s: BlockStat, method: str) -> Tensor:
    """The block's direction, or :class:`NonFiniteWeights` (the trainer stops the run as
    diverged): the driver checks weights, not directions."""
    if not bool(torch.isfinite(direction).all()):
        raise NonFiniteWeights(
            f"{method} gave block {s.block!r} a non-finite direction for tasks {s.users} "
            f"(losses {s.losses.tolist()})"
        )
    return direction


class DualBalancing(PerBlock):
    """DB-MTL as LibMTL runs it: the driver back-propagates log(L_t + ε) (every block gets the
    log-loss gradient) and each shared block gets :class:`DBMTL`'s direction."""

    block_deviation = (
        "one EMA and one gradient-magnitude balance per shared block (LibMTL: one over all "
        "shared parameters)"
    )

    def __init__(
        self,
        tasks: Sequence[str],
        beta: float = 0.9,
        beta_sigma: float = 0.0,
        kkt_every: int = 1,
        kkt_tol: float = 0.05,
        name: str = "db_mtl",
        group: str = "block",
    ) -> None:
        errors = ArgumentErrors()
        check_db_mtl(errors, beta, beta_sigma)

        def weighting() -> DBMTL:
            return DBMTL(beta, beta_sigma, log_grad=False)

        super().__init__(
            tasks, weighting, "direction", "params", "segment", kkt_every, kkt_tol, name,
            paper=PAPER, errors=errors, group=group,
        )  # fmt: skip
        self.beta, self.beta_sigma = beta, beta_sigma

    def backward(self, losses: dict[str, Tensor], model: MultiTaskModel) -> dict[str, float]:
        logs = {t: torch.log(loss + EPS) for t, loss in losses.items()}
        return super().backward(logs, model)
