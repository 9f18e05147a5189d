"""CAGrad with the authors' rescaling (Liu et al. 2021, "Conflict-Averse Gradient Descent for
Multi-task Learning", NeurIPS; Algorithm 1).

The update is g0 + (√φ / ||g_w||) g_w, with g0 the mean gradient, φ = c² ||g0||² and g_w the
minimiser of g_wᵀ g0 + √φ ||g_w|| over the convex hull of the task gradients. torchjd's
``CAGradWeighting`` gives its weights from the Gram matrix (cvxpy, CLARABEL); the authors'
code (and LibMTL, ``rescale=1`` by default) then divides the update by 1 + c² (``rescale=1``)
or 1 + c (``rescale=2``); ``rescale=0`` leaves it as is.
"""

from __future__ import annotations

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
        w = self.inner(s.gram())
        if self.rescale == 1:
            return w / (1 + self.c**2)
        if self.rescale == 2:
            return w / (1 + self.c)
        return w
