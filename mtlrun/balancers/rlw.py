"""Random Loss Weighting (Lin et al. 2022, "Reasonable Effectiveness of Random Weighting: A Litmus
Test for Multi-Task Learning", TMLR).

Every step draws fresh weights λ = softmax(λ̃) with λ̃ ~ N(0, I_T) and minimises Σ_t λ_t L_t,
so the weights are positive and sum to 1 (not to T). The paper studies several distributions
for λ̃; the standard normal is the one LibMTL implements, and the only one here.

The draw comes from torch's global CPU generator (``torch.randn``), which the run seeds and its
checkpoints restore, so a run and its resumption draw the same weights on any device; there
is no state of its own to save.

Differences from LibMTL's code (``LibMTL/weighting/RLW.py``): none (the same draw
``torch.randn(T)`` on the CPU, softmax, no factor T).
"""

from __future__ import annotations

import torch
from torch import Tensor

from mtlrun.balancers.loss_based import LossWeighting


class RLW(LossWeighting):
    """Weights softmax(λ̃), λ̃ ~ N(0, I), drawn afresh each step (Lin et al. 2022); no arguments."""

    def objective(self, losses: Tensor) -> tuple[Tensor, Tensor]:
        # On the CPU generator, as LibMTL: the same draws whatever device the losses are on.
        weights = torch.softmax(torch.randn(len(self.tasks)), dim=-1).to(losses)
        return (weights * losses).sum(), weights
