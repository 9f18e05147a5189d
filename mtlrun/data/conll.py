"""CoNLL-2003 English: three sequence-tagging tasks (POS, chunk, NER) read from local files.

Files hold 4 whitespace-separated columns ``word POS chunk NER`` per token, a blank line
between sentences and ``-DOCSTART-`` lines between documents (dropped here). Chunk and NER
tags are returned in IOB2 so that seqeval scores them like conlleval.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mtlrun.errors import DataError

log = logging.getLogger(__name__)

CONLL_TASKS: tuple[str, ...] = ("pos", "chunk", "ner")
# Sentences longer than this get a warning at load: a batch is padded to its longest sentence and
# the BiLSTM steps through every position (one 5,000-token sentence made an epoch ~13x slower).
# The longest CoNLL-2003 sentences have 113 (train), 109 (valid) and 124 (test) tokens.
LONG_SENTENCE = 250
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

    ``line`` says where it came from, for messages: its first line in a text file (from 1), its
    row in a parquet file (from 0), 0 when generated; it takes no part in comparisons.
    Frozen but holds a dict, so compare it, never hash it.
    """

    words: tuple[str, ...]
    tags: dict[str, tuple[str, ...]] = field(compare=True)
    line: int = field(default=0, compare=False)

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


def _make_sentence(rows: list[tuple[str, str, str, str]], line: int) -> Sentence:
    words, pos, chunk, ner = zip(*rows, strict=True)
    return Sentence(
        words=tuple(words),
        tags={"pos": tuple(pos), "chunk": iob1_to_iob2(chunk), "ner": iob1_to_iob2(ner)},
        line=line,
    )


def parse_conll_lines(lines: Iterable[str], path: Path) -> list[Sentence]:
    """Parse CoNLL-2003 lines into sentences; ``path`` is only used in error messages."""
    sentences: list[Sentence] = []
    rows: list[tuple[str, str, str, str]] = []
    first = 0  # line of the current sentence's first token
    for lineno, raw in enumerate(lines, start=1):
        line = raw.rstrip("\r\n")
        cols = line.split()
        # A -DOCSTART- line also closes any sentence before it, even without a blank line.
        if not cols or cols[0] == _DOCSTART:
            if rows:
                sentences.append(_make_sentence(rows, first))
                rows = []
            continue
        if not rows:
            first = lineno
        if len(cols) != 4:
            raise DataError(
                f"{path}:{lineno}: expected 4 columns 'word POS chunk NER', "
                f"found {len(cols)}: {line!r}"
            )
        _check_span_tag(cols[2], "chunk", path, lineno, line)
        _check_span_tag(cols[3], "NER", path, lineno, line)
        rows.append((cols[0], cols[1], cols[2], cols[3]))
    if rows:
        sentences.append(_make_sentence(rows, first))
    return sentences


def _decode(data: bytes, path: Path) -> str:
    """The whole file as text, without a leading UTF-8 byte order mark (what ``utf-8-sig``
    reads; decoded as ``utf-8`` so that byte offsets count from the file's first byte); a
    non-UTF-8 byte is reported with its line and byte offset."""
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        before = data[: exc.start].decode("utf-8")  # valid: exc.start is the first bad byte
        # Count lines as the parser does (universal newlines: \n, \r\n and a lone \r).
        line = 1 + before.count("\n") + before.count("\r") - before.count("\r\n")
        raise DataError(
            f"{path}:{line}: not UTF-8 text: byte 0x{data[exc.start]:02x} at byte offset "
            f"{exc.start} ({exc.reason}); convert the file to UTF-8 "
            "(e.g. iconv -f latin1 -t utf-8)"
        ) from None


def read_conll(path: Path) -> list[Sentence]:
    """Read one CoNLL-2003 file into sentences (``-DOCSTART-`` dropped, chunk/NER in IOB2)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    sentences = parse_conll_lines(io.StringIO(_decode(data, path), newline=None), path)
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


def load_conll(root: Path, max_sentence_len: int | None = None) -> dict[str, list[Sentence]]:
    """Read the three splits under ``root``: ``{"train"|"valid"|"test": [Sentence, ...]}``.

    ``max_sentence_len`` (the training cap, or None) only shapes the long-sentence warning.
    """
    out: dict[str, list[Sentence]] = {}
    for split, path in find_conll_files(root).items():
        out[split] = read_conll(path)
        warn_long_sentences(out[split], path, split, max_sentence_len)
    return out


def warn_long_sentences(
    sentences: Sequence[Sentence],
    path: Path,
    split: str,
    max_sentence_len: int | None,
    rows: bool = False,
) -> None:
    """Log one warning for a file holding sentences of more than LONG_SENTENCE tokens.

    It names the longest one by ``Sentence.line`` (a parquet row when ``rows``). Training
    sentences are not warned about once ``max_sentence_len`` splits them.
    """
    if split == "train" and max_sentence_len is not None:
        return
    long = [s for s in sentences if len(s) > LONG_SENTENCE]
    if not long:
        return
    longest = max(long, key=len)
    where = f"{path}: row {longest.line}" if rows else f"{path}:{longest.line}"
    head = (
        f"{where}: a sentence of {len(longest)} tokens; "
        f"{len(long)} sentence(s) of this file have more than {LONG_SENTENCE} tokens. A batch "
        "is padded to its longest sentence and the BiLSTM steps through every position, so "
    )
    if split == "train":
        log.warning(
            head + "such sentences slow training many times over. Cap them with "
            f"data.max_sentence_len=N (e.g. data.max_sentence_len={LONG_SENTENCE}): training "
            "sentences longer than N tokens are split into pieces, every token kept and labelled."
        )
    else:
        log.warning(
            head + f"such sentences slow evaluation. The {split} split is read whole "
            "(data.max_sentence_len splits training sentences only, so scores stay comparable)."
        )


def split_sentence(sentence: Sentence, max_len: int) -> list[Sentence]:
    """Cut a sentence of L > ``max_len`` tokens into ceil(L / max_len) near-equal pieces.

    Every token keeps its tags; span tags (every task but ``pos``) stay IOB2, so a piece that
    starts inside a chunk or entity opens it with ``B-``.
    """
    n = len(sentence)
    if n <= max_len:
        return [sentence]
    k = -(-n // max_len)
    bounds = [n * i // k for i in range(k + 1)]
    pieces = []
    for start, stop in zip(bounds, bounds[1:], strict=False):
        piece = {
            task: tags[start:stop] if task == "pos" else iob1_to_iob2(tags[start:stop])
            for task, tags in sentence.tags.items()
        }
        pieces.append(Sentence(sentence.words[start:stop], piece, line=sentence.line))
    return pieces
