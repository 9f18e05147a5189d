"""Span tag schemes: BIO <-> BIOES on hand-written sequences, and entity F1 that does not depend
on the scheme a task is trained in."""

from __future__ import annotations

import pytest

from mtlrun.data.base import Task
from mtlrun.data.tags import bio_to_bioes, bioes_to_bio, to_bio, to_scheme
from mtlrun.training.metrics import score

CASES = [
    # (IOB2, BIOES)
    ([], []),
    (["O", "O"], ["O", "O"]),
    (["B-PER"], ["S-PER"]),  # one-token span at the sentence end
    (["B-PER", "I-PER"], ["B-PER", "E-PER"]),
    (["B-PER", "I-PER", "I-PER", "O"], ["B-PER", "I-PER", "E-PER", "O"]),
    (["B-PER", "B-PER", "I-PER"], ["S-PER", "B-PER", "E-PER"]),  # adjacent spans, same type
    (["B-LOC", "I-LOC", "B-ORG"], ["B-LOC", "E-LOC", "S-ORG"]),  # adjacent spans, new type
    (["O", "B-MISC", "O", "B-NP", "I-NP"], ["O", "S-MISC", "O", "B-NP", "E-NP"]),
]


@pytest.mark.parametrize(("bio", "bioes"), CASES)
def test_bio_to_bioes_and_back(bio: list[str], bioes: list[str]) -> None:
    assert bio_to_bioes(bio) == tuple(bioes)
    assert bioes_to_bio(bioes) == tuple(bio)
    assert to_scheme(bio, "bioes") == tuple(bioes)
    assert to_bio(bioes, "bioes") == tuple(bio)


def test_bio_input_passes_bioes_to_bio_unchanged() -> None:
    tags = ["B-PER", "I-PER", "O", "B-LOC"]
    assert bioes_to_bio(tags) == tuple(tags)
    assert to_scheme(tags, "bio") == tuple(tags) == to_bio(tags, "bio")


def test_unknown_scheme_is_refused() -> None:
    with pytest.raises(
        ValueError, match=r"unknown tag scheme 'iob1'; schemes are \['bio', 'bioes'\]"
    ):
        to_scheme(["O"], "iob1")


GOLD = [
    ["B-PER", "I-PER", "O", "B-LOC"],
    ["O", "B-ORG", "I-ORG", "I-ORG", "O", "B-MISC"],
]
PRED_BIO = [
    ["B-PER", "I-PER", "O", "O"],  # PER right, LOC missed
    ["O", "B-ORG", "I-ORG", "O", "O", "B-MISC"],  # ORG too short, MISC right
]


def test_entity_f1_is_the_same_under_bio_and_bioes() -> None:
    bio_task = Task("ner", "f1", ("B-PER",), "bio")
    bioes_task = Task("ner", "f1", ("S-PER",), "bioes")
    from_bio = score(bio_task, GOLD, PRED_BIO)
    from_bioes = score(bioes_task, GOLD, [list(bio_to_bioes(p)) for p in PRED_BIO])
    assert from_bio == from_bioes
    # Hand count: gold 4 spans, predicted 3, correct 2 (PER, MISC).
    assert from_bio["precision"] == pytest.approx(2 / 3)
    assert from_bio["recall"] == pytest.approx(2 / 4)
    assert from_bio["f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))


def test_malformed_bioes_prediction_is_read_like_conlleval() -> None:
    task = Task("ner", "f1", (), "bioes")
    # "E-PER" after O opens a span, as a stray I-PER does under conlleval: PER(1, 1) is right.
    assert score(task, [["O", "B-PER", "O"]], [["O", "E-PER", "O"]])["f1"] == 1.0
    # "B-PER" followed by O closes a one-token span: PER(0, 0), not gold's PER(0, 1).
    assert score(task, [["B-PER", "I-PER"]], [["B-PER", "O"]])["f1"] == 0.0
