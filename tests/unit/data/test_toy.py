"""The generated toy tagging set: determinism, sizes, valid IOB2, ambiguity, task relations."""

from __future__ import annotations

from collections import defaultdict

import pytest

from mtlrun.data.conll import CONLL_TASKS, Sentence
from mtlrun.data.toy import generate_toy


@pytest.fixture(scope="module")
def toy() -> dict[str, list[Sentence]]:
    return generate_toy()


def _valid_iob2(tags: tuple[str, ...]) -> bool:
    previous = "O"
    for tag in tags:
        if tag != "O" and tag[:2] not in ("B-", "I-"):
            return False
        if tag.startswith("I-") and previous[2:] != tag[2:]:
            return False
        previous = tag
    return True


def test_deterministic_and_seeded() -> None:
    assert generate_toy(50, 10, 10, seed=3) == generate_toy(50, 10, 10, seed=3)
    assert generate_toy(50, 10, 10, seed=3) != generate_toy(50, 10, 10, seed=4)


def test_sizes_and_lengths(toy: dict[str, list[Sentence]]) -> None:
    assert {k: len(v) for k, v in toy.items()} == {"train": 2000, "valid": 300, "test": 300}
    assert all(6 <= len(s) <= 20 for split in toy.values() for s in split)
    assert toy["valid"] != toy["test"]
    assert toy["valid"] != toy["train"][:300]


def test_tags_cover_tasks_and_are_iob2(toy: dict[str, list[Sentence]]) -> None:
    for sentence in toy["train"]:
        assert set(sentence.tags) == set(CONLL_TASKS)
        assert all(len(sentence.tags[t]) == len(sentence) for t in CONLL_TASKS)
        assert _valid_iob2(sentence.tags["chunk"]) and _valid_iob2(sentence.tags["ner"])
    ner = {t[2:] for s in toy["train"] for t in s.tags["ner"] if t != "O"}
    assert ner == {"PER", "LOC", "ORG", "MISC"}


def test_vocabulary_is_a_few_hundred_words(toy: dict[str, list[Sentence]]) -> None:
    vocab = {w.lower() for s in toy["train"] for w in s.words if not w.isdigit()}
    assert 200 <= len(vocab) <= 1000


def test_context_ambiguity(toy: dict[str, list[Sentence]]) -> None:
    pos_of: dict[str, set[str]] = defaultdict(set)
    ner_of: dict[str, set[str]] = defaultdict(set)
    for s in toy["train"]:
        for word, pos, ner in zip(s.words, s.tags["pos"], s.tags["ner"], strict=True):
            pos_of[word].add(pos)
            ner_of[word].add(ner[2:] if ner != "O" else "O")
    assert any({"NN", "VB"} <= tags or {"NNS", "VBZ"} <= tags for tags in pos_of.values())
    assert any({"PER", "ORG"} <= types for types in ner_of.values())
    capital_non_entities = {
        w
        for s in toy["train"]
        for w, n in zip(s.words, s.tags["ner"], strict=True)
        if w[0].isupper() and n == "O"
    }
    assert len(capital_non_entities) >= 5


def test_entities_inside_np_chunks(toy: dict[str, list[Sentence]]) -> None:
    for s in toy["train"]:
        for chunk, ner in zip(s.tags["chunk"], s.tags["ner"], strict=True):
            if ner != "O":
                assert chunk in ("B-NP", "I-NP")
