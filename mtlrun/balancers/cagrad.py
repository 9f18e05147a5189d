"""CAGrad with the authors' rescaling (Liu et al. 2021, "Conflict-Averse Gradient Descent for
Multi-task Learning", NeurIPS; Algorithm 1).

The update is g0 + (√φ / ||g_w||) g_w, with g0 the mean gradient, φ = c² ||g0||² and g_w the
minimiser of g_wᵀ g0 + √φ ||g_w|| over the convex hull of the task gradients. torchjd's
``CAGradWeighting`` gives its weights from the Gram matrix (cvxpy, CLARABEL); the authors'
code (and LibMTL, ``rescale=1`` by default) then divides the update by 1 + c² (``rescale=1``)
or 1 + c (``rescale=2``); ``rescale=0`` leaves it as is.

The weights do not change when every gradient is scaled by one constant, so torchjd's weighting
sees G / trace(G): its absolute thresholds (``norm_eps`` on the trace and on ‖g_w‖) then act
relative to the block's gradients, and a block of tiny gradients (‖g‖ ~ 1e-5) is updated like
any other. Where torchjd returns no update because ‖g_w‖ is ≈ 0 relative to them (0 in the
convex hull: Pareto-stationary), the authors' code still steps g0 + c‖g0‖ g_w / (‖g_w‖ + ε) ≈
g0; so does this weighting (the mean weights 1/T), before the rescaling.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mtlrun.balancers.weighting import BlockStat, Weighting

RESCALES = (0, 1, 2)


class CAGrad(Weighting):
    """torchjd's CAGrad weights divided as the authors' ``rescale`` says (module docstring)."""

    stat = "gram"

    def __init__(self, c: float = 0.5, rescale: int = 1, norm_eps: float = 1e-4) -> None:
        if not c >= 0:
            raise ValueError(f"`balancer.weighting.c` should be >= 0. Found {c}.")
        if rescale not in RESCALES:
            raise ValueError(f"`balancer.weighting.rescale` should be 0, 1 or 2. Found {rescale}.")
        from torchjd.aggregation import CAGradWeighting

        self.inner = CAGradWeighting(c=c, norm_eps=norm_eps)
        self.c, self.rescale = c, rescale

    def __call__(self, s: BlockStat) -> Tensor:
        gram = s.gram()
        mean = torch.full((len(s.users),), 1.0 / len(s.users), dtype=gram.dtype)
        trace = float(gram.diagonal().sum())
        w = self.inner(gram / trace) if trace > 0 else mean
        if not bool(torch.isfinite(w).all()) or not bool(w.abs().sum() > 0):
            w = mean.to(w.device)  # g_w ≈ 0: the authors' update is the mean gradient g0
        if self.rescale == 1:
            return w / (1 + self.c**2)
        if self.rescale == 2:
            return w / (1 + self.c)
        return w
