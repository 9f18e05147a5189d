"""Figures drawn from run records (matplotlib's object API: no pyplot, no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

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
