"""GradNorm per block (Chen et al. 2018; seed 001 eq. 4.8–4.11, METHODS §5).

Learned task weights c^t scale the losses, Σ_t c^t L^t (eq. 4.8). At every balanced block i
(the end of each chain of blocks with the same O(i), see :mod:`mtlrun.balancers.blocks`):

* G_i^t = ||∇ c^t L^t|| at the block's parameters (``on="params"``, eq. 4.10; for hard sharing
  the last shared layer, as in Chen et al.) or at its output Z_i (``on="z"``, eq. 4.11, cheaper);
* Ḡ_i = mean of G_i^t over O(i); L̃^t = L^t / L_0^t (L_0^t: the task's loss at its first step);
  r_i^t = L̃^t / mean_{O(i)} L̃ (relative inverse training rate);
* L_grad = Σ_i Σ_{t ∈ O(i)} |G_i^t − Ḡ_i (r_i^t)^α|, the target treated as a constant (eq. 4.10).

Since G_i^t = c^t ||∇ L^t||, ∂L_grad/∂c^t = Σ_i sign(G_i^t − target_i^t) ||∇ L^t||, with no
second-order pass. The weights take one Adam step (``lr``) per mini-batch after the model's
gradient is formed with the current weights, are kept positive and renormalised to Σ_t c^t = T.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from mtlrun.balancers import blocks as B
from mtlrun.balancers.base import ArgumentErrors, BlockBalancer, to_device
from mtlrun.model.paths import MultiTaskModel

MIN_WEIGHT = 1e-3


def check_gradnorm(errors: ArgumentErrors, alpha: float, lr: float, at: str) -> None:
    """GradNorm's own arguments (shared with the hybrid's GradNorm phase)."""
    errors.require(alpha >= 0, "alpha", ">= 0", alpha)
    errors.require(lr > 0, "lr", "> 0", lr)
    errors.choice("at", at, B.REPRESENTATION_AT)


class GradNorm(BlockBalancer):
    """Logs ``weight/<task>`` (c^t used this step) and ``gradnorm/loss`` (L_grad)."""

    def __init__(
        self,
        tasks: Sequence[str],
        on: str = "params",
        alpha: float = 1.5,
        lr: float = 0.025,
        at: str = "segment",
        kkt_every: int = 10,
        kkt_tol: float = 0.05,
        name: str = "gradnorm",
    ) -> None:
        errors = ArgumentErrors()
        errors.choice("on", on, B.GRADIENT_SPACES)
        check_gradnorm(errors, alpha, lr, at)
        super().__init__(tasks, name, kkt_every, kkt_tol, errors)
        self.on, self.alpha, self.lr, self.at = on, float(alpha), float(lr), at
        self.uses_taps = on == "z"
        self.weights = torch.ones(len(self.tasks))
        self.optimizer = self._make_optimizer()
        self.initial: dict[str, float] = {}
        self._index = {t: k for k, t in enumerate(self.tasks)}

    def _make_optimizer(self) -> torch.optim.Optimizer:
        self.weights.requires_grad_(True)
        return torch.optim.Adam([self.weights], lr=self.lr)

    def _to(self, device: torch.device) -> None:
        self.weights, self.optimizer = to_device(
            self.weights, self.optimizer, device, lambda p: torch.optim.Adam([p], lr=self.lr)
        )

    # ------------------------------------------------------------------ gradient norms

    def _norms_z(
        self, losses: dict[str, Tensor], model: MultiTaskModel
    ) -> list[tuple[list[str], Tensor]]:
        tasks = list(losses)
        ends = B.representation_ends(model, tasks, self.at)
        zs = B.shared_outputs(model, ends, tasks, self.name)
        grads = B.task_representation_grads(losses, model, zs)
        if self.monitor.due():
            self.monitor.record(
                B.check_representation_stationarity(grads, model, ends, self.monitor.tol)
            )
        out = []
        for b in ends:
            users = [t for t in tasks if b in grads[t]]
            out.append((users, torch.stack([grads[t][b].norm() for t in users])))
        return out

    def _norms_params(
        self, losses: dict[str, Tensor], model: MultiTaskModel
    ) -> list[tuple[list[str], Tensor]]:
        self.monitor_params(losses, model)
        tasks = list(losses)
        out = []
        for b in B.representation_ends(model, tasks, self.at):
            params = [p for p in model.blocks[b].parameters() if p.requires_grad]
            users = [t for t in model.loss_users(b) if t in losses]
            if not params or len(users) < 2:
                continue
            norms = []
            for t in users:
                gs = torch.autograd.grad(losses[t], params, retain_graph=True, allow_unused=True)
                squares = [(g.double() ** 2).sum() for g in gs if g is not None]
                norms.append(torch.stack(squares).sum().sqrt() if squares else torch.zeros(()))
            out.append((users, torch.stack(norms).float()))
        return out

    # ------------------------------------------------------------------ step

    def backward(self, losses: dict[str, Tensor], model: MultiTaskModel) -> dict[str, float]:
        device = next(iter(losses.values())).device
        self._to(device)
        for t, loss in losses.items():
            self.initial.setdefault(t, max(float(loss.detach()), 1e-12))
        norms = (
            self._norms_z(losses, model) if self.on == "z" else self._norms_params(losses, model)
        )
        c = self.weights.detach().clone()
        total = torch.stack([c[self._index[t]] * loss for t, loss in losses.items()]).sum()
        total.backward()
        grad_c, grad_loss = self.weight_gradient(c, norms, losses)
        if norms:
            self.optimizer.zero_grad(set_to_none=True)
            self.weights.grad = grad_c
            self.optimizer.step()
            with torch.no_grad():
                self.weights.clamp_(min=MIN_WEIGHT)
                self.weights.mul_(len(self.tasks) / self.weights.sum())
        log = {f"weight/{t}": float(c[self._index[t]]) for t in losses}
        log["gradnorm/loss"] = grad_loss
        return log

    def weight_gradient(
        self, c: Tensor, norms: list[tuple[list[str], Tensor]], losses: dict[str, Tensor]
    ) -> tuple[Tensor, float]:
        """∂L_grad/∂c (eq. 4.10 with a constant target) and the value of L_grad."""
        grad = torch.zeros_like(c)
        value = 0.0
        for users, n in norms:
            idx = torch.tensor([self._index[t] for t in users], device=c.device)
            n = n.detach().to(c.device, c.dtype)
            g = c[idx] * n
            inverse_rate = torch.tensor(
                [float(losses[t].detach()) / self.initial[t] for t in users],
                device=c.device,
                dtype=c.dtype,
            )
            r = inverse_rate / inverse_rate.mean().clamp_min(1e-12)
            target = g.mean() * r**self.alpha
            grad.index_add_(0, idx, torch.sign(g - target) * n)
            value += float((g - target).abs().sum())
        return grad, value

    def state_dict(self) -> dict:
        return {
            "weights": self.weights.detach().cpu(),
            "optimizer": self.optimizer.state_dict(),
            "initial": dict(self.initial),
        }

    def load_state_dict(self, state: dict) -> None:
        if not state:
            return
        self.weights = state["weights"].clone()
        self.optimizer = self._make_optimizer()
        self.optimizer.load_state_dict(state["optimizer"])
        self.initial = dict(state["initial"])
