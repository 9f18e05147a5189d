"""Token accuracy and conlleval-style entity F1 on hand-computed examples."""

from __future__ import annotations

import warnings

import pytest

from mtlrun.data.base import Task
from mtlrun.training.metrics import accuracy, mean_primary, score, span_scores

POS = Task("pos", "accuracy", ("NN", "VB", "DT"))
NER = Task("ner", "f1", ("O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"))


def test_accuracy_seven_of_nine() -> None:
    gold = [["DT", "NN", "VB", "DT"], ["NN", "VB", "DT", "NN", "NN"]]
    pred = [["DT", "NN", "NN", "DT"], ["NN", "VB", "DT", "VB", "NN"]]
    assert accuracy(gold, pred) == pytest.approx(7 / 9)


def test_accuracy_one_label_per_image() -> None:
    assert accuracy([["3"], ["1"], ["4"], ["1"]], [["3"], ["1"], ["1"], ["1"]]) == 0.75


def test_accuracy_edge_cases() -> None:
    assert accuracy([], []) == 0.0
    with pytest.raises(ValueError, match="gold has 2 labels but prediction 1"):
        accuracy([["a", "b"]], [["a"]])
    with pytest.raises(ValueError):  # a missing sentence is an error, not a shorter score
        accuracy([["a"], ["b"]], [["a"]])


def test_span_scores_hand_example() -> None:
    # gold spans: PER 0-1, LOC 3; predicted: PER 0-1 (right), LOC 4 (wrong place), ORG 6 (spurious)
    gold = [["B-PER", "I-PER", "O", "B-LOC", "O", "O", "O"]]
    pred = [["B-PER", "I-PER", "O", "O", "B-LOC", "O", "B-ORG"]]
    scores = span_scores(gold, pred)
    assert scores["precision"] == pytest.approx(1 / 3)
    assert scores["recall"] == pytest.approx(1 / 2)
    assert scores["f1"] == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))
    assert scores["f1"] == pytest.approx(0.4)


def test_spans_are_pooled_over_sentences() -> None:
    """Micro average: counts summed over sentences (2 of 3 gold found, 2 of 2 predicted right)."""
    gold = [["B-PER", "O"], ["B-LOC", "B-ORG"]]
    pred = [["B-PER", "O"], ["B-LOC", "O"]]
    scores = span_scores(gold, pred)
    assert scores == pytest.approx({"precision": 1.0, "recall": 2 / 3, "f1": 0.8})


def test_boundary_error_is_a_false_positive_and_a_false_negative() -> None:
    # gold PER 0-1 and LOC 3; pred PER 0-0 (wrong end) and LOC 3: TP 1, FP 1, FN 1
    gold = [["B-PER", "I-PER", "O", "B-LOC"]]
    pred = [["B-PER", "O", "O", "B-LOC"]]
    assert span_scores(gold, pred) == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5})


def test_type_error_is_a_false_positive_and_a_false_negative() -> None:
    gold = [["B-PER", "I-PER", "O", "B-LOC"]]
    pred = [["B-ORG", "I-ORG", "O", "B-LOC"]]
    assert span_scores(gold, pred) == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5})


@pytest.mark.parametrize(
    ("gold", "pred"),
    [
        (["O", "B-PER", "I-PER", "O"], ["O", "I-PER", "I-PER", "O"]),  # I- after O opens a span
        (["B-LOC", "O"], ["I-LOC", "O"]),  # I- at the sentence start opens a span
        (["B-PER", "B-LOC", "I-LOC"], ["B-PER", "I-LOC", "I-LOC"]),  # I- of a new type opens one
    ],
)
def test_conlleval_i_tag_opens_a_span(gold: list[str], pred: list[str]) -> None:
    assert span_scores([gold], [pred]) == pytest.approx(
        {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    )


def test_no_spans_scores_zero_without_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scores = span_scores([["O", "O"]], [["O", "O"]])
    assert scores == {"f1": 0.0, "precision": 0.0, "recall": 0.0}


def test_score_returns_the_primary_key() -> None:
    f1 = score(NER, [["B-PER", "O", "B-LOC"]], [["B-PER", "O", "O"]])
    assert set(f1) == {"f1", "precision", "recall", "accuracy"}
    assert f1[NER.metric] == pytest.approx(2 / 3)  # P 1, R 1/2
    assert f1["accuracy"] == pytest.approx(2 / 3)
    acc = score(POS, [["NN", "VB"]], [["NN", "NN"]])
    assert acc == {"accuracy": 0.5}
    assert acc[POS.metric] == 0.5


def test_score_unknown_metric() -> None:
    with pytest.raises(ValueError, match="unknown metric 'bleu' of task 'mt'"):
        score(Task("mt", "bleu", ("a",)), [["a"]], [["a"]])


def test_mean_primary_averages_each_tasks_own_metric() -> None:
    scores = {
        "pos": {"accuracy": 0.9},
        "ner": {"f1": 0.5, "accuracy": 0.1, "precision": 0.7},
    }
    assert mean_primary(scores, [POS, NER]) == pytest.approx(0.7)
    assert mean_primary(scores, [NER]) == pytest.approx(0.5)
