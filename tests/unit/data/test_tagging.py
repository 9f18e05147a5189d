"""Tagging data built from sentences: the training-sentence cap (data.max_sentence_len)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from mtlrun.data.tagging import conll_data, toy_data
from mtlrun.errors import ConfigError
from tests.helpers.fakedata import write_conll_dir


def _add_long_training_sentence(root: Path, n: int) -> None:
    """Append one sentence of ``n`` tokens with an entity every 7 tokens to train.txt."""
    rows = [
        f"w{i} NNP {'B-NP' if i % 7 == 0 else 'I-NP'} {'B-PER' if i % 7 == 0 else 'I-PER'}"
        for i in range(n)
    ]
    with (root / "train.txt").open("a", encoding="utf-8") as handle:
        handle.write("\n".join(rows) + "\n\n")


def test_max_sentence_len_splits_long_training_sentences(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_conll_dir(tmp_path, {"train": 12, "valid": 6, "test": 6})
    _add_long_training_sentence(tmp_path, 300)
    caplog.set_level(logging.WARNING)
    whole = conll_data(str(tmp_path))
    assert len(caplog.records) == 1  # warned once, the cap not set
    caplog.clear()
    capped = conll_data(str(tmp_path), max_sentence_len=40)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    train = capped.sentences["train"]
    assert max(len(s) for s in train) <= 40
    assert [w for s in train for w in s.words] == [
        w for s in whole.sentences["train"] for w in s.words
    ]
    for task in ("pos", "chunk", "ner"):  # every token keeps a tag, spans stay IOB2
        assert sum(len(s.tags[task]) for s in train) == sum(len(s) for s in train)
        assert all(not s.tags[task][0].startswith("I-") for s in train)
    assert len(train) == len(whole.sentences["train"]) - 1 + 8  # ceil(300 / 40) pieces
    assert capped.sentences["valid"] == whole.sentences["valid"]
    assert capped.sentences["test"] == whole.sentences["test"]
    assert capped.deviations == [
        "conll: 1 training sentence(s) longer than 40 tokens split into 8 pieces of at most "
        "40 tokens (data.max_sentence_len)"
    ]
    assert whole.deviations == []


def test_long_training_sentence_warns_without_a_cap(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_conll_dir(tmp_path, {"train": 3, "valid": 2, "test": 2})
    _add_long_training_sentence(tmp_path, 260)
    caplog.set_level(logging.WARNING)
    conll_data(str(tmp_path))
    (message,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert message.startswith(f"{tmp_path / 'train.txt'}:")
    assert "a sentence of 260 tokens; 1 sentence(s) of this file" in message
    assert "data.max_sentence_len=N" in message


def test_toy_max_sentence_len() -> None:
    whole = toy_data(n_train=40, n_valid=10, n_test=10)
    capped = toy_data(n_train=40, n_valid=10, n_test=10, max_sentence_len=5)
    assert max(len(s) for s in capped.sentences["train"]) <= 5
    assert sum(len(s) for s in capped.sentences["train"]) == sum(
        len(s) for s in whole.sentences["train"]
    )
    assert capped.sentences["valid"] == whole.sentences["valid"]
    assert capped.deviations and "(data.max_sentence_len)" in capped.deviations[0]
    assert toy_data(n_train=40, n_valid=10, n_test=10, max_sentence_len=20).deviations == []


@pytest.mark.parametrize("value", [0, -3])
def test_max_sentence_len_must_be_positive(tmp_path: Path, value: int) -> None:
    message = (
        "`data.max_sentence_len` should be an integer >= 1 or null. "
        f"Found `data.max_sentence_len = {value}`."
    )
    with pytest.raises(ConfigError) as info:
        toy_data(n_train=5, n_valid=2, n_test=2, max_sentence_len=value)
    assert str(info.value) == message
    with pytest.raises(ConfigError) as info:
        conll_data(str(tmp_path / "nowhere"), max_sentence_len=value)  # before any reading
    assert str(info.value) == message
