"""CoNLL-2003 English: three sequence-tagging tasks (POS, chunk, NER) read from local files.

Files hold 4 whitespace-separated columns ``word POS chunk NER`` per token, a blank line
between sentences and ``-DOCSTART-`` lines between documents (dropped here). They are column
files (:mod:`mtlrun.data.columns`) described by :data:`CONLL_COLUMNS`: POS as plain labels,
chunk and NER in IOB1, returned in IOB2 so that seqeval scores them like conlleval.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import MappingProxyType

from mtlrun.data.columns import (
    Column,
    ColumnFormat,
    Sentence,
    load_columns,
    read_columns,
    warn_long_sentences,
)
from mtlrun.errors import DataError

__all__ = [
    "CONLL_COLUMNS",
    "CONLL_FORMAT",
    "CONLL_TASKS",
    "FILE_NAMES",
    "SPLITS",
    "Sentence",
    "find_conll_files",
    "load_conll",
    "read_conll",
    "warn_long_sentences",
]

CONLL_TASKS: tuple[str, ...] = ("pos", "chunk", "ner")
# The shared task's columns (Tjong Kim Sang & De Meulder 2003): chunk and NER in IOB1.
CONLL_COLUMNS: MappingProxyType[str, Column] = MappingProxyType(
    {
        "pos": Column("pos", 1, "token", "accuracy"),
        "chunk": Column("chunk", 2, "iob1", "f1"),
        "ner": Column("ner", 3, "iob1", "f1"),
    }
)
# Word first, whitespace-separated, -DOCSTART- lines between documents, no comments or ids.
CONLL_FORMAT = ColumnFormat(
    word_column=0, separator="whitespace", comment=None, docstart="-DOCSTART-", id_column=None
)
SPLITS: tuple[str, ...] = ("train", "valid", "test")

# Both layouts in circulation: the HF/torchtext one and the original shared-task release.
FILE_NAMES: dict[str, tuple[str, ...]] = {
    "train": ("train.txt", "eng.train"),
    "valid": ("valid.txt", "eng.testa"),
    "test": ("test.txt", "eng.testb"),
}


def conll_columns(tasks: Sequence[str] = CONLL_TASKS) -> list[Column]:
    """The columns of ``tasks`` (a subset of :data:`CONLL_TASKS`), in that order."""
    return [CONLL_COLUMNS[t] for t in tasks]


def read_conll(path: Path, tasks: Sequence[str] = CONLL_TASKS) -> list[Sentence]:
    """Read one CoNLL-2003 file into sentences (``-DOCSTART-`` dropped, chunk/NER in IOB2)."""
    return read_columns(Path(path), conll_columns(tasks), CONLL_FORMAT)


def find_conll_files(root: Path) -> dict[str, Path]:
    """Locate the train/valid/test files under ``root``; raise one DataError if any is missing."""
    root = Path(root)
    found: dict[str, Path] = {}
    for split, names in FILE_NAMES.items():
        for name in names:
            if (root / name).is_file():
                found[split] = root / name
                break
    missing = [split for split in SPLITS if split not in found]
    if missing:
        expected = "; ".join(f"{s}: {' or '.join(FILE_NAMES[s])}" for s in missing)
        raise DataError(
            f"CoNLL-2003 files missing in {root.resolve()} ({expected}). Ways on: set "
            "MTLRUN_DATA to a folder holding conll2003/, or pass data.root=PATH pointing at "
            "the folder with the files, or (when online) data.source=hub."
        )
    return found


def load_conll(
    root: Path, max_sentence_len: int | None = None, tasks: Sequence[str] = CONLL_TASKS
) -> dict[str, list[Sentence]]:
    """Read the three splits under ``root``: ``{"train"|"valid"|"test": [Sentence, ...]}``.

    ``max_sentence_len`` (the training cap, or None) only shapes the long-sentence warning.
    """
    return load_columns(
        find_conll_files(root), conll_columns(tasks), CONLL_FORMAT, max_sentence_len
    )
