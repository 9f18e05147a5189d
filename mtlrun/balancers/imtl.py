"""IMTL per block (Liu et al. 2021, "Towards Impartial Multi-task Learning", ICLR; §3).

IMTL = IMTL-L + IMTL-G, as in LibMTL:

* IMTL-L (§3.2): each task has a learned loss scale s_t (global: one per task, not per
  block); the model descends e^{s_t} L_t and s descends Σ_t e^{s_t} L_t − s_t
  (∂/∂s_t = e^{s_t} L_t − 1, so e^{s_t} → 1/L_t: every scaled loss tends to 1).
* IMTL-G (§3.1, eq. 4–7): on each shared block, weights α (Σ_t α_t = 1) of the scaled task
  gradients e^{s_t} g_t such that the update g = Σ_t α_t e^{s_t} g_t has equal projections on
  every unit task gradient: gᵀu_1 = gᵀu_t. In closed form α ∝ G⁻¹ d, with G the Gram matrix of
  the (scaled) gradients and d their norms; torchjd's ``IMTLGWeighting`` computes it with a
  pseudo-inverse (defined for linearly dependent gradients too).

:class:`IMTLG` is the per-block weighting; :class:`IMTL` the driver that scales the losses by
e^{s} (so every block, heads included, gets the gradient of e^{s_t} L_t, as in LibMTL) and steps
s once per step with its own Adam. It logs ``weight/<task>`` = e^{s_t} × mean α_t over the
task's shared blocks (the factor on ∇L_t) and ``imtl/scale/<task>`` = e^{s_t}.

Differences from LibMTL's code:

* α per shared block (LibMTL: one α over all shared parameters concatenated);
* s has its own Adam (``lr``; no weight decay, schedule or clipping); LibMTL steps s with the
  model's optimiser (its lr, weight decay and schedule);
* α is computed on the cosine matrix of the gradients and mapped back (α_t ∝ w_t / ‖g_t‖ with
  w = torchjd's IMTL-G weights of the unit gradients): equal to LibMTL's G⁻¹d when G is
  invertible, but exact for gradients of very different norms, where a pseudo-inverse of G
  itself drops the small one. A zero gradient gets α_t = 0 and the others are solved without it
  (LibMTL: NaN); when Σ_t α_t is ≈ 0 relative to Σ_t |α_t| (no normalisable solution), the
  block gets no update (torchjd's rule; LibMTL: inf);
* ``on=z`` balances the whole block-output gradient (LibMTL's ``rep_grad`` sums it over the
  batch first); the Pareto-stationarity monitor reads the scaled gradients.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor
from torchjd.aggregation import IMTLGWeighting

from mtlrun.balancers.base import ArgumentErrors, to_device
from mtlrun.balancers.per_block import PerBlock
from mtlrun.balancers.weighting import BlockStat, Weighting
from mtlrun.model.paths import MultiTaskModel

PAPER = "Liu et al. 2021, Towards Impartial Multi-task Learning (ICLR)"


def imtl_g(gram: Tensor) -> Tensor:
    """IMTL-G's weights (T,) from the (T, T) Gram matrix of the task gradients (eq. 4–7).

    torchjd's weighting runs on the cosine matrix C = D⁻¹ G D⁻¹ (D = diag of the norms), whose
    conditioning does not depend on the norms' spread; α ∝ D⁻¹ C⁺ 1 = G⁻¹ d when G is invertible.
    """
    gram = gram.double()
    norms = gram.diagonal().clamp_min(0).sqrt()
    live = norms > 0
    alpha = torch.zeros_like(norms)
    if not bool(live.any()):
        return alpha
    n = norms[live]
    cos = (gram[live][:, live] / n[:, None] / n[None, :]).clamp(-1.0, 1.0)
    cos.fill_diagonal_(1.0)
    unit = IMTLGWeighting()(0.5 * (cos + cos.T))  # weights of the unit gradients
    a = unit * (n.min() / n)  # ∝ unit / n, kept ≤ 1 in size
    total = a.sum()
    if not bool(total.abs() > 1e-12 * a.abs().sum()):
        return alpha
    alpha[live] = a / total
    return alpha


class IMTLG(Weighting):
    """IMTL-G on one block: reads its Gram matrix (module docstring)."""

    stat = "gram"

    def __call__(self, s: BlockStat) -> Tensor:
        return imtl_g(s.gram())


class IMTL(PerBlock):
    """IMTL-L's learned loss scales (global) with IMTL-G per shared block. ``lr``: Adam on s
    (default: ``optim=adam``'s lr, as LibMTL steps s with the model's optimiser)."""

    deviations = ("the loss scales have their own Adam (LibMTL: the model's optimiser)",)
    block_deviation = "IMTL-G weights per shared block (LibMTL: one over all shared parameters)"

    def __init__(
        self,
        tasks: Sequence[str],
        lr: float = 1e-3,
        on: str = "params",
        at: str = "segment",
        kkt_every: int = 1,
        kkt_tol: float = 0.05,
        name: str = "imtl",
        group: str = "block",
    ) -> None:
        errors = ArgumentErrors()
        errors.require(math.isfinite(lr) and lr > 0, "lr", "> 0", lr)
        super().__init__(
            tasks, IMTLG, "gram", on, at, kkt_every, kkt_tol, name, paper=PAPER, errors=errors,
            group=group,
        )  # fmt: skip
        self.lr = lr
        self.scale = torch.zeros(len(self.tasks), requires_grad=True)  # s_t, LibMTL starts at 0
        self.optimizer = torch.optim.Adam([self.scale], lr=lr)
        self._index = {t: k for k, t in enumerate(self.tasks)}

    def _to(self, device: torch.device) -> None:
        self.scale, self.optimizer = to_device(
            self.scale, self.optimizer, device, lambda p: torch.optim.Adam([p], lr=self.lr)
        )

    def backward(self, losses: dict[str, Tensor], model: MultiTaskModel) -> dict[str, float]:
        self._to(next(iter(losses.values())).device)
        ks = torch.tensor([self._index[t] for t in losses], device=self.scale.device)
        s = self.scale[ks]
        factor = s.detach().exp()
        scaled = {t: f * loss for (t, loss), f in zip(losses.items(), factor, strict=True)}
        log = super().backward(scaled, model)
        values = torch.stack([loss.detach() for loss in losses.values()]).to(s.dtype)
        self.optimizer.zero_grad(set_to_none=True)
        (s.exp() * values - s).sum().backward()  # IMTL-L: ∂/∂s_t = e^{s_t} L_t − 1
        self.optimizer.step()
        for t, f in zip(losses, factor.tolist(), strict=True):
            if f"weight/{t}" in log:
                log[f"weight/{t}"] *= f
            log[f"imtl/scale/{t}"] = f
        return log

    def state_dict(self) -> dict:
        state = super().state_dict()
        state.update(scale=self.scale.detach().cpu(), optimizer=self.optimizer.state_dict())
        return state

    def load_state_dict(self, state: dict) -> None:
        if not state:
            return
        super().load_state_dict(state)
        self.scale = state["scale"].detach().clone().requires_grad_(True)
        self.optimizer = torch.optim.Adam([self.scale], lr=self.lr)
        self.optimizer.load_state_dict(state["optimizer"])
