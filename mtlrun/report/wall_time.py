"""Vu (2019) Figure 6 (training loss against wall time) as a table, from each run's
``history.csv``: final training loss, training seconds, the balancer's share of them, test scores
and the hybrid's switch epoch per balancer setting; and the mean loss curves its plot draws.
Runs are grouped and labelled as ``balancing`` describes."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from mtlrun.report.balancing import (
    TRAIN_S,
    UNKNOWN,
    BalancerGroup,
    Curve,
    Run,
    Usable,
    balancer_groups,
    balancer_repeat_notes,
    epochs_text,
    group_curve,
    numbers_in,
    switch_epoch,
)
from mtlrun.report.collect import Record, get, primary_metric
from mtlrun.report.history import History
from mtlrun.report.table import NA, Table, deviation_notes, fmt_stat

log = logging.getLogger(__name__)

BALANCER_S = "time/balancer_s"
_METRIC_SHORT = {"accuracy": "acc", "f1": "F1"}


def _with_losses(warn: bool) -> Usable:
    """A ``usable`` test: the history holds ``train/loss/<task>`` of every task of the run."""

    def usable(record: Record, hist: History) -> bool:
        if numbers_in(hist.total_train_loss(record.tasks)):
            return True
        if warn:
            columns = ", ".join(f"train/loss/{t}" for t in record.tasks) or "train/loss/<task>"
            log.warning(
                "skipping %s for fig6: its history.csv has no %s values", record.rel, columns
            )
        return False

    return usable


def _total_train_s(run: Run) -> float | None:
    seconds = numbers_in(run.history.column(TRAIN_S))
    if seconds:
        return sum(seconds)
    value = get(run.record.metrics, "time", "train_s")
    return float(value) if isinstance(value, int | float) else None


def _seconds_per_epoch(run: Run) -> float | None:
    seconds = numbers_in(run.history.column(TRAIN_S))
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
    totals = numbers_in(run.history.total_train_loss(run.record.tasks))
    return totals[-1] if totals else None


def _switch_text(group: BalancerGroup) -> str:
    if group.balancer != "hybrid":
        return NA
    values = [switch_epoch(run) for run in group.runs]
    if all(v is UNKNOWN for v in values):
        return NA
    return ", ".join("?" if v is UNKNOWN else "never" if v is None else str(v) for v in values)


def fig6_table(records: Sequence[Record]) -> Table:
    """Vu (2019) Figure 6 as a table: per balancer, final training loss (sum over tasks of the
    last epoch's mean ``train/loss/<task>``), training seconds (sum of ``time/train_s``) and per
    epoch, the balancer's share of them (``time/balancer_s``), test score per task (%), and the
    hybrid's switch epoch."""
    groups = balancer_groups(records, _with_losses(warn=True))
    tasks = list(dict.fromkeys(t for g in groups for r in g.records for t in r.tasks))
    headers = ["Balancer", "Data", "n", "Epochs", "Final train loss", "Train s", "s / epoch"]
    headers += ["Balancer time %"]
    metrics = {t: primary_metric(records, t) for t in tasks}
    headers += [f"{t} {_METRIC_SHORT.get(m, m)}" for t, m in metrics.items()]
    headers.append("Switch epoch")
    rows = []
    for g in groups:
        row = [g.name, g.data or NA, str(len(g.runs)), epochs_text(g)]
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
    notes += balancer_repeat_notes(groups)
    title = "Vu (2019) Figure 6: training loss and wall time by balancer"
    return Table("fig6", title, headers, rows, notes)


def loss_curves(records: Sequence[Record]) -> list[Curve]:
    """Figure 6: total training loss per epoch, one curve per balancer group."""
    groups = balancer_groups(records, _with_losses(warn=False))
    return [
        group_curve(g, lambda run: run.history.total_train_loss(run.record.tasks)) for g in groups
    ]
