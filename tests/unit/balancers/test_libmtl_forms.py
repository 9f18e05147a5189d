"""Weightings that follow the authors' code (as LibMTL has it) where torchjd's form differs:
ExcessMTL's first step and scale, CAGrad on tiny and degenerate gradients, Aligned-MTL's scale."""

from __future__ import annotations

import math

import pytest
import torch

from mtlrun.balancers.aligned_mtl import AlignedMTL
from mtlrun.balancers.cagrad import CAGrad
from mtlrun.balancers.excess_mtl import ExcessMTL
from mtlrun.balancers.weighting import BlockStat
from mtlrun.errors import ConfigError

USERS = ["a", "b", "c"]


def stat(rows: torch.Tensor) -> BlockStat:
    rows = rows.double()
    gram = rows @ rows.T
    return BlockStat("blk", USERS, torch.ones(3, dtype=torch.float64), lambda: gram, lambda: rows)


def test_excess_mtl_records_then_steps_as_libmtl() -> None:
    steps = [
        torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]),
        torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]]),
        torch.tensor([[1.0, 1.0], [1.0, 1.0], [0.0, 3.0]]),
    ]
    w = ExcessMTL(robust_step_size=0.5)
    s_sum = torch.zeros(3, 2, dtype=torch.float64)
    weights = [1.0, 1.0, 1.0]
    initial = None
    for k, g in enumerate(steps):
        g = g.double()
        s_sum += g * g
        excess = [float(((g[t] ** 2) / (s_sum[t] + 1e-7).sqrt()).sum()) for t in range(3)]
        if initial is None:
            initial = excess  # LibMTL: the first call only records the baseline
        else:
            weights = [
                wt * math.exp(0.5 * e / e0)
                for wt, e, e0 in zip(weights, excess, initial, strict=True)
            ]
            weights = [3 * wt / sum(weights) for wt in weights]  # renormalised to T
        got = w(stat(steps[k]))
        assert got.tolist() == pytest.approx(weights, rel=1e-12), k
    assert sum(got.tolist()) == pytest.approx(3.0)
    assert got[1] != got[0]  # the steps moved the weights


def test_excess_mtl_zero_first_gradient_keeps_its_weight_and_huge_ones_stay_finite() -> None:
    w = ExcessMTL()
    w(stat(torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]])))
    out = w(stat(torch.tensor([[1e5, 0.0], [3.0, 0.0], [0.0, 1e-5]])))
    assert torch.isfinite(out).all() and out.sum().item() == pytest.approx(3.0)
    with pytest.raises(ConfigError, match="balancer.weighting.robust_step_size"):
        ExcessMTL(robust_step_size=0)


@pytest.mark.parametrize("scale", [1e-5, 1e5])
def test_cagrad_weights_do_not_depend_on_the_gradients_scale(scale: float) -> None:
    g = torch.Generator().manual_seed(0)
    rows = torch.randn(3, 8, generator=g, dtype=torch.float64)
    unit = CAGrad()(stat(rows))
    scaled = CAGrad()(stat(scale * rows))
    assert unit.abs().sum() > 0
    torch.testing.assert_close(scaled, unit, rtol=1e-4, atol=1e-6)


def test_cagrad_steps_the_mean_gradient_where_zero_is_in_the_hull() -> None:
    rows = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 0.0]])
    out = CAGrad(c=0.5, rescale=1)(stat(rows))
    torch.testing.assert_close(out, torch.full((3,), 1 / 3 / 1.25, dtype=torch.float64))
    assert CAGrad(rescale=0)(stat(torch.zeros(3, 2))).tolist() == pytest.approx([1 / 3] * 3)


def test_aligned_mtl_is_torchjd_times_t() -> None:
    from torchjd.aggregation import AlignedMTLWeighting

    rows = torch.randn(3, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    s = stat(rows)
    torch.testing.assert_close(AlignedMTL()(s), 3 * AlignedMTLWeighting()(s.gram()))
    with pytest.raises(ValueError, match="scale_mode"):
        AlignedMTL(scale_mode="max")
