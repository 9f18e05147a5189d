"""Uncertainty weighting (Kendall, Gal & Cipolla 2018; METHODS §5).

Each task t has a learned log-variance s_t = log σ_t²; the objective is
Σ_t ½ exp(−s_t) L_t + ½ s_t, minimised jointly in θ and s. The task weight is ½ exp(−s_t) and is
the same for every block (the weights are global, so per-block action changes nothing here).
s has its own Adam optimiser (``lr``) so the weights move at the same pace whatever the run's
optimiser for θ is.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from mtlrun.balancers.base import BlockBalancer
from mtlrun.errors import ConfigError
from mtlrun.model.paths import MultiTaskModel


class Uncertainty(BlockBalancer):
    """Learned homoscedastic-uncertainty weights; logs ``weight/<task>`` = ½ exp(−s_t)."""

    def __init__(
        self,
        tasks: Sequence[str],
        lr: float = 1e-2,
        init_log_var: float = 0.0,
        kkt_every: int = 10,
        kkt_tol: float = 0.05,
        name: str = "uncertainty",
    ) -> None:
        super().__init__(tasks, name, kkt_every, kkt_tol)
        if not lr > 0:
            raise ConfigError(f"`balancer.lr` should be > 0. Found `balancer.lr = {lr}`.")
        self.lr = lr
        self.log_var = torch.full((len(self.tasks),), float(init_log_var), requires_grad=True)
        self.optimizer = torch.optim.Adam([self.log_var], lr=lr)
        self._index = {t: k for k, t in enumerate(self.tasks)}

    def _to(self, device: torch.device) -> None:
        if self.log_var.device != device:
            with torch.no_grad():
                moved = self.log_var.detach().to(device).requires_grad_(True)
            state = self.optimizer.state_dict()
            self.log_var = moved
            self.optimizer = torch.optim.Adam([self.log_var], lr=self.lr)
            self.optimizer.load_state_dict(state)

    def backward(self, losses: dict[str, Tensor], model: MultiTaskModel) -> dict[str, float]:
        self._to(next(iter(losses.values())).device)
        self.monitor_params(losses, model)
        ks = torch.tensor([self._index[t] for t in losses], device=self.log_var.device)
        s = self.log_var[ks]
        total = (0.5 * torch.exp(-s) * torch.stack(list(losses.values())) + 0.5 * s).sum()
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        weights = (0.5 * torch.exp(-self.log_var.detach())).tolist()
        return {f"weight/{t}": weights[self._index[t]] for t in losses}

    def state_dict(self) -> dict:
        return {"log_var": self.log_var.detach().cpu(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if not state:
            return
        with torch.no_grad():
            self.log_var = state["log_var"].clone().requires_grad_(True)
        self.optimizer = torch.optim.Adam([self.log_var], lr=self.lr)
        self.optimizer.load_state_dict(state["optimizer"])
