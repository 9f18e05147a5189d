"""Vu (2019) Table 1: the searched tree (Alg. 5) against random trees with the same number of
splits, and the task-affinity matrix of Table 1(a), from ``method=tree_search`` runs.

A row per tree kind (``searched``, and ``random r`` per ``method.random_seed`` r), pooled over
seeds; per task the test loss (mean over the test set, ``loss.test``) and accuracy, mean ± std,
with the thesis's numbers beside ours. The thesis's loss is the authors' ``eval_epoch``
(hav4ik/Hydra ``base_trainer.py``): the sum over test batches of 256 of each batch's mean NLL,
divided by the number of test images N, i.e. our mean loss × ceil(N/256)/N ("thesis scale").
The affinity table averages the searched runs' ``search.task_affinity`` (the compatibility C
of eq. 5.8 between the fine-tuned peels at the first split block, Alg. 3) over seeds, beside the
thesis's values, on the authors' scale (``measures/inter_stress.py``: weights I1 + I2, per-task
means added over the tasks' images); a run with ``method.importance=mean`` is doubled.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from mtlrun.report.collect import Record
from mtlrun.report.groups import describe_repeat, newest_per_seed
from mtlrun.report.record import get
from mtlrun.report.table import NA, Table, deviation_mark, deviation_notes, fmt_stat, mean_std

TASKS = ("kmnist", "fashion", "mnist")
# Vu (2019) Table 1(b-d): test loss and accuracy of the searched tree and two random trees.
THESIS_TABLE1 = {
    "searched": {"kmnist": (0.00130, 0.9119), "fashion": (0.00124, 0.8911), "mnist": (0.00014, 0.9879)},
    "random 1": {"kmnist": (0.00132, 0.9113), "fashion": (0.00133, 0.8795), "mnist": (0.00015, 0.9877)},
    "random 2": {"kmnist": (0.00149, 0.8983), "fashion": (0.00148, 0.8666), "mnist": (0.00012, 0.9910)},
}  # fmt: skip
AUTHORS_EVAL_BATCH = 256  # batch_size of the authors' configs/trinist/*.yaml
# Vu (2019) Table 1(a): task affinity after 10 epochs of peel fine-tuning.
THESIS_AFFINITY = {
    frozenset(("kmnist", "mnist")): 0.0050,
    frozenset(("fashion", "kmnist")): 0.0236,
    frozenset(("fashion", "mnist")): 0.0243,
}


def tree_runs(records: Sequence[Record]) -> list[Record]:
    """The scored ``method=tree_search`` runs."""
    return [r for r in records if r.method == "tree_search" and get(r.metrics, "test")]


def kind(record: Record) -> str:
    """``searched`` or ``random <method.random_seed>``."""
    args = record.method_args
    return f"random {args.get('random_seed', 0)}" if args.get("random_splits") else "searched"


def table1(records: Sequence[Record]) -> Table:
    """Test loss and accuracy per task of each tree kind, ours (mean ± std over seeds) and the
    thesis's, plus the splits each kind made."""
    runs = tree_runs(records)
    kinds = sorted({kind(r) for r in runs}, key=lambda k: (k != "searched", k))
    tasks = [t for t in TASKS if any(t in r.tasks for r in runs)] or list(TASKS)
    headers = ["Tree", "n"]
    for t in tasks:
        headers += [f"{t} loss", f"{t} loss, thesis scale (thesis)", f"{t} acc",
                    f"{t} acc (thesis)"]  # fmt: skip
    headers += ["Splits", "Params used"]
    rows = []
    repeats: list[str] = []
    for k in kinds:
        group, repeated = newest_per_seed([r for r in runs if kind(r) == k])  # a seed once
        repeats += [describe_repeat(r, f"the {k} tree") for r in repeated]
        row = [k + deviation_mark(group), str(len(group))]
        for t in tasks:
            losses = [get(r.metrics, "loss", "test", t) for r in group]
            accs = [get(r.metrics, "test", t, "accuracy") for r in group]
            paper = THESIS_TABLE1.get(k, {}).get(t)
            scaled = [thesis_scale_loss(r, t) for r in group]
            row += [
                fmt_stat(losses, scale=1.0, digits=5),
                fmt_stat(scaled, scale=1.0, digits=5) + (f" ({paper[0]:.5f})" if paper else ""),
                fmt_stat(accs, scale=1.0, digits=4),
                f"{paper[1]:.4f}" if paper else NA,
            ]
        row += [
            _splits(group[0]),
            fmt_stat([get(r.metrics, "params", "used") for r in group], 1, 0),
        ]
        rows.append(row)
    notes = [
        "Loss: mean test cross-entropy per example; thesis scale: × ceil(N/256)/N, the authors' "
        "eval_epoch (batch means summed over test batches of 256, over N images); accuracy as a "
        "fraction. Thesis: Vu (2019) Table 1(b-d)."
    ]
    return Table("table1", "Vu (2019) Table 1: searched vs random trees", headers, rows,
                 notes + deviation_notes(runs) + repeats)  # fmt: skip


def thesis_scale_loss(record: Record, task: str) -> float | None:
    """Test loss as the authors' ``eval_epoch`` reports it: mean loss × ceil(N/256)/N."""
    loss = get(record.metrics, "loss", "test", task)
    n = get(record.metrics, "data", "sizes", "test", task)
    if not isinstance(loss, int | float) or not isinstance(n, int) or n <= 0:
        return None
    return loss * math.ceil(n / AUTHORS_EVAL_BATCH) / n


def _splits(record: Record) -> str:
    steps = get(record.metrics, "search", "tree", "steps", default=[]) or []
    chosen = []
    for step in steps:
        split = step.get("split") if isinstance(step, dict) else None
        if isinstance(split, dict) and split.get("block"):
            paths = step.get("paths") or {}
            groups = [
                ",".join(t for t, path in paths.items() if copy in path)
                for copy in split.get("copies") or []
            ]
            chosen.append(f"{split['block']}: " + " | ".join(groups))
    return "; ".join(chosen) or NA


def affinity_table(records: Sequence[Record]) -> Table:
    """Task affinity C between the fine-tuned peels (Alg. 3), ours (mean ± std over searched
    runs) beside the thesis's Table 1(a)."""
    runs, _ = newest_per_seed([r for r in tree_runs(records) if kind(r) == "searched"])
    values: dict[frozenset[str], list[float | None]] = {}
    for r in runs:
        aff = get(r.metrics, "search", "task_affinity", default={}) or {}
        names, matrix = aff.get("tasks", []), aff.get("matrix", [])
        scale = 2.0 if r.method_args.get("importance") == "mean" else 1.0
        for i, a in enumerate(names):
            for j, b in enumerate(names):
                if i < j:
                    values.setdefault(frozenset((a, b)), []).append(scale * matrix[i][j])
    pairs = sorted(set(values) | set(THESIS_AFFINITY), key=lambda p: sorted(p))
    rows = []
    for pair in pairs:
        ours = values.get(pair, [])
        stat = mean_std(ours)
        paper = THESIS_AFFINITY.get(pair)
        rows.append(
            [
                "–".join(sorted(pair)),
                str(len(ours)),
                NA if stat is None else fmt_stat(ours, scale=1.0, digits=4),
                f"{paper:.4f}" if paper is not None else NA,
                f"{stat[0] / paper:.2f}" if stat is not None and paper else NA,
            ]
        )
    return Table(
        "table1_affinity",
        "Vu (2019) Table 1(a): task affinity (lower: closer tasks)",
        ["Tasks", "n", "Ours", "Thesis", "Ours / thesis"],
        rows,
        [
            "Ours: compatibility C (eq. 5.8) at the first split block after the peels' fine-tuning, "
            "on the authors' scale (inter_stress.py: weights I1 + I2; feature_similarity.py: the "
            "per-task means over every task's images added up)."
        ],  # fmt: skip
    )
