"""CoNLL-2003 reader: parsing, tag checks, IOB1 -> IOB2, file discovery and error texts."""

from __future__ import annotations

from pathlib import Path

import pytest

from mtlrun.data.conll import (
    CONLL_TASKS,
    Sentence,
    find_conll_files,
    iob1_to_iob2,
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
        f"{path}:4: expected 4 columns 'word POS chunk NER', found 3: 'rejects VBZ B-VP'"
    )


def test_bad_tag_names_file_line_and_tag(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD.replace("B-MISC", "MISC"))
    with pytest.raises(DataError, match=r"train\.txt:5: bad NER tag 'MISC'"):
        read_conll(path)
    path = _write(tmp_path, GOOD.replace("I-NP O", "X-NP O"))
    with pytest.raises(DataError, match=r"train\.txt:6: bad chunk tag 'X-NP'"):
        read_conll(path)


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


@pytest.mark.realdata
def test_real_conll_sizes(real_data: Path) -> None:
    data = load_conll(real_data / "conll2003")
    assert {k: len(v) for k, v in data.items()} == {"train": 14041, "valid": 3250, "test": 3453}
    tokens = {k: sum(len(s) for s in v) for k, v in data.items()}
    assert tokens == {"train": 203621, "valid": 51362, "test": 46435}
