"""CoNLL-2003 reader (column files described by CONLL_COLUMNS): parsing, tag checks,
IOB1 -> IOB2, file discovery and error texts."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from mtlrun.data.columns import iob1_to_iob2, split_sentence
from mtlrun.data.conll import (
    CONLL_COLUMNS,
    CONLL_TASKS,
    Sentence,
    find_conll_files,
    load_conll,
    read_conll,
)
from mtlrun.errors import DataError
from tests.helpers.fakedata import write_conll_dir

GOOD = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O
. . O O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER
-DOCSTART- -X- -X- O

BRUSSELS NNP B-NP B-LOC
"""


def _write(tmp_path: Path, text: str, name: str = "train.txt") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_read_good_file(tmp_path: Path) -> None:
    sentences = read_conll(_write(tmp_path, GOOD))
    assert [len(s) for s in sentences] == [5, 2, 1]
    assert all("-DOCSTART-" not in s.words for s in sentences)
    first = sentences[0]
    assert first.words == ("EU", "rejects", "German", "call", ".")
    assert set(first.tags) == set(CONLL_TASKS)
    assert first.tags["pos"] == ("NNP", "VBZ", "JJ", "NN", ".")
    assert first.tags["chunk"] == ("B-NP", "B-VP", "B-NP", "I-NP", "O")
    assert first.tags["ner"] == ("B-ORG", "O", "B-MISC", "O", "O")
    # The -DOCSTART- line closes "Peter Blackburn" although no blank line precedes it.
    assert sentences[1].words == ("Peter", "Blackburn")


def test_sentence_equality() -> None:
    a = Sentence(words=("x",), tags={"pos": ("NN",), "chunk": ("B-NP",), "ner": ("O",)})
    b = Sentence(words=("x",), tags={"pos": ("NN",), "chunk": ("B-NP",), "ner": ("O",)})
    assert a == b


def test_malformed_line_names_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD.replace("rejects VBZ B-VP O", "rejects VBZ B-VP"))
    with pytest.raises(DataError) as info:
        read_conll(path)
    assert str(info.value) == (
        f"{path}:4: 3 column(s), but column 3 (ner) needs at least 4: 'rejects VBZ B-VP'"
    )
    # A fifth column in one line only: the sentence's lines disagree.
    path = _write(tmp_path, GOOD.replace("rejects VBZ B-VP O", "rejects VBZ B-VP O x"))
    with pytest.raises(DataError) as info:
        read_conll(path)
    assert str(info.value) == (
        f"{path}:4: 5 columns, but line 3 of this sentence has 4: 'rejects VBZ B-VP O x'"
    )


def test_bad_tag_names_file_line_and_tag(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD.replace("B-MISC", "MISC"))
    with pytest.raises(DataError) as info:
        read_conll(path)
    assert str(info.value) == (
        f"{path}:5: bad ner tag 'MISC' in column 3 (scheme iob1 expects 'O', 'B-X' or 'I-X'): "
        "'German JJ B-NP MISC'"
    )
    path = _write(tmp_path, GOOD.replace("I-NP O", "X-NP O"))
    with pytest.raises(DataError, match=r"train\.txt:6: bad chunk tag 'X-NP' in column 2 "):
        read_conll(path)
    path = _write(tmp_path, GOOD.replace("B-MISC", "S-MISC"))  # BIOES, not IOB1
    with pytest.raises(DataError, match=r"train\.txt:5: bad ner tag 'S-MISC' in column 3 "):
        read_conll(path)


def test_only_the_chosen_columns_are_read_and_checked(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD.replace("B-MISC", "MISC"))  # a bad NER tag ...
    sentences = read_conll(path, tasks=["pos"])  # ... does not matter to POS alone
    assert set(sentences[0].tags) == {"pos"}
    assert sentences[0].tags["pos"] == ("NNP", "VBZ", "JJ", "NN", ".")


def test_conll_columns_describe_the_shared_task() -> None:
    assert [(c.name, c.column, c.scheme, c.metric) for c in CONLL_COLUMNS.values()] == [
        ("pos", 1, "token", "accuracy"),
        ("chunk", 2, "iob1", "f1"),
        ("ner", 3, "iob1", "f1"),
    ]
    assert tuple(CONLL_COLUMNS) == CONLL_TASKS


def test_iob1_converted_to_iob2(tmp_path: Path) -> None:
    text = (
        "Peter NNP I-NP I-PER\nBlackburn NNP I-NP I-PER\nsaw VBD I-VP O\nEU NNP I-NP I-ORG\n"
        "Paris NNP I-NP B-ORG\nLondon NNP I-NP I-LOC\n"
    )
    (sentence,) = read_conll(_write(tmp_path, text))
    assert sentence.tags["ner"] == ("B-PER", "I-PER", "O", "B-ORG", "B-ORG", "B-LOC")
    assert sentence.tags["chunk"] == ("B-NP", "I-NP", "B-VP", "B-NP", "I-NP", "I-NP")


def test_iob2_input_unchanged() -> None:
    tags = ("B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC")
    assert iob1_to_iob2(tags) == tags


@pytest.mark.parametrize("text", ["", "\n\n", "-DOCSTART- -X- -X- O\n\n"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(DataError, match="no sentences found") as info:
        read_conll(path)
    assert str(path) in str(info.value)


def test_fixture_dir_round_trip(tmp_path: Path) -> None:
    sizes = {"train": 12, "valid": 6, "test": 7}
    data = load_conll(write_conll_dir(tmp_path, sizes))
    assert {k: len(v) for k, v in data.items()} == sizes
    for split in data.values():
        for sentence in split:
            assert all(len(sentence.tags[t]) == len(sentence) for t in CONLL_TASKS)


def test_eng_names_accepted(tmp_path: Path) -> None:
    write_conll_dir(tmp_path, names="eng")
    files = find_conll_files(tmp_path)
    assert {k: p.name for k, p in files.items()} == {
        "train": "eng.train",
        "valid": "eng.testa",
        "test": "eng.testb",
    }


def test_missing_files_message(tmp_path: Path) -> None:
    write_conll_dir(tmp_path)
    (tmp_path / "valid.txt").unlink()
    with pytest.raises(DataError) as info:
        find_conll_files(tmp_path)
    message = str(info.value)
    assert str(tmp_path.resolve()) in message
    assert "valid.txt or eng.testa" in message
    assert "train.txt" not in message  # only what is missing
    for way in ("MTLRUN_DATA", "conll2003/", "data.root=PATH", "data.source=hub"):
        assert way in message


def test_missing_folder_lists_all_names(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_conll(tmp_path / "nowhere")
    for name in ("train.txt", "valid.txt", "test.txt", "eng.train", "eng.testa", "eng.testb"):
        assert name in str(info.value)


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_non_utf8_byte_names_line_and_byte_offset(tmp_path: Path, newline: str) -> None:
    # Past the first 8 KiB, where a text-mode reader's own offsets restart.
    lines = [f"w{i} NN B-NP O" for i in range(1, 1201)]
    lines[899] = "Caf\xe9 NNP B-NP B-ORG"  # line 900, in latin-1
    data = (newline.join(lines) + newline).encode("latin-1")
    offset = data.index(b"\xe9")
    assert offset > 8192
    path = tmp_path / "train.txt"
    path.write_bytes(data)
    with pytest.raises(DataError) as info:
        read_conll(path)
    assert str(info.value) == (
        f"{path}:900: not UTF-8 text: byte 0xe9 at byte offset {offset} (invalid continuation "
        "byte); convert the file to UTF-8 (e.g. iconv -f latin1 -t utf-8)"
    )


BOM = "\ufeff".encode()


@pytest.mark.parametrize("docstart", [True, False])
def test_a_utf8_byte_order_mark_is_not_part_of_the_text(tmp_path: Path, docstart: bool) -> None:
    """Editors on Windows save UTF-8 with a BOM: without -DOCSTART- it was glued to the first
    word ('\\ufeffEU'); before -DOCSTART- the line read as a token with a bad chunk tag."""
    text = GOOD if docstart else GOOD.split("\n", 2)[2]
    path = tmp_path / "train.txt"
    path.write_bytes(BOM + text.encode("utf-8"))
    sentences = read_conll(path)
    assert sentences == read_conll(_write(tmp_path, text, "plain.txt"))
    assert sentences[0].words[0] == "EU"
    assert sentences[0].line == (3 if docstart else 1)


def test_non_utf8_byte_after_a_bom_counts_offsets_from_the_first_byte(tmp_path: Path) -> None:
    path = tmp_path / "train.txt"
    data = BOM + "EU NNP B-NP B-ORG\nCaf\xe9 NNP B-NP O\n".encode("latin-1")
    path.write_bytes(data)
    with pytest.raises(DataError) as info:
        read_conll(path)
    assert str(info.value).startswith(f"{path}:2: not UTF-8 text: byte 0xe9 at byte offset 24 ")
    assert data[24] == 0xE9


def _conll_file(path: Path, lengths: list[int]) -> list[int]:
    """Write sentences of the given lengths; return the line of each sentence's first token."""
    lines = ["-DOCSTART- -X- -X- O", ""]
    starts = []
    for n in lengths:
        starts.append(len(lines) + 1)
        lines += [f"w{i} NN I-NP O" for i in range(n)] + [""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return starts


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_long_sentences_warn_once_per_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    starts = _conll_file(tmp_path / "train.txt", [3, 260, 5, 300, 2])
    valid_starts = _conll_file(tmp_path / "valid.txt", [4, 251])
    _conll_file(tmp_path / "test.txt", [4, 250])  # 250 is not over the threshold
    caplog.set_level(logging.WARNING)
    data = load_conll(tmp_path)
    assert [len(s) for s in data["train"]] == [3, 260, 5, 300, 2]  # nothing cut without a cap
    train, valid = _warnings(caplog)
    assert train == (
        f"{tmp_path / 'train.txt'}:{starts[3]}: a sentence of 300 tokens; 2 sentence(s) of this "
        "file have more than 250 tokens. A batch is padded to its longest sentence and the "
        "BiLSTM steps through every position, so such sentences slow training many times over. "
        "Cap them with data.max_sentence_len=N (e.g. data.max_sentence_len=250): training "
        "sentences longer than N tokens are split into pieces, every token kept and labelled."
    )
    assert valid.startswith(
        f"{tmp_path / 'valid.txt'}:{valid_starts[1]}: a sentence of 251 tokens; 1 sentence(s)"
    )
    assert valid.endswith(
        "such sentences slow evaluation. The valid split is read whole (data.max_sentence_len "
        "splits training sentences only, so scores stay comparable)."
    )
    caplog.clear()
    load_conll(tmp_path, max_sentence_len=100)  # the training file is capped: no word on it
    assert [m.split(":")[0] for m in _warnings(caplog)] == [str(tmp_path / "valid.txt")]


def test_sentence_lines(tmp_path: Path) -> None:
    sentences = read_conll(_write(tmp_path, GOOD))
    assert [s.line for s in sentences] == [3, 9, 13]


def test_split_sentence_keeps_every_token_and_iob2() -> None:
    words = tuple(f"w{i}" for i in range(11))
    ner = ("B-PER", "I-PER", "I-PER", "I-PER", "O", "O", "B-ORG", "I-ORG", "O", "O", "O")
    chunk = ("B-NP",) + ("I-NP",) * 10
    pos = ("NNP",) * 11
    sentence = Sentence(words, {"pos": pos, "chunk": chunk, "ner": ner}, line=7)
    pieces = split_sentence(sentence, 4, spans=("chunk", "ner"))
    assert [len(p) for p in pieces] == [3, 4, 4]  # ceil(11 / 4) = 3 near-equal pieces
    assert sum((p.words for p in pieces), ()) == words
    assert sum((p.tags["pos"] for p in pieces), ()) == pos
    assert [p.tags["ner"] for p in pieces] == [
        ("B-PER", "I-PER", "I-PER"),
        ("B-PER", "O", "O", "B-ORG"),  # the entity cut at the boundary reopens with B-
        ("B-ORG", "O", "O", "O"),
    ]
    assert all(p.tags["chunk"][0] == "B-NP" for p in pieces)
    assert all(p.line == 7 for p in pieces)
    assert split_sentence(sentence, 11, spans=("chunk", "ner")) == [sentence]


@pytest.mark.realdata
def test_real_conll_sizes(real_data: Path) -> None:
    data = load_conll(real_data / "conll2003")
    assert {k: len(v) for k, v in data.items()} == {"train": 14041, "valid": 3250, "test": 3453}
    tokens = {k: sum(len(s) for s in v) for k, v in data.items()}
    assert tokens == {"train": 203621, "valid": 51362, "test": 46435}
