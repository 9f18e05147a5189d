"""Vu (2019) Figure 3 (min-norm solver iterations) as a table, from each run's ``history.csv``:
mean iterations of the Frank–Wolfe and projection solvers at the first, middle and last epoch and
over all epochs, per solver group of runs of a min-norm balancer (both solvers on the same
gradients where a run set ``balancer.compare_solvers``); and the mean curves its plot draws.
Runs are grouped and labelled as ``balancing`` describes."""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from mtlrun.report.balancing import (
    BalancerGroup,
    Curve,
    balancer_groups,
    balancer_repeat_notes,
    epochs_text,
    first_middle_last_mean,
    group_curve,
    history_column,
    solver_of,
    with_column,
)
from mtlrun.report.collect import Record
from mtlrun.report.history import HISTORY_FILE, History, balancer_name, history
from mtlrun.report.table import NA, Table, deviation_notes, fmt_stat

ITERATIONS = "mgda/iterations"
# ``balancer.compare_solvers``: every min-norm problem also solved by both iterative solvers.
COMPARED = ("frank_wolfe", "projection")
# Balancers that solve a min-norm problem (hybrid in its MGDA phase).
SOLVING = ("mgda", "mgda_ub", "hybrid")


def compares_solvers(records: Sequence[Record]) -> bool:
    """Whether runs of min-norm balancers use two or more solvers, or a run solved its problems
    with both (``balancer.compare_solvers``); ``auto`` then prints fig3."""
    solvers = {solver_of(r) for r in records if balancer_name(r) in SOLVING}
    return len(solvers - {None}) > 1 or any(_ran_both_solvers(r) for r in records)


def _same_gradients(hist: History) -> bool:
    """Whether the history holds ``mgda/iterations/<solver>`` of both iterative solvers."""
    return all(hist.has(f"{ITERATIONS}/{s}") for s in COMPARED)


def _ran_both_solvers(record: Record) -> bool:
    # history.csv read only where it exists: ``auto`` must not warn about other tables' runs.
    if balancer_name(record) not in SOLVING:
        return False
    if not (record.path.parent / HISTORY_FILE).is_file():
        return False
    hist = history(record)
    return hist is not None and _same_gradients(hist)


@dataclass(frozen=True)
class SolverSeries:
    """One row of fig3 and line of its plot: column ``column`` of ``group``'s runs, the
    iterations of ``solver`` (``None``: unknown)."""

    group: BalancerGroup
    solver: str | None
    column: str

    @property
    def label(self) -> str:
        """``mgda (same gradients): frank_wolfe``, for the plot's legend."""
        return self.group.label + (f": {self.solver}" if self.solver else "")


def solver_series(records: Sequence[Record], warn: bool = True) -> list[SolverSeries]:
    """Fig. 3's rows, per solver group of runs that logged ``mgda/iterations``: one series of
    that column (the solver the update used) for runs that solved each problem once, and one
    per iterative solver (``mgda/iterations/<solver>``, labelled "same gradients") for runs
    that solved each problem with both (``balancer.compare_solvers=true``)."""
    usable = with_column(ITERATIONS, "fig3", warn=lambda r: warn and balancer_name(r) in SOLVING)
    out = []
    for g in balancer_groups(records, usable, by_solver=True):
        alone = tuple(r for r in g.runs if not _same_gradients(r.history))
        both = tuple(r for r in g.runs if _same_gradients(r.history))
        if alone:
            out.append(SolverSeries(dataclasses.replace(g, runs=alone), g.solver, ITERATIONS))
        if both:
            same = dataclasses.replace(g, label=f"{g.label} (same gradients)", runs=both)
            out += [SolverSeries(same, s, f"{ITERATIONS}/{s}") for s in COMPARED]
    return out


def fig3_table(records: Sequence[Record]) -> Table:
    """Vu (2019) Figure 3 as a table: mean min-norm solver iterations per solved block at the
    first, middle and last epoch and over all epochs, per solver: ``mgda/iterations`` of runs
    that used one solver, and both solvers on the same gradients where a run logged
    ``mgda/iterations/frank_wolfe`` and ``mgda/iterations/projection``."""
    series = solver_series(records)
    headers = ["Balancer", "Solver", "Data", "n", "Epochs", "First", "Middle", "Last", "Mean"]
    rows = []
    for s in series:
        g = s.group
        picks = [first_middle_last_mean(r.history.column(s.column)) for r in g.runs]
        stats = [fmt_stat([p[k] for p in picks], scale=1.0, digits=1) for k in range(4)]
        row = [g.name, s.solver or NA, g.data or NA, str(len(g.runs)), epochs_text(g)]
        rows.append(row + stats)
    notes = [
        "Iterations: the solver's mean over an epoch's mini-batches and shared blocks; "
        "Middle is epoch ⌈n/2⌉ of the epochs that solved a min-norm problem.",
        "Thesis (Fig. 3): the projection method needs far fewer iterations than Frank–Wolfe.",
    ]
    if any(s.column != ITERATIONS for s in series):
        notes.append(
            "Same gradients (balancer.compare_solvers=true): every min-norm problem met in "
            "training also solved by both solvers, on the same scaled Gram matrix; the update "
            "used balancer.solver."
        )
    ratio = _solver_ratio(series)
    if ratio:
        notes.append(ratio)
    runs = {r.rel: r for s in series for r in s.group.records}  # same-gradient runs: 2 rows
    notes += deviation_notes(runs.values())
    groups = {id(s.group.runs): s.group for s in series}  # the same-gradient groups: 2 series
    notes += list(dict.fromkeys(balancer_repeat_notes(list(groups.values()))))
    title = "Vu (2019) Figure 3: min-norm solver iterations per epoch"
    return Table("fig3", title, headers, rows, notes)


def _solver_ratio(series: Sequence[SolverSeries]) -> str:
    """``"frank_wolfe needs 5.2x the iterations of projection ..."``: from the same-gradient
    series where there are any, else from runs of either solver."""
    same = [s for s in series if s.column != ITERATIONS]
    means: dict[str, list[float]] = {}
    for s in same or series:
        for run in s.group.runs:
            mean = first_middle_last_mean(run.history.column(s.column))[3]
            if mean is not None and s.solver:
                means.setdefault(s.solver, []).append(mean)
    fw, proj = means.get("frank_wolfe"), means.get("projection")
    if not fw or not proj or statistics.fmean(proj) <= 0:
        return ""
    times = statistics.fmean(fw) / statistics.fmean(proj)
    where = " on the same min-norm problems" if same else ""
    return (
        f"frank_wolfe needs {times:.1f}x the iterations of projection{where} (means over epochs)."
    )


def iteration_curves(records: Sequence[Record]) -> list[Curve]:
    """Figure 3: mean solver iterations per epoch, one curve per row of fig3."""
    series = solver_series(records, warn=False)
    return [
        group_curve(dataclasses.replace(s.group, label=s.label), history_column(s.column))
        for s in series
    ]
