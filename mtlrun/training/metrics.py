"""Task metrics: token/image accuracy and entity-level micro F1 (seqeval, conlleval mode).

All scores are fractions in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence

from seqeval.metrics.sequence_labeling import precision_recall_fscore_support

from mtlrun.data.base import Task
from mtlrun.data.tags import to_bio


def accuracy(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> float:
    """Fraction of positions (tokens, or one per image) whose predicted label equals gold."""
    total = correct = 0
    for g, p in zip(gold, pred, strict=True):
        if len(g) != len(p):
            raise ValueError(f"gold has {len(g)} labels but prediction {len(p)}")
        total += len(g)
        correct += sum(a == b for a, b in zip(g, p, strict=True))
    return correct / total if total else 0.0


def span_scores(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict[str, float]:
    """Entity-level micro precision / recall / F1 over IOB2 spans, as conlleval counts them.

    seqeval's default mode treats a span as (type, start, end) and, like conlleval, lets an
    I- tag after O open a span, so scores match the official perl script.
    """
    g, p = [list(s) for s in gold], [list(s) for s in pred]
    # One pass over the spans for all three (seqeval's f1/precision/recall_score each redo it).
    precision, recall, f1, _ = precision_recall_fscore_support(
        g, p, average="micro", zero_division=0
    )
    return {"f1": float(f1), "precision": float(precision), "recall": float(recall)}


def score(
    task: Task, gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]
) -> dict[str, float]:
    """The task's metrics; the key ``task.metric`` is its primary score.

    Span tasks are scored in BIO: tags in another ``task.scheme`` (BIOES) are converted back
    first, gold and predictions alike, so F1 and tag accuracy do not depend on the scheme.
    """
    if task.metric == "f1":
        gold = [to_bio(s, task.scheme) for s in gold]
        pred = [to_bio(s, task.scheme) for s in pred]
        return {**span_scores(gold, pred), "accuracy": accuracy(gold, pred)}
    if task.metric == "accuracy":
        return {"accuracy": accuracy(gold, pred)}
    raise ValueError(f"unknown metric {task.metric!r} of task {task.name!r}")


def mean_primary(scores: dict[str, dict[str, float]], tasks: Sequence[Task]) -> float:
    """Mean over tasks of each task's primary metric: the model-selection score."""
    return sum(scores[t.name][t.metric] for t in tasks) / len(tasks)
