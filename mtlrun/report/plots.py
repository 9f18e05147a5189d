"""Figures drawn from run records (matplotlib's object API: no pyplot, no display needed)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from mtlrun.report.balancing import Curve
from mtlrun.report.collect import Record
from mtlrun.report.groups import sweep_series
from mtlrun.report.solver_iterations import iteration_curves
from mtlrun.report.stationarity import kkt_curves, kkt_ratio_curves, kkt_tolerances
from mtlrun.report.table import mean_std
from mtlrun.report.wall_time import loss_curves


def plot_keep_ratio(records: Sequence[Record], path: Path | str) -> Path | None:
    """Test score (%) against the remaining ratio ``keep_ratio``, one line per task and one panel
    per swept setting, as Yeom (2022) Figure 4.1. Error bars are the std over seeds.

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
    """Vu (2019) Figure 6: total training loss against cumulative training seconds (left) and
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


def _epoch_panel(
    ax: Any, curves: Sequence[Curve], ylabel: str, title: str, scale: float = 1.0
) -> None:
    """One line per curve against epoch, values times ``scale``; colours by position, so that
    the panels of one figure agree."""
    from matplotlib.ticker import MaxNLocator

    for k, curve in enumerate(curves):
        scaled = replace(curve, values=[None if v is None else v * scale for v in curve.values])
        _draw(ax, scaled, curve.epochs, marker="o", color=f"C{k % 10}")
    ax.set(xlabel="epoch", ylabel=ylabel, title=title)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _plain_log_labels(axis: Any) -> None:
    """Log-axis labels as plain numbers (0.05, not 5e-02): powers of ten, 2 and 5 times them."""
    from matplotlib.ticker import FuncFormatter

    def minor(v: float, _: Any) -> str:
        mantissa = round(v / 10 ** math.floor(math.log10(v))) if v > 0 else 0
        return f"{v:g}" if mantissa in (2, 5) else ""

    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(FuncFormatter(minor))


def plot_fig3(records: Sequence[Record], path: Path | str) -> Path | None:
    """Vu (2019) Figure 3: mean min-norm solver iterations per epoch, one line per row of the fig3
    table (a run with ``balancer.compare_solvers=true`` draws both solvers on the same
    gradients). Returns the PNG's path, or ``None`` when no run logged ``mgda/iterations``."""
    from matplotlib.figure import Figure

    curves = iteration_curves(records)
    if not curves:
        return None
    fig = Figure(figsize=(6.0, 4.2), layout="constrained")
    _epoch_panel(fig.subplots(), curves, "solver iterations (mean per block)", "min-norm solver")
    return _save(fig, path)


def plot_fig4(records: Sequence[Record], path: Path | str) -> Path | None:
    """Vu (2019) Figure 4: share (%) of Pareto-stationary mini-batches per epoch, one line per
    balancer (left) and, when a run logged it, ``kkt/ratio`` by epoch (right; log scale, dashed
    line at ``balancer.kkt_tol``, below which a mini-batch counts as stationary). Returns the
    PNG's path, or ``None`` when no run logged ``kkt/stationary``."""
    from matplotlib.figure import Figure

    curves = kkt_curves(records)
    if not curves:
        return None
    ratios = kkt_ratio_curves(records)
    values = [v for c in ratios for v in c.values if v is not None]
    fig = Figure(figsize=(11.0 if values else 6.0, 4.2), layout="constrained")
    axes = fig.subplots(1, 2 if values else 1, squeeze=False)[0]
    share = "Pareto-stationary mini-batches (%)"
    _epoch_panel(axes[0], curves, share, "KKT condition", 100.0)
    if not values:
        return _save(fig, path)
    ax = axes[1]
    for tol in kkt_tolerances(records):
        ax.axhline(tol, color="grey", linestyle="--", linewidth=1, label=f"kkt_tol {tol:g}")
    ratio = "‖Σ α g‖ / max ‖g‖ over tasks (kkt/ratio)"
    _epoch_panel(ax, ratios, ratio, "distance from stationarity")
    if min(values) > 0:  # a log axis drops zeros
        ax.set_yscale("log")
        _plain_log_labels(ax.yaxis)
    return _save(fig, path)
