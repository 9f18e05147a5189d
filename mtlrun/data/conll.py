"""CoNLL-2003 English: three sequence-tagging tasks (POS, chunk, NER) read from local files.

Files hold 4 whitespace-separated columns ``word POS chunk NER`` per token, a blank line
between sentences and ``-DOCSTART-`` lines between documents (dropped here). Chunk and NER
tags are returned in IOB2 so that seqeval scores them like conlleval.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mtlrun.errors import DataError

CONLL_TASKS: tuple[str, ...] = ("pos", "chunk", "ner")
SPLITS: tuple[str, ...] = ("train", "valid", "test")

# Both layouts in circulation: the HF/torchtext one and the original shared-task release.
FILE_NAMES: dict[str, tuple[str, ...]] = {
    "train": ("train.txt", "eng.train"),
    "valid": ("valid.txt", "eng.testa"),
    "test": ("test.txt", "eng.testb"),
}

_SPAN_TAG = re.compile(r"^(O|[BI]-\S+)$")
_DOCSTART = "-DOCSTART-"


@dataclass(frozen=True)
class Sentence:
    """One tagged sentence: ``words[i]`` carries ``tags[task][i]`` for each task in CONLL_TASKS.

    Frozen but holds a dict, so compare it, never hash it.
    """

    words: tuple[str, ...]
    tags: dict[str, tuple[str, ...]] = field(compare=True)

    def __len__(self) -> int:
        """Number of tokens."""
        return len(self.words)


def iob1_to_iob2(tags: Sequence[str]) -> tuple[str, ...]:
    """Rewrite every ``I-X`` that opens a span as ``B-X``; IOB2 input comes back unchanged."""
    out: list[str] = []
    previous = "O"
    for tag in tags:
        if tag.startswith("I-") and (previous == "O" or previous[2:] != tag[2:]):
            tag = "B-" + tag[2:]
        out.append(tag)
        previous = tag
    return tuple(out)


def _check_span_tag(tag: str, column: str, path: Path, lineno: int, line: str) -> None:
    if not _SPAN_TAG.match(tag):
        raise DataError(
            f"{path}:{lineno}: bad {column} tag {tag!r} (expected 'O', 'B-X' or 'I-X'): {line!r}"
        )


def _make_sentence(rows: list[tuple[str, str, str, str]]) -> Sentence:
    words, pos, chunk, ner = zip(*rows, strict=True)
    return Sentence(
        words=tuple(words),
        tags={"pos": tuple(pos), "chunk": iob1_to_iob2(chunk), "ner": iob1_to_iob2(ner)},
    )


def parse_conll_lines(lines: Iterable[str], path: Path) -> list[Sentence]:
    """Parse CoNLL-2003 lines into sentences; ``path`` is only used in error messages."""
    sentences: list[Sentence] = []
    rows: list[tuple[str, str, str, str]] = []
    for lineno, raw in enumerate(lines, start=1):
        line = raw.rstrip("\r\n")
        cols = line.split()
        # A -DOCSTART- line also closes any sentence before it, even without a blank line.
        if not cols or cols[0] == _DOCSTART:
            if rows:
                sentences.append(_make_sentence(rows))
                rows = []
            continue
        if len(cols) != 4:
            raise DataError(
                f"{path}:{lineno}: expected 4 columns 'word POS chunk NER', "
                f"found {len(cols)}: {line!r}"
            )
        _check_span_tag(cols[2], "chunk", path, lineno, line)
        _check_span_tag(cols[3], "NER", path, lineno, line)
        rows.append((cols[0], cols[1], cols[2], cols[3]))
    if rows:
        sentences.append(_make_sentence(rows))
    return sentences


def read_conll(path: Path) -> list[Sentence]:
    """Read one CoNLL-2003 file into sentences (``-DOCSTART-`` dropped, chunk/NER in IOB2)."""
    path = Path(path)
    try:
        with path.open(encoding="utf-8") as handle:
            sentences = parse_conll_lines(handle, path)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    if not sentences:
        raise DataError(f"{path}: no sentences found (empty file or only -DOCSTART- lines)")
    return sentences


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


def load_conll(root: Path) -> dict[str, list[Sentence]]:
    """Read the three splits under ``root``: ``{"train"|"valid"|"test": [Sentence, ...]}``."""
    return {split: read_conll(path) for split, path in find_conll_files(root).items()}


def load_conll_hub() -> dict[str, list[Sentence]]:
    """Load CoNLL-2003 from the Hugging Face hub (needs internet and the ``datasets`` package)."""
    try:
        import datasets  # noqa: PLC0415 - optional dependency, only for data.source=hub

        dataset = datasets.load_dataset("conll2003")
        out: dict[str, list[Sentence]] = {}
        for split, hub_split in (("train", "train"), ("valid", "validation"), ("test", "test")):
            part = dataset[hub_split]
            names = {task: part.features[f"{task}_tags"].feature.names for task in CONLL_TASKS}
            out[split] = [
                Sentence(
                    words=tuple(row["tokens"]),
                    tags={
                        task: _hub_tags(task, [names[task][i] for i in row[f"{task}_tags"]])
                        for task in CONLL_TASKS
                    },
                )
                for row in part
                if row["tokens"] and row["tokens"][0] != _DOCSTART
            ]
    except Exception as exc:  # noqa: BLE001 - any failure means the same thing to the user
        raise DataError(
            "data.source=hub could not load 'conll2003' from the Hugging Face hub "
            f"({type(exc).__name__}: {exc}). It needs internet access and the 'datasets' "
            "package (pip install datasets); offline, use local files with data.root=PATH."
        ) from None
    return out


def _hub_tags(task: str, tags: list[str]) -> tuple[str, ...]:
    return tuple(tags) if task == "pos" else iob1_to_iob2(tags)
