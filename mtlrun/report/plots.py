"""Figures drawn from run records (matplotlib's object API: no pyplot, no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from mtlrun.report.balancing import Curve, iteration_curves, kkt_curves, loss_curves
from mtlrun.report.collect import Record
from mtlrun.report.groups import sweep_series
from mtlrun.report.table import mean_std


def plot_keep_ratio(records: Sequence[Record], path: Path | str) -> Path | None:
    """Test score (%) against the remaining ratio ``keep_ratio``, one line per task and one panel
    per swept setting, as seed 000 Figure 4.1. Error bars are the std over seeds.

    Returns the PNG's path, or ``None`` (nothing written) when the records hold no sweep.
    """
    from matplotlib.figure import Figure  # imported here: tables load without matplotlib

    series = sweep_series(records)
    if not series:
        return None
    fig = Figure(figsize=(5.0 * len(series), 4.0), layout="constrained")
    axes = fig.subplots(1, len(series), squeeze=False)[0]
    for ax, s in zip(axes, series, strict=True):
        for task in s.tasks:
            xs, ys, errs = [], [], []
            for ratio, group in s.points:
                stat = mean_std(r.test_metric(task) for r in group.records)
                if stat is not None:
                    xs.append(ratio)
                    ys.append(stat[0] * 100)
                    errs.append((stat[1] or 0.0) * 100)
            ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, label=task)
        title = f"{s.method} on {s.data}" + (f" ({s.label})" if s.label else "")
        ax.set(title=title, xlabel="remaining ratio (keep_ratio)", ylabel="test score (%)")
        ax.grid(alpha=0.3)
        ax.legend()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def _save(fig: Any, path: Path | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def _draw(ax: Any, curve: Curve, xs: Sequence[float | None], **style: Any) -> None:
    """One curve against ``xs`` (points without a value skipped), its switch epochs marked."""
    points = [(x, y) for x, y in zip(xs, curve.values, strict=False) if None not in (x, y)]
    if not points:
        return
    line = ax.plot(*zip(*points, strict=True), label=curve.label, **style)[0]
    marked = [
        (xs[e - 1], curve.values[e - 1])
        for e in curve.marks
        if e <= len(xs) and None not in (xs[e - 1], curve.values[e - 1])
    ]
    if marked:
        ax.plot(*zip(*marked, strict=True), "x", color=line.get_color(), markersize=10, mew=2)


def plot_fig6(records: Sequence[Record], path: Path | str) -> Path | None:
    """Seed 001 Figure 6: total training loss against cumulative training seconds (left) and
    against epoch (right), one line per balancer (mean over seeds); ``x`` marks the hybrid's
    switch to MGDA. Returns the PNG's path, or ``None`` when no run has training losses."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    curves = loss_curves(records)
    if not curves:
        return None
    fig = Figure(figsize=(11.0, 4.2), layout="constrained")
    by_time, by_epoch = fig.subplots(1, 2)
    for curve in curves:
        _draw(by_time, curve, curve.seconds, marker=".")
        _draw(by_epoch, curve, curve.epochs, marker=".")
    by_time.set(xlabel="training time (s)", ylabel="training loss (sum over tasks)")
    by_time.set_title("loss against wall time")
    by_epoch.set(xlabel="epoch", ylabel="training loss (sum over tasks)")
    by_epoch.set_title("loss by epoch")
    for ax in (by_time, by_epoch):
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)


def _by_epoch(
    curves: Sequence[Curve], path: Path | str, ylabel: str, title: str, scale: float
) -> Path:
    """One line per curve against epoch, values times ``scale``."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 4.2), layout="constrained")
    ax = fig.subplots()
    for curve in curves:
        scaled = replace(curve, values=[None if v is None else v * scale for v in curve.values])
        _draw(ax, scaled, curve.epochs, marker="o")
    ax.set(xlabel="epoch", ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_fig3(records: Sequence[Record], path: Path | str) -> Path | None:
    """Seed 001 Figure 3: mean min-norm solver iterations per epoch, one line per solver.
    Returns the PNG's path, or ``None`` when no run logged ``mgda/iterations``."""
    curves = iteration_curves(records)
    if not curves:
        return None
    return _by_epoch(curves, path, "solver iterations (mean per block)", "min-norm solver", 1.0)


def plot_fig4(records: Sequence[Record], path: Path | str) -> Path | None:
    """Seed 001 Figure 4: share (%) of Pareto-stationary mini-batches per epoch, one line per
    balancer. Returns the PNG's path, or ``None`` when no run logged ``kkt/stationary``."""
    curves = kkt_curves(records)
    if not curves:
        return None
    return _by_epoch(curves, path, "Pareto-stationary mini-batches (%)", "KKT condition", 100.0)
