"""The KKT monitor's Gram matrix, summed parameter by parameter over touched rows, equals the
Gram matrix of the concatenated gradients, and gives the same min-norm solution."""

from __future__ import annotations

import pytest
import torch

from mtlrun.balancers import blocks as B
from mtlrun.balancers.min_norm import gram_matrix

USERS = ("pos", "chunk", "ner")


def gradients(scale: float, seed: int = 0) -> tuple[list[torch.Tensor], dict]:
    """An embedding-like table (few touched rows), a dense matrix, a bias and a conv kernel;
    one task has no gradient on the bias, one has an all-zero matrix gradient."""
    g = torch.Generator().manual_seed(seed)
    params = [torch.zeros(3000, 8), torch.zeros(16, 12), torch.zeros(16), torch.zeros(4, 3, 5)]
    per_task = {}
    for k, task in enumerate(USERS):
        table = torch.zeros(3000, 8)
        rows = torch.randint(0, 3000, (40,), generator=g)
        table[rows] = torch.randn(40, 8, generator=g)
        dense = torch.randn(16, 12, generator=g) if k != 2 else torch.zeros(16, 12)
        bias = torch.randn(16, generator=g) if k != 1 else None
        conv = torch.randn(4, 3, 5, generator=g)
        per_task[task] = tuple(
            x * scale if x is not None else None for x in (table, dense, bias, conv)
        )
    return params, per_task


@pytest.mark.parametrize("scale", [1e-5, 1.0, 1e5])
def test_block_gram_equals_the_gram_of_the_concatenated_rows(scale: float) -> None:
    params, per_task = gradients(scale)
    ks = list(range(len(params)))
    rows = torch.stack([B.flat(per_task[t], ks, params) for t in USERS])
    expected = gram_matrix(rows)
    got = B.block_gram(per_task, ks, list(USERS))
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12 * float(expected.abs().max()))


def test_the_monitor_solution_is_unchanged() -> None:
    """check_param_stationarity on the Gram path: the rows path's α, value and verdict."""
    params, per_task = gradients(1.0, seed=3)
    ks = list(range(len(params)))
    blk = B.ParamBlock("embed", ks, list(USERS))
    (got,) = B.check_param_stationarity(per_task, [blk], params, tol=0.05)
    rows = torch.stack([B.flat(per_task[t], ks, params) for t in USERS])
    want = B.solve_block(rows, list(USERS), "projection", 250, 0.05)
    torch.testing.assert_close(got.alpha, want.alpha, rtol=1e-9, atol=1e-12)
    assert got.ratio == pytest.approx(want.ratio, rel=1e-9)
    assert got.stationary == want.stationary


def test_opposed_gradients_are_stationary_on_the_gram_path() -> None:
    """g and -g (a Pareto-stationary pair) give ratio 0 and a stationary verdict."""
    g = torch.randn(50, 4, generator=torch.Generator().manual_seed(1))
    per_task = {"a": (g,), "b": (-g,)}
    (sol,) = B.check_param_stationarity(per_task, [B.ParamBlock("x", [0], ["a", "b"])], [g], 0.05)
    assert sol.stationary and sol.ratio < 1e-6
    torch.testing.assert_close(sol.alpha, torch.tensor([0.5, 0.5], dtype=torch.float64))
