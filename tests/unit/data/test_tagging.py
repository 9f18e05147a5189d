"""Tagging data built from sentences: the training-sentence cap (data.max_sentence_len), the word
table (lower-cased forms, valid/test forms after the training ones), the tag schemes, each task's
metric taken from the data's description; and tagging_data (data=tagging): its checks, all at
once, and its files."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from mtlrun.data.columns import Column
from mtlrun.data.conll import CONLL_COLUMNS, Sentence
from mtlrun.data.tagging import (
    TaggingData,
    conll_data,
    described_columns,
    tagging_data,
    toy_data,
)
from mtlrun.errors import ConfigError, DataError
from tests.helpers.fakedata import write_conll_dir

CONLL_METRICS = {"pos": "accuracy", "chunk": "f1", "ner": "f1"}


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


def _splits() -> dict[str, list[Sentence]]:
    """Hand-written sentences: "Paris"/"paris" share a form; "1996" and "Rome" only in valid/test."""

    def sent(words: str, pos: str, chunk: str, ner: str) -> Sentence:
        return Sentence(
            tuple(words.split()),
            {"pos": tuple(pos.split()), "chunk": tuple(chunk.split()), "ner": tuple(ner.split())},
        )

    return {
        "train": [
            sent(
                "John Smith saw Paris",
                "NNP NNP VBD NNP",
                "B-NP I-NP B-VP B-NP",
                "B-PER I-PER O B-LOC",
            ),
            sent("paris 42", "NNP CD", "B-NP I-NP", "B-LOC O"),
        ],
        "valid": [sent("Rome 1996", "NNP CD", "B-NP I-NP", "B-LOC O")],
        "test": [sent("John 7", "NNP CD", "B-NP I-NP", "B-PER O")],
    }


def test_word_table_lowercases_and_appends_valid_test_forms() -> None:
    data = TaggingData("t", _splits(), ["pos", "ner"])
    # Training forms first (sorted), then forms seen only in valid/test (sorted).
    assert data.words.items == [
        "<pad>",
        "<unk>",
        "42",
        "john",
        "paris",
        "saw",
        "smith",
        "1996",
        "7",
        "rome",
    ]
    assert data.input_spec.n_train_words == 7
    assert data.input_spec.words == tuple(data.words.items)
    words, _, _ = data._encoded["valid"][0]
    assert words.tolist() == [9, 7]  # own ids; the backbone decides what they read


def test_zero_digits_maps_digits_to_zero() -> None:
    data = TaggingData("t", _splits(), ["pos"], zero_digits=True)
    assert data.words.items == [
        "<pad>",
        "<unk>",
        "00",
        "john",
        "paris",
        "saw",
        "smith",
        "0",
        "0000",
        "rome",
    ]


def test_bioes_training_labels_with_bio_gold_tags() -> None:
    data = TaggingData(
        "t", _splits(), ["chunk", "ner"], tag_schemes={"ner": "bioes"}, metrics=CONLL_METRICS
    )
    chunk, ner = data.tasks
    assert (chunk.scheme, ner.scheme) == ("bio", "bioes")
    assert ner.labels == ("B-PER", "E-PER", "O", "S-LOC")
    assert chunk.labels == ("B-NP", "B-VP", "I-NP")
    _, _, tags = data._encoded["train"][0]
    assert [ner.labels[i] for i in tags["ner"].tolist()] == ["B-PER", "E-PER", "O", "S-LOC"]
    assert data.gold_tags("train", "ner")[0] == ["B-PER", "I-PER", "O", "B-LOC"]


def test_conll_defaults_are_the_authors_schemes(tmp_path: Path) -> None:
    write_conll_dir(tmp_path)
    data = conll_data(str(tmp_path))
    assert {t.name: t.scheme for t in data.tasks} == {"pos": "bio", "chunk": "bio", "ner": "bioes"}


def test_bad_tag_schemes_are_config_errors_naming_the_key() -> None:
    with pytest.raises(ConfigError) as err:
        TaggingData(
            "t",
            _splits(),
            ["pos", "ner"],
            tag_schemes={"ner": "iobes", "pos": "bio"},
            metrics=CONLL_METRICS,
        )
    assert str(err.value).splitlines() == [
        "`data.tag_schemes.ner` should be one of ['bio', 'bioes']. "
        "Found `data.tag_schemes.ner = iobes`.",
        "`data.tag_schemes.pos`: 'pos' is not a span task; span tasks are ['chunk', 'ner'].",
    ]


def test_a_batch_larger_than_the_training_set_is_capped_at_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """trainer.batch_size=100000 on the toy set repeated each sentence in a batch (22 GB)."""
    note = "training batches of 5 toy sentences (the whole training set, each once) instead of "
    for batching in ("random", "buckets"):
        data = toy_data(n_train=5, n_valid=2, n_test=2, batching=batching, buckets=2)
        with caplog.at_level(logging.WARNING, logger="mtlrun.data"):
            (step,) = data.train_steps(1000, epoch=0, seed=0)
            three = list(data.train_steps(1000, epoch=1, seed=0, steps=3))
        ((inputs, _),) = step
        assert inputs.words.shape[0] == 5
        assert [groups[0][0].words.shape[0] for groups in three] == [5, 5, 5]
        assert data.deviations[-1] == note + "trainer.batch_size=1000"
        assert sum(d.startswith(note) for d in data.deviations) == 1  # recorded once
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and all(w.startswith(note) for w in warnings)
    small = toy_data(n_train=5, n_valid=2, n_test=2)
    assert [len(g[0][0].words) for g in small.train_steps(5, epoch=0, seed=0)] == [5]
    assert small.deviations == []


# ------------------------------------------------------------------ metrics from the description


def test_each_task_carries_the_metric_its_description_gives() -> None:
    """Nothing looks a metric up by task name: the same columns under other names score alike,
    and a task without a description is scored by accuracy."""
    renamed = {
        split: [Sentence(s.words, {"a": s.tags["pos"], "b": s.tags["ner"]}) for s in sents]
        for split, sents in _splits().items()
    }
    data = TaggingData("t", renamed, ["a", "b"], metrics={"a": "accuracy", "b": "f1"})
    assert [(t.name, t.metric) for t in data.tasks] == [("a", "accuracy"), ("b", "f1")]
    plain = TaggingData("t", _splits(), ["pos", "ner"])  # nothing described: token labels
    assert [t.metric for t in plain.tasks] == ["accuracy", "accuracy"]
    assert toy_data(n_train=5, n_valid=2, n_test=2).tasks[2].metric == "f1"


def test_split_pieces_reopen_spans_only_of_span_tasks() -> None:
    tags = ("I-X", "I-X", "I-X", "I-X")  # a token task's labels that look like IOB
    sent = Sentence(("a", "b", "c", "d"), {"tok": tags, "span": ("B-X", "I-X", "I-X", "I-X")})
    splits = {"train": [sent], "valid": [sent], "test": [sent]}
    data = TaggingData("t", splits, ["tok", "span"], max_sentence_len=2, metrics={"span": "f1"})
    first, second = data.sentences["train"]
    assert (first.tags["tok"], second.tags["tok"]) == (("I-X", "I-X"), ("I-X", "I-X"))
    assert (first.tags["span"], second.tags["span"]) == (("B-X", "I-X"), ("B-X", "I-X"))


# ------------------------------------------------------------------ tagging_data (data=tagging)


def _write_split(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


CHUNK_2000 = "He PRP B-NP\nreckons VBZ B-VP\nthe DT B-NP\ndeficit NN I-NP\n. . O\n\n"


def test_tagging_data_reads_described_columns(tmp_path: Path) -> None:
    for split in ("train", "valid", "test"):
        _write_split(tmp_path / f"{split}.txt", CHUNK_2000)
    data = tagging_data(
        str(tmp_path),
        ["chunk", "pos"],
        {"pos": {"column": 1}, "chunk": {"column": -1, "scheme": "iob2"}},
        name="conll2000",
    )
    assert [(t.name, t.metric, t.scheme) for t in data.tasks] == [
        ("chunk", "f1", "bio"),
        ("pos", "accuracy", "bio"),
    ]
    assert data.tasks[0].labels == ("B-NP", "B-VP", "I-NP", "O")
    assert data.gold_tags("test", "chunk") == [["B-NP", "B-VP", "B-NP", "I-NP", "O"]]
    assert data.sentences["train"][0].words == ("He", "reckons", "the", "deficit", ".")
    assert data.name == "conll2000"


def test_tagging_data_without_columns_reads_conll2003_like_conll_data(tmp_path: Path) -> None:
    write_conll_dir(tmp_path, {"train": 9, "valid": 4, "test": 4})
    plain = tagging_data(str(tmp_path), tag_schemes={"chunk": "bio", "ner": "bioes"})
    preset = conll_data(str(tmp_path))
    assert plain.tasks == preset.tasks
    assert plain.sentences == preset.sentences
    assert plain.words.items == preset.words.items


def test_tagging_data_names_every_bad_key_at_once(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        tagging_data(
            str(tmp_path / "nowhere"),  # never read: the keys are checked first
            ["pos", "upos"],
            {
                "pos": {"column": 1, "scheme": "iobes"},
                "ner": {"column": "3", "scheme": "token", "metric": "f1"},
                "chunk": {"column": 2, "shceme": "iob1"},
            },
            separator="tabs",
            tag_schemes={"pos": "bio"},
            max_sentence_len=0,
        )
    assert str(err.value).splitlines() == [
        "`data.columns.pos.scheme` should be one of ['token', 'iob1', 'iob2', 'bio', 'bioes']. "
        "Found `data.columns.pos.scheme = iobes`.",
        "`data.columns.ner.column` should be an integer. Found `data.columns.ner.column = 3`.",
        "`data.columns.ner.metric = f1` scores spans, which `data.columns.ner.scheme = token` "
        "has none of; set `data.columns.ner.scheme` to one of ['iob1', 'iob2', 'bio', 'bioes'] "
        "or the metric to accuracy.",
        "`data.columns.chunk.shceme` is not a key; a column has ['column', 'scheme', 'metric'].",
        "`data.separator` should be one of ['whitespace', 'tab']. Found `data.separator = tabs`.",
        "`data.tasks` should be a non-empty subset of ['pos', 'ner', 'chunk'] without repeats. "
        "Found `data.tasks = ['pos', 'upos']`.",
        "`data.tag_schemes.pos`: 'pos' is not a span task; span tasks are [].",
        "`data.max_sentence_len` should be an integer >= 1 or null. "
        "Found `data.max_sentence_len = 0`.",
    ]


@pytest.mark.parametrize("columns", [[], {}, "pos"])
def test_tagging_data_columns_must_be_a_mapping(tmp_path: Path, columns: object) -> None:
    with pytest.raises(ConfigError, match=r"^`data.columns` should map task names to columns"):
        tagging_data(str(tmp_path), ["pos"], columns)  # type: ignore[arg-type]


def test_tagging_data_names_every_missing_file_and_its_key(tmp_path: Path) -> None:
    _write_split(tmp_path / "train.txt", CHUNK_2000)
    with pytest.raises(DataError) as err:
        tagging_data(str(tmp_path), ["pos"], {"pos": {"column": 1}}, valid="dev.txt")
    assert str(err.value) == (
        f"tagging files missing (data.valid: {tmp_path / 'dev.txt'}; data.test: "
        f"{tmp_path / 'test.txt'}). A relative name is read under data.root ({tmp_path}); set "
        "data.root=PATH or give each split's path (data.train, data.valid, data.test)."
    )


def test_tagging_data_takes_absolute_paths_anywhere(tmp_path: Path) -> None:
    for split in ("train", "valid", "test"):
        _write_split(tmp_path / "elsewhere" / f"{split}.conll", CHUNK_2000)
    data = tagging_data(
        str(tmp_path / "root"),
        ["pos"],
        {"pos": {"column": 1}},
        **{s: str(tmp_path / "elsewhere" / f"{s}.conll") for s in ("train", "valid", "test")},
    )
    assert data.sizes()["test"] == {"sentences": 1, "tokens": 5}


def test_described_columns_default_to_conll2003s() -> None:
    assert described_columns(None) == dict(CONLL_COLUMNS)
    assert described_columns({"upos": {"column": 3}}) == {
        "upos": Column("upos", 3, "token", "accuracy")
    }
    with pytest.raises(ConfigError, match=r"^`data.columns.upos.column` should be an integer"):
        described_columns({"upos": {"column": None}})
