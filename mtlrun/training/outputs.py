"""What a run writes into its folder (METHODS §6): metrics.json, history.csv, predictions, plots."""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Sequence
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


def plot_curves(
    path: Path, rows: Sequence[dict[str, Any]], tasks: Sequence[str], metric: dict[str, str]
) -> None:
    """Training curves: train/valid loss per task and the primary valid metric, by epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for t in tasks:
        for kind, style in (("train", "-"), ("valid", "--")):
            ys = [r.get(f"{kind}/loss/{t}", math.nan) for r in rows]
            axes[0].plot(epochs, ys, style, label=f"{t} {kind}")
        axes[1].plot(
            epochs,
            [r.get(f"valid/{t}/{metric[t]}", math.nan) for r in rows],
            marker="o",
            label=f"{t} ({metric[t]})",
        )
    axes[0].set(xlabel="epoch", ylabel="loss", title="loss", yscale="log")
    axes[1].set(xlabel="epoch", ylabel="score", title="validation")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_balancer(path: Path, rows: Sequence[dict[str, Any]], tasks: Sequence[str]) -> bool:
    """Task weights by epoch, and the Pareto-stationary share and solver iterations when logged.

    Returns False (and writes nothing) when the history holds no balancer weights.
    """
    if not any(f"weight/{t}" in r for r in rows for t in tasks):
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in rows]
    extra = [k for k in ("kkt/stationary", "mgda/iterations") if any(k in r for r in rows)]
    fig, axes = plt.subplots(1, 1 + len(extra), figsize=(5.5 * (1 + len(extra)), 4), squeeze=False)
    for t in tasks:
        axes[0][0].plot(epochs, [r.get(f"weight/{t}", math.nan) for r in rows], marker="o", label=t)
    axes[0][0].set(xlabel="epoch", ylabel="task weight (mean over steps and blocks)")
    titles = {
        "kkt/stationary": "share of Pareto-stationary mini-batches",
        "mgda/iterations": "min-norm solver iterations (mean)",
    }
    for ax, key in zip(axes[0][1:], extra, strict=True):
        ax.plot(epochs, [r.get(key, math.nan) for r in rows], marker="o", color="black")
        ax.set(xlabel="epoch", title=titles[key])
    switch = [r["epoch"] for r in rows if r.get("hybrid/phase") == 1.0]
    for ax in axes[0]:
        if switch:
            ax.axvline(min(switch) - 0.5, color="grey", ls=":", label="hybrid: MGDA from here")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
