"""Vu (2019) Figure 4 (Pareto-stationary mini-batches) as a table, from each run's
``history.csv``: the share of checked mini-batches that passed the KKT test (``kkt/stationary``)
and the ratio the test thresholds (``kkt/ratio``) at the first, middle and last epoch and over all
epochs, per balancer setting; and the mean curves its plot draws. Runs are grouped and labelled
as ``balancing`` describes."""

from __future__ import annotations

from collections.abc import Sequence

from mtlrun.report.balancing import (
    Curve,
    balancer_groups,
    balancer_repeat_notes,
    epochs_text,
    first_middle_last_mean,
    group_curve,
    history_column,
    never,
    with_column,
)
from mtlrun.report.collect import Record
from mtlrun.report.history import HISTORY_FILE, balancer_setting, history
from mtlrun.report.table import NA, Table, deviation_notes, fmt_stat

KKT = "kkt/stationary"
KKT_RATIO = "kkt/ratio"
KKT_TOL = 0.05  # balancer.kkt_tol's default in every balancer's schema


def fig4_table(records: Sequence[Record]) -> Table:
    """Vu (2019) Figure 4 as a table: the share (%) of checked mini-batches that were Pareto-
    stationary (``kkt/stationary``, KKT condition 4.3) at the first, middle and last epoch and
    over all epochs, per balancer; the same four of ``kkt/ratio`` when a run logged it."""
    groups = balancer_groups(records, with_column(KKT, "fig4"))
    with_ratio = any(run.history.has(KKT_RATIO) for g in groups for run in g.runs)
    headers = ["Balancer", "Data", "n", "Epochs", "First %", "Middle %", "Last %", "Mean %"]
    if with_ratio:
        headers += ["Ratio first", "Ratio middle", "Ratio last", "Ratio mean"]
    rows = []
    for g in groups:
        picks = [first_middle_last_mean(r.history.column(KKT)) for r in g.runs]
        stats = [fmt_stat([p[k] for p in picks], digits=1) for k in range(4)]
        if with_ratio:
            picks = [first_middle_last_mean(r.history.column(KKT_RATIO)) for r in g.runs]
            stats += [fmt_stat([p[k] for p in picks], scale=1.0, digits=3) for k in range(4)]
        rows.append([g.name, g.data or NA, str(len(g.runs)), epochs_text(g), *stats])
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
        *balancer_repeat_notes(groups),
    ]
    title = "Vu (2019) Figure 4: Pareto-stationary mini-batches (%) per epoch"
    return Table("fig4", title, headers, rows, notes)


def kkt_curves(records: Sequence[Record]) -> list[Curve]:
    """Figure 4: share of Pareto-stationary mini-batches per epoch, one curve per group."""
    groups = balancer_groups(records, with_column(KKT, "fig4", never))
    return [group_curve(g, history_column(KKT)) for g in groups]


def kkt_ratio_curves(records: Sequence[Record]) -> list[Curve]:
    """Figure 4: ``kkt/ratio`` per epoch, one curve per curve of ``kkt_curves`` in the same
    order (values ``None`` where no run of the group logged it)."""
    groups = balancer_groups(records, with_column(KKT, "fig4", never))
    return [group_curve(g, history_column(KKT_RATIO)) for g in groups]


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
