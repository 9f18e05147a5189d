"""What a run writes into its folder (METHODS §6): metrics.json, history.csv, predictions, plots."""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mtlrun.training.run_dir import atomic_write

log = logging.getLogger(__name__)


def write_json(path: Path, obj: Any) -> None:
    """Atomic, strict JSON write: a reader never sees half a file, and never a NaN literal.

    Non-finite floats (NaN, ±inf) are written as ``null``. A failed write (full disk, no
    permission) raises :class:`StorageError` naming the file and leaves no temp file.
    """
    text = json.dumps(finite(obj), indent=2, sort_keys=False, allow_nan=False) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))


def finite(obj: Any) -> Any:
    """``obj`` as plain JSON values: tensors and numpy scalars unwrapped, NaN and ±inf -> None."""
    if isinstance(obj, dict):
        return {str(k): finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, bool | int | str):
        return obj
    return str(obj)


def write_history(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """One row per epoch; columns are the union of all rows' keys in first-seen order."""
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(columns))
            writer.writeheader()
            for row in rows:
                writer.writerow({k: _fmt(v) for k, v in row.items()})

    atomic_write(path, write)


def _fmt(v: Any) -> Any:
    return f"{v:.6g}" if isinstance(v, float) else v


def write_predictions(
    path: Path,
    words: Sequence[Sequence[str]],
    gold: Sequence[Sequence[str]],
    pred: Sequence[Sequence[str]],
) -> None:
    """``word gold pred`` per token, a blank line between sentences (conlleval's input format)."""
    with path.open("w") as f:
        for ws, gs, ps in zip(words, gold, pred, strict=True):
            for w, g, p in zip(ws, gs, ps, strict=True):
                f.write(f"{w} {g} {p}\n")
            f.write("\n")


def write_label_predictions(
    path: Path, gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]
) -> None:
    """One label per example (image tasks) as CSV: ``index,gold,pred``, examples in file order
    (class names may hold spaces, e.g. Fashion-MNIST's ``Ankle boot``)."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["index", "gold", "pred"])
        for k, (gs, ps) in enumerate(zip(gold, pred, strict=True)):
            writer.writerow([k, *gs, *ps])


def write_split_predictions(
    folder: Path,
    split: str,
    words: Sequence[Sequence[str]] | None,
    gold: Mapping[str, Sequence[Sequence[str]]],
    pred: Mapping[str, Sequence[Sequence[str]]],
) -> list[Path]:
    """Every task's predictions of one split into ``folder``: ``<split>_<task>.txt`` in the
    run's format (:func:`write_predictions`) when the examples have ``words``, else
    ``<split>_<task>.csv`` (:func:`write_label_predictions`). Returns the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for task in pred:
        if words is not None:
            path = folder / f"{split}_{task}.txt"
            write_predictions(path, words, gold[task], pred[task])
        else:
            path = folder / f"{split}_{task}.csv"
            write_label_predictions(path, gold[task], pred[task])
        written.append(path)
    return written


def _epoch_ticks(axes: Sequence[Any]) -> None:
    """Whole epochs on the x axes (a 3-epoch run gets ticks 1, 2, 3, not 1.0, 1.5, ...)."""
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)


def plot_curves(
    path: Path, rows: Sequence[dict[str, Any]], tasks: Sequence[str], metric: dict[str, str]
) -> None:
    """``curves.png``: :func:`curves_figure`."""
    _save(curves_figure(rows, tasks, metric), path)


def curves_figure(
    rows: Sequence[dict[str, Any]], tasks: Sequence[str], metric: dict[str, str]
) -> Any:
    """Training curves: train/valid loss per task and the primary valid metric, by epoch.

    One colour per task in both panels; training solid, validation dashed.
    """
    plt = _pyplot()
    epochs = [r["epoch"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for k, t in enumerate(tasks):
        colour = f"C{k % 10}"
        for kind, style in (("train", "-"), ("valid", "--")):
            ys = [r.get(f"{kind}/loss/{t}", math.nan) for r in rows]
            axes[0].plot(epochs, ys, style, color=colour, label=f"{t} {kind}")
        axes[1].plot(
            epochs,
            [r.get(f"valid/{t}/{metric[t]}", math.nan) for r in rows],
            "--",
            marker="o",
            color=colour,
            label=f"{t} valid {metric[t]}",
        )
    axes[0].set(xlabel="epoch", ylabel="loss (mean per example)", title="loss", yscale="log")
    axes[1].set(xlabel="epoch", ylabel="primary validation metric", title="validation")
    _epoch_ticks(axes)
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig


BALANCER_PANELS = {  # history key -> (title, y-label)
    "kkt/stationary": ("Pareto-stationary mini-batches", "share of checked mini-batches"),
    "kkt/ratio": (
        "KKT ratio ||Σ α g|| / max ||g||",
        "mean over checked mini-batches (max over blocks)",
    ),
    "mgda/iterations": ("min-norm solver", "iterations (mean per step)"),
}


def plot_balancer(path: Path, rows: Sequence[dict[str, Any]], tasks: Sequence[str]) -> bool:
    """``balancer.png``: :func:`balancer_figure`; False (and nothing written) when the history
    holds no balancer weights."""
    fig = balancer_figure(rows, tasks)
    if fig is None:
        return False
    _save(fig, path)
    return True


def balancer_figure(rows: Sequence[dict[str, Any]], tasks: Sequence[str]) -> Any:
    """Task weights by epoch, and the Pareto-stationary share, the KKT ratio (the min-norm
    point's norm over the largest task gradient's, 0 at a Pareto-stationary point) and solver
    iterations when logged. One colour per task. None when the history holds no weights.
    """
    if not any(f"weight/{t}" in r for r in rows for t in tasks):
        return None
    plt = _pyplot()
    epochs = [r["epoch"] for r in rows]
    extra = [k for k in BALANCER_PANELS if any(k in r for r in rows)]
    fig, axes = plt.subplots(1, 1 + len(extra), figsize=(5.5 * (1 + len(extra)), 4), squeeze=False)
    for k, t in enumerate(tasks):
        axes[0][0].plot(
            epochs, [r.get(f"weight/{t}", math.nan) for r in rows], marker="o",
            color=f"C{k % 10}", label=t,
        )  # fmt: skip
    axes[0][0].set(xlabel="epoch", ylabel="task weight (mean over steps and blocks)",
                   title="task weights")  # fmt: skip
    for ax, key in zip(axes[0][1:], extra, strict=True):
        title, ylabel = BALANCER_PANELS[key]
        ax.plot(epochs, [r.get(key, math.nan) for r in rows], marker="o", color="black")
        ax.set(xlabel="epoch", ylabel=ylabel, title=title)
    _epoch_ticks(axes[0])
    switch = [r["epoch"] for r in rows if r.get("hybrid/phase") == 1.0]
    for ax in axes[0]:
        if switch:
            ax.axvline(min(switch) - 0.5, color="grey", ls=":", label="hybrid: second phase")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    return fig
