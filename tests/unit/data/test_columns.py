"""Column files read by description: CoNLL-2000, two-column, CoNLL-U and BIOES files on
hand-written text, span columns in IOB2, and one-line errors naming file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from mtlrun.data.columns import (
    Column,
    ColumnFormat,
    Sentence,
    describe_columns,
    iob1_to_iob2,
    parse_columns,
    read_columns,
    split_sentence,
    to_iob2,
)
from mtlrun.errors import ConfigError, DataError

PLAIN = ColumnFormat(
    word_column=0, separator="whitespace", comment=None, docstart="-DOCSTART-", id_column=None
)
CONLLU = ColumnFormat(word_column=1, separator="tab", comment="#", docstart=None, id_column=0)

# CoNLL-2000 (chunking): word POS chunk, chunk tags in IOB2.
CONLL2000 = """Confidence NN B-NP
in IN B-PP
the DT B-NP
pound NN I-NP
is VBZ B-VP
widely RB I-VP
expected VBN I-VP
. . O

Chancellor NNP O
of IN B-PP
the DT B-NP
Exchequer NNP I-NP
"""


def _write(tmp_path: Path, text: str, name: str = "train.txt") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_conll2000_three_columns(tmp_path: Path) -> None:
    columns = [Column("pos", 1, "token", "accuracy"), Column("chunk", 2, "iob2", "f1")]
    first, second = read_columns(_write(tmp_path, CONLL2000), columns, PLAIN)
    assert first.words == ("Confidence", "in", "the", "pound", "is", "widely", "expected", ".")
    assert first.tags["pos"] == ("NN", "IN", "DT", "NN", "VBZ", "RB", "VBN", ".")
    assert first.tags["chunk"] == ("B-NP", "B-PP", "B-NP", "I-NP", "B-VP", "I-VP", "I-VP", "O")
    assert (first.line, second.line) == (1, 10)
    assert second.tags["chunk"] == ("O", "B-PP", "B-NP", "I-NP")


def test_two_column_file_and_negative_index(tmp_path: Path) -> None:
    text = "Jean B-PER\nDupont I-PER\nvit O\nà O\nParis B-LOC\n\nMerci O\n"
    (a, b) = read_columns(_write(tmp_path, text), [Column("ner", -1, "bio", "f1")], PLAIN)
    assert a.words == ("Jean", "Dupont", "vit", "à", "Paris")
    assert a.tags == {"ner": ("B-PER", "I-PER", "O", "O", "B-LOC")}
    assert b.tags == {"ner": ("O",)}


def test_bioes_column_is_read_into_iob2(tmp_path: Path) -> None:
    text = "New B-LOC\nYork E-LOC\nand O\nRome S-LOC\nsaw O\nAl B-PER\nB. I-PER\nX E-PER\n"
    (sentence,) = read_columns(_write(tmp_path, text), [Column("ner", 1, "bioes", "f1")], PLAIN)
    assert sentence.tags["ner"] == (
        "B-LOC", "I-LOC", "O", "B-LOC", "O", "B-PER", "I-PER", "I-PER",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("tags", "scheme", "iob2"),
    [
        (["I-PER", "I-PER", "B-PER", "O", "I-LOC"], "iob1", ["B-PER", "I-PER", "B-PER", "O", "B-LOC"]),
        # A stray I- in IOB2 opens a span, as conlleval reads it.
        (["O", "I-ORG", "I-ORG", "B-ORG"], "iob2", ["O", "B-ORG", "I-ORG", "B-ORG"]),
        (["S-X", "B-Y", "E-Y", "O", "S-X"], "bioes", ["B-X", "B-Y", "I-Y", "O", "B-X"]),
        (["B-X", "I-X", "B-X"], "bio", ["B-X", "I-X", "B-X"]),
    ],
)  # fmt: skip
def test_to_iob2(tags: list[str], scheme: str, iob2: list[str]) -> None:
    assert to_iob2(tags, scheme) == tuple(iob2)
    assert iob1_to_iob2(iob2) == tuple(iob2)  # IOB2 is a fixed point


# A UD English-EWT-like CoNLL-U file: comments, a multiword token (3-4) and an empty node (5.1).
CONLLU_TEXT = """# newdoc id = d1
# sent_id = 1
# text = I don't know.
1\tI\tI\tPRON\tPRP\tCase=Nom\t3\tnsubj\t_\t_
2-3\tdon't\t_\t_\t_\t_\t_\t_\t_\t_
2\tdo\tdo\tAUX\tVBP\t_\t3\taux\t_\t_
3\tn't\tnot\tPART\tRB\t_\t4\tadvmod\t_\t_
4\tknow\tknow\tVERB\tVB\t_\t0\troot\t_\t_
4.1\tknew\tknow\tVERB\tVBD\t_\t_\t_\t4:conj\t_
5\t.\t.\tPUNCT\t.\t_\t4\tpunct\t_\tSpaceAfter=No

# sent_id = 2
# text = in New York
1\tin\tin\tADP\tIN\t_\t2\tcase\t_\t_
2\tNew York\tNew York\tPROPN\tNNP\t_\t0\troot\t_\t_
"""


def test_conllu_skips_comments_multiword_tokens_and_empty_nodes(tmp_path: Path) -> None:
    columns = [Column("upos", 3, "token", "accuracy"), Column("xpos", 4, "token", "accuracy")]
    first, second = read_columns(_write(tmp_path, CONLLU_TEXT), columns, CONLLU)
    assert first.words == ("I", "do", "n't", "know", ".")
    assert first.tags["upos"] == ("PRON", "AUX", "PART", "VERB", "PUNCT")
    assert first.tags["xpos"] == ("PRP", "VBP", "RB", "VB", ".")
    assert first.line == 4  # the first token line, after the comments
    assert second.words == ("in", "New York")  # a tab-separated field may hold a space
    assert second.tags["upos"] == ("ADP", "PROPN")


def test_conllu_read_at_any_whitespace_names_the_separator(tmp_path: Path) -> None:
    path = _write(tmp_path, CONLLU_TEXT)
    fmt = ColumnFormat(1, "whitespace", "#", None, 0)
    with pytest.raises(DataError) as info:
        read_columns(path, [Column("upos", 3, "token", "accuracy")], fmt)
    line = "2\tNew York\tNew York\tPROPN\tNNP\t_\t0\troot\t_\t_"
    assert str(info.value) == (
        f"{path}:15: 12 columns, but line 14 of this sentence has 10 (fields are split at any "
        f"space; data.separator=tab splits at tabs only): {line!r}"
    )


def test_too_few_columns_names_the_column_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path, CONLL2000.replace("is VBZ B-VP", "is VBZ"))
    with pytest.raises(DataError) as info:
        read_columns(path, [Column("chunk", 2, "iob2", "f1")], PLAIN)
    assert (
        str(info.value) == f"{path}:5: 2 column(s), but column 2 (chunk) needs at least 3: 'is VBZ'"
    )
    with pytest.raises(DataError) as info:  # -3: the third column from the end
        read_columns(path, [Column("pos", -3, "token", "accuracy")], PLAIN)
    assert (
        str(info.value) == f"{path}:5: 2 column(s), but column -3 (pos) needs at least 3: 'is VBZ'"
    )
    with pytest.raises(DataError) as info:
        read_columns(path, [], ColumnFormat(3, "whitespace", None, None, None))
    assert str(info.value).startswith(f"{path}:1: 3 column(s), but column 3 (the word) needs at")


def test_a_line_with_another_column_count_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, CONLL2000.replace("pound NN I-NP", "pound NN I-NP extra"))
    with pytest.raises(DataError) as info:
        read_columns(path, [Column("pos", 1, "token", "accuracy")], PLAIN)
    assert str(info.value) == (
        f"{path}:4: 4 columns, but line 1 of this sentence has 3: 'pound NN I-NP extra'"
    )


def test_sentences_may_differ_in_column_count(tmp_path: Path) -> None:
    """OntoNotes' *_conll files carry one argument column per predicate of the sentence."""
    text = "a DT x\nb NN y\n\nc VB x z\nd NN y w\n"
    a, b = read_columns(_write(tmp_path, text), [Column("pos", 1, "token", "accuracy")], PLAIN)
    assert (a.tags["pos"], b.tags["pos"]) == (("DT", "NN"), ("VB", "NN"))


@pytest.mark.parametrize(
    ("scheme", "tag", "expects"),
    [
        ("iob2", "S-NP", "'O', 'B-X' or 'I-X'"),
        ("iob1", "NP", "'O', 'B-X' or 'I-X'"),
        ("bioes", "X-NP", "'O', 'B-X', 'I-X', 'E-X' or 'S-X'"),
        ("bio", "B-", "'O', 'B-X' or 'I-X'"),
    ],
)
def test_a_tag_not_of_the_scheme_names_file_line_and_scheme(
    tmp_path: Path, scheme: str, tag: str, expects: str
) -> None:
    path = _write(tmp_path, CONLL2000.replace("in IN B-PP", f"in IN {tag}"))
    with pytest.raises(DataError) as info:
        read_columns(path, [Column("chunk", 2, scheme, "f1")], PLAIN)
    assert str(info.value) == (
        f"{path}:2: bad chunk tag {tag!r} in column 2 (scheme {scheme} expects {expects}): "
        f"'in IN {tag}'"
    )


def test_token_columns_take_any_label(tmp_path: Path) -> None:
    path = _write(tmp_path, CONLL2000.replace("in IN B-PP", "in IN S-PP"))
    (first, _) = read_columns(path, [Column("chunk", 2, "token", "accuracy")], PLAIN)
    assert first.tags["chunk"][1] == "S-PP"  # kept as written
    assert first.tags["chunk"][:3] == ("B-NP", "S-PP", "B-NP")


def test_empty_file_and_unreadable_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "# only a comment\n\n")
    with pytest.raises(DataError, match=r"no sentences found \(empty file\)$"):
        read_columns(path, [Column("upos", 3, "token", "accuracy")], CONLLU)
    with pytest.raises(DataError, match=r"nowhere\.txt: cannot read \("):
        read_columns(tmp_path / "nowhere.txt", [Column("pos", 1, "token", "accuracy")], PLAIN)


def test_describe_columns_derives_the_metric_from_the_scheme() -> None:
    columns = parse_columns(
        {
            "pos": {"column": 1},
            "chunk": {"column": 2, "scheme": "iob2"},
            "ner": {"column": 3, "scheme": "bioes", "metric": None},
            "tags": {"column": 3, "scheme": "iob1", "metric": "accuracy"},
        }
    )
    assert list(columns.values()) == [
        Column("pos", 1, "token", "accuracy"),
        Column("chunk", 2, "iob2", "f1"),
        Column("ner", 3, "bioes", "f1"),
        Column("tags", 3, "iob1", "accuracy"),  # span tags scored tag by tag
    ]
    _, problems = describe_columns({"ner": {"column": 3, "metric": "F1"}})
    assert problems == [
        "`data.columns.ner.metric` should be one of ['accuracy', 'f1'] or null. "
        "Found `data.columns.ner.metric = F1`."
    ]
    with pytest.raises(ConfigError, match=r"^`data.columns.pos` should be a mapping"):
        parse_columns({"pos": 1})  # type: ignore[dict-item]


def test_split_sentence_reopens_spans_of_span_tasks_only() -> None:
    sentence = Sentence(
        ("a", "b", "c", "d", "e"),
        {"span": ("B-X", "I-X", "I-X", "I-X", "O"), "tok": ("I-X", "I-X", "I-X", "I-X", "O")},
        line=3,
    )
    first, second = split_sentence(sentence, 3, spans=("span",))
    assert (first.tags["span"], second.tags["span"]) == (("B-X", "I-X"), ("B-X", "I-X", "O"))
    assert (first.tags["tok"], second.tags["tok"]) == (("I-X", "I-X"), ("I-X", "I-X", "O"))
    assert second.line == 3
