"""Evaluation of a multi-task model on one split: losses, metrics and label predictions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mtlrun.data.base import IGNORE_INDEX, MultiTaskData, Task, TextInputs
from mtlrun.data.tags import to_bio
from mtlrun.model.paths import MultiTaskModel
from mtlrun.training.device import to_device
from mtlrun.training.metrics import score


def task_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy over the labelled positions. logits (..., C), targets (...)."""
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX
    )


@dataclass
class Evaluation:
    """Per-task metrics and mean loss of one split, and the predicted label names."""

    metrics: dict[str, dict[str, float]]
    loss: dict[str, float]
    pred: dict[str, list[list[str]]] = field(default_factory=dict)
    gold: dict[str, list[list[str]]] = field(default_factory=dict)


@torch.no_grad()
def evaluate(
    model: MultiTaskModel,
    data: MultiTaskData,
    split: str,
    tasks: Sequence[Task],
    batch_size: int,
    device: torch.device,
) -> Evaluation:
    """Run the model over a split in eval mode; gold tags come from the data (unseen tags too).

    Batches follow ``data.eval_order(split)`` (text: shortest sentences first, little padding);
    predictions come back in the split's file order."""
    model.eval()
    by_name = {t.name: t for t in tasks}
    pred: dict[str, list[list[str]]] = {t.name: [] for t in tasks}
    gold_ids: dict[str, list[list[str]]] = {t.name: [] for t in tasks}
    loss_sum = {t.name: 0.0 for t in tasks}
    loss_n = {t.name: 0 for t in tasks}
    order = data.eval_order(split)
    for inputs, all_targets in data.eval_groups(split, batch_size, order):
        targets = {t: y for t, y in all_targets.items() if t in by_name}
        if not targets:
            continue
        outputs = model(to_device(inputs, device), tasks=list(targets))
        for name, logits in outputs.items():
            y = to_device(targets[name], device)
            n = int((y != IGNORE_INDEX).sum())
            loss_sum[name] += float(
                F.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]),
                    y.reshape(-1),
                    ignore_index=IGNORE_INDEX,
                    reduction="sum",
                )
            )
            loss_n[name] += n
            labels = by_name[name].labels
            ids = logits.argmax(-1).cpu()
            pred[name].extend(_to_names(ids, inputs, labels))
            gold_ids[name].extend(_to_names(targets[name], inputs, labels))
    if order is not None:
        pred = {name: in_file_order(p, order) for name, p in pred.items()}
        gold_ids = {name: in_file_order(g, order) for name, g in gold_ids.items()}
    gold = {}
    for t in tasks:
        gold_tags = getattr(data, "gold_tags", None)
        gold[t.name] = gold_tags(split, t.name) if gold_tags else gold_ids[t.name]
        if t.metric == "f1":  # span tags in IOB2, as the files and conlleval write them
            pred[t.name] = [list(to_bio(s, t.scheme)) for s in pred[t.name]]
            gold[t.name] = [list(to_bio(s, t.scheme)) for s in gold[t.name]]
    metrics = {t.name: score(t, gold[t.name], pred[t.name]) for t in tasks}
    loss = {n: loss_sum[n] / max(loss_n[n], 1) for n in loss_sum}
    return Evaluation(metrics, loss, pred, gold)


def _to_names(ids: Tensor, inputs: Any, labels: Sequence[str]) -> list[list[str]]:
    """Label names per example: one per token (cut at the sentence length) or one per image."""
    if isinstance(inputs, TextInputs):
        return [
            [labels[i] if i >= 0 else "O" for i in row[:n].tolist()]
            for row, n in zip(ids, inputs.lengths.tolist(), strict=True)
        ]
    return [[labels[i]] for i in ids.tolist()]


def in_file_order(items: list[list[str]], order: Sequence[int]) -> list[list[str]]:
    """``items[k]`` belongs to example ``order[k]``: the list indexed by example instead."""
    out: list[list[str]] = [[] for _ in items]
    for position, example in enumerate(order):
        out[example] = items[position]
    return out
