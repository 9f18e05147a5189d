"""Geometric Loss Strategy (Chennupati et al. 2019, "MultiNet++: Multi-Stream Feature Aggregation
and Geometric Loss Strategy for Multi-Task Learning", CVPR workshops, its GLS section).

The objective is the geometric mean of the task losses, (Π_t L_t)^{1/T}. Its gradient is
Σ_t w_t ∇L_t with w_t = (Π_s L_s)^{1/T} / (T · L_t): a task with a small loss gets a large
weight, so no task is neglected whatever the losses' scales. The logged weight is that w_t.

Both are computed in log space, (Π_t L_t)^{1/T} = exp(mean_t log L_t) and
w_t = exp(mean_s log L_s − log L_t) / T, so losses from 1e-5 to 1e5 (a product of 1e±30 or
more in float32) neither overflow nor underflow.

A zero (or negative) loss has no geometric mean to descend: at L_t = 0 the objective is 0, its
gradient is infinite along L_t and zero along every other loss, so the step would put inf/NaN
into the weights. :meth:`GLS.objective` raises a ValueError naming the task instead. The code of
the GLS authors is not public; LibMTL's (``torch.pow(losses.prod(), 1/T)``) clamps nothing, so
a clamp would be our invention, and the error is the honest outcome. (A cross-entropy can be
exactly 0 in float32 on a mini-batch it classifies with huge margins; equal-weight or DWA
training is then the alternative.)

Differences from LibMTL's code (``LibMTL/weighting/GLS.py``): the objective and its gradient are
the same up to rounding (log space instead of the product, which over- or underflows in float32
for a few losses of 1e±13); a zero or negative loss is an error rather than inf/NaN gradients;
the logged weight is the effective weight (Π L)^{1/T} / (T L_t), where LibMTL returns
L_t / (T Π L) (which is not the weight its gradient applies).
"""

from __future__ import annotations

from torch import Tensor

from mtlrun.balancers.loss_based import LossWeighting


class GLS(LossWeighting):
    """The geometric mean of the task losses (Chennupati et al. 2019); no arguments."""

    def objective(self, losses: Tensor) -> tuple[Tensor, Tensor]:
        """``losses`` (T,) > 0 → ((Π L)^{1/T}, (T,) weights (Π L)^{1/T} / (T L_t))."""
        bad = losses.detach() <= 0  # NaN compares False: the trainer reports non-finite losses
        if bool(bad.any()):
            tasks = [t for t, b in zip(self.tasks, bad.tolist(), strict=True) if b]
            values = [float(losses.detach()[self.tasks.index(t)]) for t in tasks]
            raise ValueError(
                f"GLS (geometric loss strategy): the loss of task(s) {tasks} is {values} at this "
                "step; the geometric mean (Π_t L_t)^{1/T} of non-positive losses is 0 or "
                "undefined and has no usable gradient (infinite for that task, zero for the "
                "others). GLS needs positive losses"
            )
        logs = losses.log()
        mean_log = logs.mean()
        weights = (mean_log.detach() - logs.detach()).exp() / len(self.tasks)
        return mean_log.exp(), weights
