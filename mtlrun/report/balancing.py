"""Seed 001 §4 balancer figures as tables, from each run's ``history.csv``: Figure 6 (training
loss against wall time), Figure 3 (min-norm solver iterations) and Figure 4 (share of
Pareto-stationary mini-batches and the ratio the KKT test thresholds), and the mean curves their
plots draw.

Runs are grouped by data, method, balancer and the overrides that change results; seeds of one
setting are pooled (``mean ± std``, ddof=1, count in ``n``). A group is named by its balancer and
whatever tells it apart from the other groups of the table (``mgda (balancer.normalize=l2)``).
Epochs are counted over all rows of ``history.csv`` in file order (every phase of a run).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import accumulate

from mtlrun.report.collect import Record, get, primary_metric
from mtlrun.report.groups import setting_overrides
from mtlrun.report.history import (
    HISTORY_FILE,
    History,
    balancer_name,
    balancer_setting,
    history,
)
from mtlrun.report.table import (
    NA,
    Table,
    deviation_mark,
    deviation_notes,
    fmt_stat,
    mean_std,
)

log = logging.getLogger(__name__)

ITERATIONS = "mgda/iterations"
# ``balancer.compare_solvers``: every min-norm problem also solved by both iterative solvers.
COMPARED = ("frank_wolfe", "projection")
KKT = "kkt/stationary"
KKT_RATIO = "kkt/ratio"
KKT_TOL = 0.05  # balancer.kkt_tol's default in every balancer's schema
HYBRID_PHASE = "hybrid/phase"
BALANCER_S = "time/balancer_s"
TRAIN_S = "time/train_s"
# Balancers that solve a min-norm problem (hybrid in its MGDA phase).
SOLVING = ("mgda", "mgda_ub", "hybrid")
_METRIC_SHORT = {"accuracy": "acc", "f1": "F1"}


@dataclass(frozen=True)
class Run:
    """A run's metrics.json record and its history.csv."""

    record: Record
    history: History


@dataclass(frozen=True)
class BalancerGroup:
    """Runs of one balancer setting (seeds of it). ``solver``: set when grouped by solver."""

    label: str
    balancer: str
    data: str
    solver: str | None
    runs: tuple[Run, ...]

    @property
    def records(self) -> list[Record]:
        return [run.record for run in self.runs]

    @property
    def name(self) -> str:
        """``label`` with ``†`` when a run deviates from the paper's protocol."""
        return self.label + deviation_mark(self.records)


@dataclass(frozen=True)
class Curve:
    """A group's mean curve over seeds, epoch by epoch (as many epochs as its shortest run).

    ``seconds``: cumulative training seconds at each epoch's end (``None`` when not logged);
    ``marks``: epochs to mark on the curve (the hybrid's switch to MGDA).
    """

    label: str
    epochs: list[int]
    values: list[float | None]
    seconds: list[float | None]
    marks: list[int]


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def solver_of(record: Record) -> str | None:
    """The min-norm solver of a run (``balancer.solver``), as text; ``None`` when unknown."""
    value = balancer_setting(record, "solver")
    return None if value is None else str(value)


def compares_balancers(records: Sequence[Record]) -> bool:
    """Whether the runs hold two or more balancers or ``balancer.*`` settings (``auto`` then
    prints fig6 and fig4); sweeps of anything else with one balancer do not count."""
    return len({(balancer_name(r), _balancer_overrides(r)) for r in records}) > 1


def _balancer_overrides(record: Record) -> tuple[str, ...]:
    return tuple(
        o
        for o in setting_overrides(record)
        if _override_key(o).startswith("balancer.") and _override_key(o) not in _MONITOR_ONLY
    )


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


# Overrides that only switch the Pareto-stationarity monitor on or off.
_MONITOR_ONLY = {"balancer.kkt_every"}
# Hidden from fig3's grouping and labels: its Solver column and "(same gradients)" tell them.
_BY_SOLVER = {"balancer.solver", "balancer.compare_solvers"}


def _settings(record: Record, by_solver: bool) -> tuple[str, ...]:
    """What tells a run's setting apart, besides data, balancer name and seed."""
    hidden = {"balancer", *_MONITOR_ONLY, *(_BY_SOLVER if by_solver else ())}
    kept = [o for o in setting_overrides(record) if _override_key(o) not in hidden]
    return (f"method={record.method}", *kept)


def balancer_groups(
    records: Sequence[Record],
    usable: Callable[[Record, History], bool],
    by_solver: bool = False,
) -> list[BalancerGroup]:
    """Group the runs whose history.csv is ``usable``, in order of first appearance."""
    buckets: dict[tuple[str, ...], list[Run]] = {}
    settings: dict[tuple[str, ...], tuple[str, ...]] = {}
    solvers: dict[tuple[str, ...], str | None] = {}
    for record in records:
        hist = history(record)
        if hist is None or not usable(record, hist):
            continue
        solver = solver_of(record) if by_solver else None
        args = json.dumps(record.method_args, sort_keys=True, default=str)
        own = _settings(record, by_solver)
        key = (record.data_name, balancer_name(record), solver or "", args, *own)
        buckets.setdefault(key, []).append(Run(record, hist))
        settings[key], solvers[key] = own, solver
    common = set.intersection(*(set(s) for s in settings.values())) if settings else set()
    groups = []
    for key, runs in buckets.items():
        differing = [s for s in settings[key] if s not in common]
        label = key[1] + (f" ({', '.join(differing)})" if differing else "")
        groups.append(BalancerGroup(label, key[1], key[0], solvers[key], tuple(runs)))
    return groups


def _numbers(values: Sequence[float | None]) -> list[float]:
    return [v for v in values if v is not None]


Usable = Callable[[Record, History], bool]


def _never(record: Record) -> bool:
    return False


def _always(record: Record) -> bool:
    return True


def _with_column(column: str, table: str, warn: Callable[[Record], bool] = _always) -> Usable:
    """A ``usable`` test: the history holds numbers in ``column``; else a warning if ``warn``."""

    def usable(record: Record, hist: History) -> bool:
        if hist.has(column):
            return True
        if warn(record):
            log.warning(
                "skipping %s for %s: its history.csv has no %s values", record.rel, table, column
            )
        return False

    return usable


def _with_losses(warn: bool) -> Usable:
    """A ``usable`` test: the history holds ``train/loss/<task>`` of every task of the run."""

    def usable(record: Record, hist: History) -> bool:
        if _numbers(hist.total_train_loss(record.tasks)):
            return True
        if warn:
            columns = ", ".join(f"train/loss/{t}" for t in record.tasks) or "train/loss/<task>"
            log.warning(
                "skipping %s for fig6: its history.csv has no %s values", record.rel, columns
            )
        return False

    return usable


# ---------------------------------------------------------------------------- per-run values


def train_seconds(run: Run) -> list[float | None]:
    """Cumulative training seconds at the end of each epoch (``None`` when not logged)."""
    per_epoch = run.history.column(TRAIN_S)
    if not _numbers(per_epoch):
        return [None] * len(per_epoch)
    return list(accumulate(v or 0.0 for v in per_epoch))


def _total_train_s(run: Run) -> float | None:
    seconds = _numbers(run.history.column(TRAIN_S))
    if seconds:
        return sum(seconds)
    value = get(run.record.metrics, "time", "train_s")
    return float(value) if isinstance(value, int | float) else None


def _seconds_per_epoch(run: Run) -> float | None:
    seconds = _numbers(run.history.column(TRAIN_S))
    return sum(seconds) / len(seconds) if seconds else None


def _balancer_share(run: Run) -> float | None:
    """Seconds spent in the balancer over training seconds (epochs that log both)."""
    pairs = [
        (b, t)
        for b, t in zip(run.history.column(BALANCER_S), run.history.column(TRAIN_S), strict=True)
        if b is not None and t is not None
    ]
    total = sum(t for _, t in pairs)
    return sum(b for b, _ in pairs) / total if pairs and total > 0 else None


def _final_loss(run: Run) -> float | None:
    totals = _numbers(run.history.total_train_loss(run.record.tasks))
    return totals[-1] if totals else None


_UNKNOWN = object()


def switch_epoch(run: Run) -> object:
    """The hybrid's switch epoch: an int, ``None`` (never switched) or ``_UNKNOWN``.

    ``balancer.switch_epoch`` of metrics.json, else the first epoch whose ``hybrid/phase`` is 1.
    """
    entry = get(run.record.metrics, "balancer", default=None)
    if isinstance(entry, dict) and "switch_epoch" in entry:
        value = entry["switch_epoch"]
        return int(value) if isinstance(value, int | float) else None
    phases = run.history.column(HYBRID_PHASE)
    if not _numbers(phases):
        return _UNKNOWN
    epochs = run.history.column("epoch")
    for k, phase in enumerate(phases):
        if phase is not None and phase >= 1:
            return int(epochs[k]) if epochs[k] is not None else k + 1
    return None


def _switch_text(group: BalancerGroup) -> str:
    if group.balancer != "hybrid":
        return NA
    values = [switch_epoch(run) for run in group.runs]
    if all(v is _UNKNOWN for v in values):
        return NA
    return ", ".join("?" if v is _UNKNOWN else "never" if v is None else str(v) for v in values)


def _epochs_text(group: BalancerGroup) -> str:
    counts = sorted({len(run.history) for run in group.runs})
    return ", ".join(str(c) for c in counts)


def _first_middle_last_mean(values: Sequence[float | None]) -> list[float | None]:
    """The first, middle (⌈n/2⌉-th), last and mean of the numbers among ``values``."""
    xs = _numbers(values)
    if not xs:
        return [None] * 4
    return [xs[0], xs[(len(xs) + 1) // 2 - 1], xs[-1], statistics.fmean(xs)]


# ---------------------------------------------------------------------------------- tables


def fig6_table(records: Sequence[Record]) -> Table:
    """Seed 001 Figure 6 as a table: per balancer, final training loss (sum over tasks of the
    last epoch's mean ``train/loss/<task>``), training seconds (sum of ``time/train_s``) and per
    epoch, the balancer's share of them (``time/balancer_s``), test score per task (%), and the
    hybrid's switch epoch."""
    groups = balancer_groups(records, _with_losses(warn=True))
    tasks = list(dict.fromkeys(t for g in groups for r in g.records for t in r.tasks))
    headers = ["Balancer", "Data", "n", "Epochs", "Final train loss", "Train s", "s / epoch"]
    headers += ["Balancer time %"]
    headers += [f"{t} {_METRIC_SHORT.get(primary_metric(t), primary_metric(t))}" for t in tasks]
    headers.append("Switch epoch")
    rows = []
    for g in groups:
        row = [g.name, g.data or NA, str(len(g.runs)), _epochs_text(g)]
        row.append(fmt_stat([_final_loss(r) for r in g.runs], scale=1.0, digits=4))
        row.append(fmt_stat([_total_train_s(r) for r in g.runs], scale=1.0, digits=1))
        row.append(fmt_stat([_seconds_per_epoch(r) for r in g.runs], scale=1.0, digits=2))
        row.append(fmt_stat([_balancer_share(r) for r in g.runs], digits=1))
        row += [fmt_stat(r.test_metric(t) for r in g.records) for t in tasks]
        row.append(_switch_text(g))
        rows.append(row)
    notes = [
        "Train s: training steps only (validation excluded); the loss is the training loss "
        "summed over tasks, as the thesis's Figure 6 plots it against wall time. Balancer "
        "time: seconds inside the balancer's backward (task gradients included).",
        "Thesis (Fig. 6, no numbers given): GradNorm keeps up with MGDA early, MGDA pulls ahead "
        "in the last epochs, and the hybrid reaches MGDA's quality much faster.",
    ]
    if any(g.balancer == "hybrid" for g in groups):
        notes.append("Switch epoch: hybrid's move from GradNorm to MGDA, one per seed.")
    notes += deviation_notes(r for g in groups for r in g.records)
    title = "Seed 001 Figure 6: training loss and wall time by balancer"
    return Table("fig6", title, headers, rows, notes)


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
    usable = _with_column(ITERATIONS, "fig3", warn=lambda r: warn and balancer_name(r) in SOLVING)
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
    """Seed 001 Figure 3 as a table: mean min-norm solver iterations per solved block at the
    first, middle and last epoch and over all epochs, per solver: ``mgda/iterations`` of runs
    that used one solver, and both solvers on the same gradients where a run logged
    ``mgda/iterations/frank_wolfe`` and ``mgda/iterations/projection``."""
    series = solver_series(records)
    headers = ["Balancer", "Solver", "Data", "n", "Epochs", "First", "Middle", "Last", "Mean"]
    rows = []
    for s in series:
        g = s.group
        picks = [_first_middle_last_mean(r.history.column(s.column)) for r in g.runs]
        stats = [fmt_stat([p[k] for p in picks], scale=1.0, digits=1) for k in range(4)]
        row = [g.name, s.solver or NA, g.data or NA, str(len(g.runs)), _epochs_text(g)]
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
    title = "Seed 001 Figure 3: min-norm solver iterations per epoch"
    return Table("fig3", title, headers, rows, notes)


def _solver_ratio(series: Sequence[SolverSeries]) -> str:
    """``"frank_wolfe needs 5.2x the iterations of projection ..."``: from the same-gradient
    series where there are any, else from runs of either solver."""
    same = [s for s in series if s.column != ITERATIONS]
    means: dict[str, list[float]] = {}
    for s in same or series:
        for run in s.group.runs:
            mean = _first_middle_last_mean(run.history.column(s.column))[3]
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


def fig4_table(records: Sequence[Record]) -> Table:
    """Seed 001 Figure 4 as a table: the share (%) of checked mini-batches that were Pareto-
    stationary (``kkt/stationary``, KKT condition 4.3) at the first, middle and last epoch and
    over all epochs, per balancer; the same four of ``kkt/ratio`` when a run logged it."""
    groups = balancer_groups(records, _with_column(KKT, "fig4"))
    with_ratio = any(run.history.has(KKT_RATIO) for g in groups for run in g.runs)
    headers = ["Balancer", "Data", "n", "Epochs", "First %", "Middle %", "Last %", "Mean %"]
    if with_ratio:
        headers += ["Ratio first", "Ratio middle", "Ratio last", "Ratio mean"]
    rows = []
    for g in groups:
        picks = [_first_middle_last_mean(r.history.column(KKT)) for r in g.runs]
        stats = [fmt_stat([p[k] for p in picks], digits=1) for k in range(4)]
        if with_ratio:
            picks = [_first_middle_last_mean(r.history.column(KKT_RATIO)) for r in g.runs]
            stats += [fmt_stat([p[k] for p in picks], scale=1.0, digits=3) for k in range(4)]
        rows.append([g.name, g.data or NA, str(len(g.runs)), _epochs_text(g), *stats])
    notes = ["Middle is epoch ⌈n/2⌉ of the epochs that were monitored."]
    if with_ratio:
        notes.append(
            "Ratio (kkt/ratio): mean over checked mini-batches of the largest ||Σ α_t g_t|| / "
            "max_t ||g_t|| over the shared blocks (0 = Pareto-stationary); a mini-batch counts "
            f"as stationary when it is ≤ balancer.kkt_tol (default {KKT_TOL})."
        )
    notes += [
        "Thesis (Fig. 4): few mini-batches are Pareto-stationary early in training; the share "
        "rises as training goes on.",
        *deviation_notes(r for g in groups for r in g.records),
    ]
    title = "Seed 001 Figure 4: Pareto-stationary mini-batches (%) per epoch"
    return Table("fig4", title, headers, rows, notes)


# ---------------------------------------------------------------------------------- curves


def _mean_curve(series: Sequence[Sequence[float | None]]) -> list[float | None]:
    """Epoch-wise mean over runs (as long as the shortest run); ``None`` where none has a number."""
    length = min((len(s) for s in series), default=0)
    out: list[float | None] = []
    for k in range(length):
        stat = mean_std(s[k] for s in series)
        out.append(None if stat is None else stat[0])
    return out


def _curve(group: BalancerGroup, values: Callable[[Run], Sequence[float | None]]) -> Curve:
    ys = _mean_curve([values(run) for run in group.runs])
    seconds = _mean_curve([train_seconds(run) for run in group.runs])
    marks = sorted({v for v in (switch_epoch(run) for run in group.runs) if isinstance(v, int)})
    return Curve(group.name, list(range(1, len(ys) + 1)), ys, seconds, marks)


def loss_curves(records: Sequence[Record]) -> list[Curve]:
    """Figure 6: total training loss per epoch, one curve per balancer group."""
    groups = balancer_groups(records, _with_losses(warn=False))
    return [_curve(g, lambda run: run.history.total_train_loss(run.record.tasks)) for g in groups]


def _column(name: str) -> Callable[[Run], list[float | None]]:
    return lambda run: run.history.column(name)


def iteration_curves(records: Sequence[Record]) -> list[Curve]:
    """Figure 3: mean solver iterations per epoch, one curve per row of fig3."""
    series = solver_series(records, warn=False)
    return [_curve(dataclasses.replace(s.group, label=s.label), _column(s.column)) for s in series]


def kkt_curves(records: Sequence[Record]) -> list[Curve]:
    """Figure 4: share of Pareto-stationary mini-batches per epoch, one curve per group."""
    groups = balancer_groups(records, _with_column(KKT, "fig4", _never))
    return [_curve(g, _column(KKT)) for g in groups]


def kkt_ratio_curves(records: Sequence[Record]) -> list[Curve]:
    """Figure 4: ``kkt/ratio`` per epoch, one curve per curve of ``kkt_curves`` in the same
    order (values ``None`` where no run of the group logged it)."""
    groups = balancer_groups(records, _with_column(KKT, "fig4", _never))
    return [_curve(g, _column(KKT_RATIO)) for g in groups]


def kkt_tolerances(records: Sequence[Record]) -> list[float]:
    """The distinct ``balancer.kkt_tol`` of the runs that logged ``kkt/ratio``, sorted (the
    default where a run does not record it)."""
    tols = set()
    for record in records:
        hist = history(record) if (record.path.parent / HISTORY_FILE).is_file() else None
        if hist is None or not hist.has(KKT_RATIO):
            continue
        try:
            tols.add(float(balancer_setting(record, "kkt_tol") or KKT_TOL))
        except (TypeError, ValueError):
            tols.add(KKT_TOL)
    return sorted(tols)
