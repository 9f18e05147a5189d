"""data.source=hub: the install hint, a local parquet copy, the hub's parquet branch."""

from __future__ import annotations

import logging
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from mtlrun.data.conll import CONLL_TASKS, Sentence
from mtlrun.data.conll_hub import HUB_LABELS, load_conll_hub
from mtlrun.data.tagging import conll_data
from mtlrun.errors import DataError
from tests.helpers.fakedata import write_conll_parquet, write_conll_parquet_dir

HINT = (
    "data.source=hub needs the optional `hub` extra (datasets, pyarrow): "
    'pip install "mtlrun[hub]". Without it, read the CoNLL-2003 text files with '
    "data.source=files data.root=PATH."
)


def _pyarrow() -> None:
    pytest.importorskip("pyarrow.parquet", reason="needs the hub extra (pip install mtlrun[hub])")


def test_without_the_hub_extra_the_message_is_the_install_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("datasets", "pyarrow", "pyarrow.parquet", "huggingface_hub"):
        monkeypatch.setitem(sys.modules, name, None)  # None here makes `import name` fail
    with pytest.raises(DataError) as info:
        conll_data(str(tmp_path), source="hub")
    assert str(info.value) == HINT


def test_hub_label_ids() -> None:
    # The first sentence of the hub's train split, as its dataset card shows it.
    ids = {
        "pos": [22, 42, 16, 21, 35, 37, 16, 21, 7],
        "chunk": [11, 21, 11, 12, 21, 22, 11, 12, 0],
        "ner": [3, 0, 7, 0, 0, 0, 7, 0, 0],
    }
    names = {task: [HUB_LABELS[task][i] for i in ids[task]] for task in CONLL_TASKS}
    assert names == {  # EU rejects German call to boycott British lamb .
        "pos": ["NNP", "VBZ", "JJ", "NN", "TO", "VB", "JJ", "NN", "."],
        "chunk": ["B-NP", "B-VP", "B-NP", "I-NP", "B-VP", "I-VP", "B-NP", "I-NP", "O"],
        "ner": ["B-ORG", "O", "B-MISC", "O", "O", "O", "B-MISC", "O", "O"],
    }
    assert [len(HUB_LABELS[t]) for t in CONLL_TASKS] == [47, 23, 9]


@pytest.mark.parametrize("layout", ["flat", "branch"])
def test_reads_a_local_parquet_copy(tmp_path: Path, layout: str) -> None:
    _pyarrow()
    sizes = {"train": 12, "valid": 5, "test": 6}
    written = write_conll_parquet_dir(tmp_path, HUB_LABELS, sizes, layout=layout)
    data = conll_data(str(tmp_path), source="hub", tasks=["pos", "ner"])
    assert {split: len(s) for split, s in data.sentences.items()} == sizes
    assert data.sentences == written  # words and tag names, chunk and NER in IOB2
    assert [s.line for s in data.sentences["train"][:3]] == [0, 1, 2]  # parquet rows


def test_docstart_rows_skipped_and_iob1_ids_become_iob2(tmp_path: Path) -> None:
    _pyarrow()
    docstart = Sentence(("-DOCSTART-",), {"pos": ("-X-",), "chunk": ("O",), "ner": ("O",)})
    iob1 = Sentence(
        ("Peter", "Blackburn"),
        {"pos": ("NNP", "NNP"), "chunk": ("I-NP", "I-NP"), "ner": ("I-PER", "I-PER")},
    )
    labels = {**HUB_LABELS, "pos": (*HUB_LABELS["pos"], "-X-")}
    for split in ("train", "validation", "test"):
        write_conll_parquet(tmp_path / f"{split}.parquet", [docstart, iob1], labels)
    (sentence,) = load_conll_hub(tmp_path)["train"]
    assert sentence.tags == {
        "pos": ("NNP", "NNP"),
        "chunk": ("B-NP", "I-NP"),
        "ner": ("B-PER", "I-PER"),
    }


def test_parquet_errors_name_file_row_and_value(tmp_path: Path) -> None:
    _pyarrow()
    import pyarrow as pa
    import pyarrow.parquet as pq

    write_conll_parquet_dir(tmp_path, HUB_LABELS)
    train = tmp_path / "train.parquet"

    def table(**columns: Any) -> None:
        row = {"tokens": [["a", "b"]], "pos_tags": [[1, 2]], "chunk_tags": [[0, 0]]}
        pq.write_table(pa.table({**row, "ner_tags": [[0, 0]], **columns}), train)

    table(ner_tags=[[0, 9]])
    with pytest.raises(DataError) as info:
        load_conll_hub(tmp_path)
    assert str(info.value) == (
        f"{train}: row 0: ner_tags id 9 is outside 0..8 (the hub's 9 ner labels)"
    )
    table(chunk_tags=[[0]])
    with pytest.raises(DataError) as info:
        load_conll_hub(tmp_path)
    assert str(info.value) == f"{train}: row 0: 1 chunk_tags for 2 tokens"
    table(pos_tags=[["NN", "NN"]])
    with pytest.raises(DataError) as info:
        load_conll_hub(tmp_path)
    assert str(info.value) == (
        f"{train}: column pos_tags holds lists of string; expected lists of integer label ids "
        "(the hub's layout)"
    )
    pq.write_table(pa.table({"tokens": [["a"]], "ner_tags": [[0]]}), train)
    with pytest.raises(DataError) as info:
        load_conll_hub(tmp_path)
    assert str(info.value) == (
        f"{train}: column(s) pos_tags, chunk_tags missing; the hub's layout has tokens, "
        "pos_tags, chunk_tags, ner_tags (found: tokens, ner_tags)"
    )
    train.write_bytes(b"not parquet")
    with pytest.raises(DataError, match="train.parquet: not a readable parquet file"):
        load_conll_hub(tmp_path)
    train.unlink()
    with pytest.raises(DataError) as info:
        load_conll_hub(tmp_path)
    assert str(info.value) == (
        f"CoNLL-2003 parquet files missing in {tmp_path.resolve()} "
        "(train.parquet, train-*.parquet or train/*.parquet)"
    )


def test_long_parquet_sentence_warns_with_its_row(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _pyarrow()
    data = write_conll_parquet_dir(tmp_path, HUB_LABELS, {"train": 4, "valid": 2, "test": 2})
    first = data["train"][0]
    long = Sentence(first.words * 40, {t: tags * 40 for t, tags in first.tags.items()})
    write_conll_parquet(tmp_path / "train.parquet", [*data["train"], long], HUB_LABELS)
    caplog.set_level(logging.WARNING)
    load_conll_hub(tmp_path)
    (message,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert message.startswith(
        f"{tmp_path / 'train.parquet'}: row 4: a sentence of {len(long)} tokens; 1 sentence(s)"
    )


def _fake_hub(monkeypatch: pytest.MonkeyPatch, download: Any) -> None:
    module = types.ModuleType("huggingface_hub")
    module.snapshot_download = download  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "huggingface_hub", module)


def test_without_a_local_copy_the_parquet_branch_is_downloaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _pyarrow()
    calls: list[tuple[str, dict[str, Any]]] = []

    def snapshot_download(repo_id: str, **kwargs: Any) -> str:
        calls.append((repo_id, kwargs))
        write_conll_parquet_dir(tmp_path / "cache" / "conll2003", HUB_LABELS, layout="branch")
        return str(tmp_path / "cache")

    _fake_hub(monkeypatch, snapshot_download)
    data = load_conll_hub(tmp_path / "conll2003")  # no parquet files there
    assert {split: len(s) for split, s in data.items()} == {"train": 20, "valid": 8, "test": 8}
    assert calls == [
        (
            "eriktks/conll2003",
            {
                "repo_type": "dataset",
                "revision": "refs/convert/parquet",
                "allow_patterns": ["conll2003/*/*.parquet"],
            },
        )
    ]


def test_download_failure_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _pyarrow()

    def snapshot_download(repo_id: str, **kwargs: Any) -> str:
        raise OSError("Cannot reach the hub.\n  Check your connection.")

    _fake_hub(monkeypatch, snapshot_download)
    with pytest.raises(DataError) as info:
        conll_data(str(tmp_path), source="hub")
    assert str(info.value) == (
        "data.source=hub could not download eriktks/conll2003 (branch refs/convert/parquet) "
        "from the Hugging Face hub (OSError: Cannot reach the hub. Check your connection.). "
        "Offline, point data.root=PATH at a folder with train/validation/test parquet files "
        "in the hub's layout, or read the CoNLL-2003 text files with data.source=files."
    )
