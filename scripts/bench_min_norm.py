"""Accuracy and iterations of the min-norm solvers against an exact reference, per problem family.

    python scripts/bench_min_norm.py                         # 3 seeds, max_iter 250 (defaults)
    python scripts/bench_min_norm.py --seeds 10 --max-iter 1000

Problems: every family of tests/unit/balancers/test_min_norm.py (unit norms, row norms ~1e5 and
~1e-5, norms spread over 10^±3 and 10^±6, the latter also with the small rows opposing the large
ones, colinear, duplicated and zero rows, randn · 3e3) for T in {2, 3, 5, 10}, d in {1, 20, 10^4}
and ``--seeds`` seeds; the problems and the exact reference (support enumeration, certified in
exact rationals) are the test file's, so the bench measures what the tests accept.

Each problem is solved by every solver (``exact`` for T = 2 only) with ``--max-iter``. The gap of
a value f against the reference f* is |f − f*| / max(f*, 1e-6 · max_t ||g_t||²): at most 1e-6
exactly when the tests' acceptance rule holds (1e-6 relative, or 1e-12 · max_t ||g_t||² when the
optimum is ~0). A benchmark, not a test: it prints a markdown table and asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's tests package

from mtlrun.balancers.min_norm import SOLVERS, gram_matrix, min_norm  # noqa: E402
from tests.unit.balancers.test_min_norm import (  # noqa: E402
    FAMILY_MAKERS,
    audit_problem,
    reference_min_norm,
)

TASKS = (2, 3, 5, 10)
DIMS = (1, 20, 10_000)
PASS = 1e-6  # the tests' relative tolerance


@dataclass
class Cell:
    """What one solver did on one family's problems."""

    gaps: list[float] = field(default_factory=list)
    iterations: list[int] = field(default_factory=list)
    errors: int = 0


def gap(value: float, ref: float, scale: float) -> float:
    """|f − f*| / max(f*, 1e-6 · scale): ≤ 1e-6 iff within 1e-6 relative or 1e-12 · scale."""
    return abs(value - ref) / max(ref, PASS * scale, 1e-300)


def run(seeds: int, max_iter: int) -> tuple[dict[tuple[str, str], Cell], int, float]:
    """Solve every problem with every solver; (cells by (solver, family), problems, seconds)."""
    cells: dict[tuple[str, str], Cell] = {}
    count, start = 0, time.perf_counter()
    for family in FAMILY_MAKERS:
        for T in TASKS:
            for d in DIMS:
                for seed in range(seeds):
                    grads = audit_problem(family, T, d, seed)
                    G = gram_matrix(grads)
                    ref, scale = reference_min_norm(G).value, float(G.diagonal().max())
                    count += 1
                    for solver in SOLVERS:
                        if solver == "exact" and T != 2:
                            continue
                        cell = cells.setdefault((solver, family), Cell())
                        try:
                            result = min_norm(grads, solver, max_iter=max_iter)
                        except (ValueError, RuntimeError, IndexError):
                            cell.errors += 1
                            continue
                        cell.gaps.append(gap(result.norm_sq, ref, scale))
                        cell.iterations.append(result.iterations)
    return cells, count, time.perf_counter() - start


def print_table(
    cells: dict[tuple[str, str], Cell], args: argparse.Namespace, count: int, seconds: float
) -> None:
    print(
        f"\n{count} problems ({len(FAMILY_MAKERS)} families x T in {list(TASKS)} x d in "
        f"{list(DIMS)} x {args.seeds} seeds), max_iter {args.max_iter}, torch "
        f"{torch.__version__}, {seconds:.1f} s\n"
    )
    print("gap: |f − f*| / max(f*, 1e-6 · max_t ||g_t||²); the tests accept ≤ 1e-6.\n")
    print(
        "| solver | family | problems | worst gap | over 1e-6 | errors | mean iter. | max iter. |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for solver in SOLVERS:
        for family in FAMILY_MAKERS:
            cell = cells.get((solver, family))
            if cell is None:
                continue
            solved = len(cell.gaps)
            cells_text = [
                solver,
                family,
                str(solved + cell.errors),
                f"{max(cell.gaps):.1e}" if solved else "–",
                str(sum(g > PASS for g in cell.gaps)),
                str(cell.errors),
                f"{statistics.mean(cell.iterations):.1f}" if solved else "–",
                str(max(cell.iterations)) if solved else "–",
            ]
            print("| " + " | ".join(cells_text) + " |")
    print("\nexact runs on the T = 2 problems only; errors: the solver raised.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="random problems per family, T, d")
    parser.add_argument("--max-iter", type=int, default=250, help="cap of the iterative solvers")
    args = parser.parse_args()
    cells, count, seconds = run(args.seeds, args.max_iter)
    print_table(cells, args, count, seconds)


if __name__ == "__main__":
    main()
