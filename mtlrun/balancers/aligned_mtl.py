"""Aligned-MTL (Senushkin et al. 2023, "Independent Component Alignment for Multi-Task
Learning", CVPR) at the scale of the authors' code and LibMTL.

torchjd's ``AlignedMTLWeighting`` forms the balance transformation B from the eigen-decomposition
of the block's Gram matrix and applies it to the mean preference vector (1/T each); LibMTL's
``Aligned_MTL`` (after the authors' code) sums B's rows, i.e. applies it to a vector of ones.
Same direction, T times longer: this weighting multiplies torchjd's weights by T.
"""

from __future__ import annotations

from torch import Tensor

from mtlrun.balancers.weighting import BlockStat, Weighting

SCALE_MODES = ("min", "median", "rmse")


class AlignedMTL(Weighting):
    """torchjd's Aligned-MTL weights × T (module docstring)."""

    stat = "gram"

    def __init__(self, scale_mode: str = "min") -> None:
        if scale_mode not in SCALE_MODES:
            raise ValueError(
                f"`balancer.weighting.scale_mode` should be one of {', '.join(SCALE_MODES)}. "
                f"Found `balancer.weighting.scale_mode = {scale_mode}`."
            )
        from torchjd.aggregation import AlignedMTLWeighting

        self.inner = AlignedMTLWeighting(scale_mode=scale_mode)  # type: ignore[arg-type]

    def __call__(self, s: BlockStat) -> Tensor:
        return self.inner(s.gram()) * len(s.users)
