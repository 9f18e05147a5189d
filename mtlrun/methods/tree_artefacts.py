"""Files of ``method=tree_search`` in the run folder: tree.json, affinity CSVs and heatmaps,
and tree.png (the searched tree drawn as in seed 001 Fig. 8)."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mtlrun.model.paths import MultiTaskModel


def write_tree_json(run_dir: Path, steps: list[dict[str, Any]], random_splits: bool) -> None:
    """``tree.json``: every step's blocks, paths, stresses, chosen block and partition, and
    affinity matrices (written after each step; atomically, so a reader never sees half)."""
    path = run_dir / "tree.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"random_splits": random_splits, "steps": steps}, indent=2))
    os.replace(tmp, path)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def _write_matrix(path: Path, labels: Sequence[str], matrix: Sequence[Sequence[float]]) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["", *labels])
        for label, row in zip(labels, matrix, strict=True):
            w.writerow([label, *(f"{v:.6g}" for v in row)])


def _heatmap(
    path: Path, labels: Sequence[str], matrix: Sequence[Sequence[float]], title: str
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(labels)
    fig, ax = plt.subplots(figsize=(1.2 * n + 2.5, 1.2 * n + 1.5))
    image = ax.imshow(matrix, cmap="viridis")
    ax.set_xticks(range(n), labels, rotation=45, ha="right")
    ax.set_yticks(range(n), labels)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{matrix[i][j]:.3g}", ha="center", va="center", color="w", fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_step_artefacts(run_dir: Path, step: dict[str, Any]) -> None:
    """``affinity_<block>_step<k>.csv`` + ``.png`` (task affinity A^i, Alg. 3, a divergence) and
    ``children_affinity_<block>_step<k>.csv`` (Ã^i, Alg. 4) of the split block of a step."""
    if not step.get("task_affinity"):
        return  # a random split measures nothing
    block, k = step["split"]["block"], step["step"]
    stem = f"{_safe(block)}_step{k}"
    aff = step["task_affinity"][block]
    _write_matrix(run_dir / f"affinity_{stem}.csv", aff["tasks"], aff["matrix"])
    title = f"task affinity (divergence C, eq. 5.8) at {block}, step {k}"
    _heatmap(run_dir / f"affinity_{stem}.png", aff["tasks"], aff["matrix"], title)
    _write_matrix(
        run_dir / f"children_affinity_{stem}.csv", step["children"], step["children_affinity"]
    )


def tree_layout(model: MultiTaskModel) -> dict[str, tuple[float, int]]:
    """(x, depth) of every block on a path: heads at x = task index, a block above the mean x
    of the heads below it, depth = its position on the paths."""
    below: dict[str, list[int]] = {}
    depth: dict[str, int] = {}
    for k, path in enumerate(model.paths.values()):
        for d, b in enumerate(path):
            below.setdefault(b, []).append(k)
            depth[b] = d
    return {b: (sum(xs) / len(xs), depth[b]) for b, xs in below.items()}


def write_tree_png(path: Path, model: MultiTaskModel) -> None:
    """The tree: one box per block, edges along the task paths, heads labelled by task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pos = tree_layout(model)
    n_tasks, n_depth = len(model.paths), max(d for _, d in pos.values()) + 1
    fig, ax = plt.subplots(figsize=(max(3.0, 2.2 * n_tasks), 1.3 * n_depth + 0.8))
    for p in model.paths.values():
        for a, b in zip(p, p[1:], strict=False):
            (xa, da), (xb, db) = pos[a], pos[b]
            ax.plot([xa, xb], [-da, -db], color="0.4", zorder=1)
    heads = {p[-1]: t for t, p in model.paths.items()}
    for b, (x, d) in pos.items():
        label = f"{heads[b]}\n(head)" if b in heads else b
        face = "#fde0c5" if b in heads else ("#c6dbef" if len(model.users(b)) > 1 else "#e5f5e0")
        ax.text(x, -d, label, ha="center", va="center", fontsize=9, zorder=2,
                bbox={"boxstyle": "round,pad=0.4", "facecolor": face, "edgecolor": "0.3"})  # fmt: skip
    ax.set_xlim(-0.7, n_tasks - 0.3)
    ax.set_ylim(-(n_depth - 1) - 0.6, 0.6)
    ax.axis("off")
    ax.set_title("searched tree (blue: shared, green: one task)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
