"""Column-format (CoNLL-style) tagging files: one token a line, its fields in columns.

A blank line ends a sentence. Which column holds the word and which hold the tasks' tags is
described, not assumed: a :class:`Column` per task (0-based index, negative from the end; the
tag scheme the file writes; the metric the task is scored by) and a :class:`ColumnFormat` for
the rest (word column, separator, comment lines, document markers, CoNLL-U token ids). So
CoNLL-2003 (``word POS chunk NER``), CoNLL-2000 (``word POS chunk``), a two-column
``word tag`` file or a Universal Dependencies CoNLL-U file are read by the same code.

Span columns (schemes ``iob1``, ``iob2``/``bio``, ``bioes``) are returned in IOB2, the form
seqeval scores as conlleval does; ``token`` columns are returned as written.
"""

from __future__ import annotations

import io
import logging
import operator
import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

from mtlrun.data.tags import bioes_to_bio
from mtlrun.errors import ConfigError, DataError

log = logging.getLogger(__name__)

SPAN_SCHEMES: tuple[str, ...] = ("iob1", "iob2", "bio", "bioes")
FILE_SCHEMES: tuple[str, ...] = ("token", *SPAN_SCHEMES)
METRICS: tuple[str, ...] = ("accuracy", "f1")
SEPARATORS: tuple[str, ...] = ("whitespace", "tab")
COLUMN_KEYS: tuple[str, ...] = ("column", "scheme", "metric")
# Sentences longer than this get a warning at load: a batch is padded to its longest sentence and
# the BiLSTM steps through every position (one 5,000-token sentence made an epoch ~13x slower).
# The longest CoNLL-2003 sentences have 113 (train), 109 (valid) and 124 (test) tokens.
LONG_SENTENCE = 250

_SPAN_TAG = {
    "iob1": re.compile(r"^(O|[BI]-\S+)$"),
    "iob2": re.compile(r"^(O|[BI]-\S+)$"),
    "bio": re.compile(r"^(O|[BI]-\S+)$"),
    "bioes": re.compile(r"^(O|[BIES]-\S+)$"),
}
_EXPECTED = {
    "iob1": "'O', 'B-X' or 'I-X'",
    "iob2": "'O', 'B-X' or 'I-X'",
    "bio": "'O', 'B-X' or 'I-X'",
    "bioes": "'O', 'B-X', 'I-X', 'E-X' or 'S-X'",
}


@dataclass(frozen=True)
class Sentence:
    """One tagged sentence: ``words[i]`` carries ``tags[task][i]`` for each task read.

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


@dataclass(frozen=True)
class Column:
    """One task read from a column: ``column`` its 0-based index (negative: from the end),
    ``scheme`` how the file writes its tags (``token``: plain labels; ``iob1``, ``iob2``/``bio``,
    ``bioes``: spans), ``metric`` its primary score (``accuracy``, or ``f1``: span F1)."""

    name: str
    column: int
    scheme: str
    metric: str

    @property
    def span(self) -> bool:
        """Whether the column holds span tags (read into IOB2)."""
        return self.scheme != "token"


@dataclass(frozen=True)
class ColumnFormat:
    """The layout of a column file besides the tag columns.

    ``word_column``: the column of the word. ``separator``: ``whitespace`` (any run of spaces or
    tabs) or ``tab`` (tabs only, so a field may hold spaces). ``comment``: lines starting with
    it are skipped (``#`` in CoNLL-U), None: none. ``docstart``: a line whose first field is
    this marks a new document and ends the sentence before it (CoNLL-2003's ``-DOCSTART-``),
    None: none. ``id_column``: CoNLL-U's ID column, None: none; a token line whose id is a range
    (``3-4``, a multiword token) or holds a dot (``5.1``, an empty node) is skipped, so the
    words read are the syntactic words the tags belong to.
    """

    word_column: int
    separator: str
    comment: str | None
    docstart: str | None
    id_column: int | None

    def split(self, line: str) -> list[str]:
        """The fields of ``line``; [] for a blank line."""
        if self.separator == "tab":
            return line.split("\t") if line.strip() else []
        return line.split()


def iob1_to_iob2(tags: Sequence[str]) -> tuple[str, ...]:
    """Rewrite every ``I-X`` that opens a span as ``B-X``; IOB2 input comes back unchanged.

    A stray ``I-X`` in IOB2 (after ``O`` or another type) opens a span as conlleval reads it.
    """
    out: list[str] = []
    previous = "O"
    for tag in tags:
        if tag.startswith("I-") and (previous == "O" or previous[2:] != tag[2:]):
            tag = "B-" + tag[2:]
        out.append(tag)
        previous = tag
    return tuple(out)


def to_iob2(tags: Sequence[str], scheme: str) -> tuple[str, ...]:
    """Span ``tags`` written in ``scheme`` (one of :data:`SPAN_SCHEMES`) in IOB2."""
    if scheme == "bioes":
        return iob1_to_iob2(bioes_to_bio(tags))
    return iob1_to_iob2(tags)


# ---------------------------------------------------------------------------- description


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_columns(columns: Mapping[str, Mapping[str, Any]]) -> dict[str, Column]:
    """``data.columns`` (task -> ``{column, scheme, metric}``) as Columns; every problem in one
    ConfigError naming its key (see :func:`describe_columns`)."""
    out, problems = describe_columns(columns)
    if problems:
        raise ConfigError("\n".join(problems))
    return out


def describe_columns(
    columns: Mapping[str, Mapping[str, Any]],
) -> tuple[dict[str, Column], list[str]]:
    """``data.columns`` as Columns, and the problems found, each naming its key.

    A missing ``scheme`` is ``token``; a missing (or null) ``metric`` is the scheme's:
    ``accuracy`` for ``token``, ``f1`` for a span scheme; ``f1`` on ``token`` labels is refused.
    """
    problems: list[str] = []
    out: dict[str, Column] = {}
    if not isinstance(columns, Mapping) or not columns:
        example = "{ner: {column: 3, scheme: iob1}}"
        should = f"`data.columns` should map task names to columns, e.g. {example}."
        return out, [f"{should} Found `data.columns = {columns}`."]
    for name, spec in columns.items():
        key, before = f"data.columns.{name}", len(problems)
        if not isinstance(spec, Mapping):
            problems.append(
                f"`{key}` should be a mapping like {{column: 1, scheme: token}}. "
                f"Found `{key} = {spec}`."
            )
            continue
        unknown = [k for k in spec if k not in COLUMN_KEYS]
        problems += [
            f"`{key}.{k}` is not a key; a column has {list(COLUMN_KEYS)}." for k in unknown
        ]
        index, scheme = spec.get("column"), spec.get("scheme", "token")
        metric = spec.get("metric")
        if not _is_int(index):
            problems.append(f"`{key}.column` should be an integer. Found `{key}.column = {index}`.")
        if scheme not in FILE_SCHEMES:
            problems.append(
                f"`{key}.scheme` should be one of {list(FILE_SCHEMES)}. "
                f"Found `{key}.scheme = {scheme}`."
            )
            continue
        if metric is None:
            metric = "accuracy" if scheme == "token" else "f1"
        if metric not in METRICS:
            problems.append(
                f"`{key}.metric` should be one of {list(METRICS)} or null. "
                f"Found `{key}.metric = {metric}`."
            )
        elif metric == "f1" and scheme == "token":
            problems.append(
                f"`{key}.metric = f1` scores spans, which `{key}.scheme = token` has none of; "
                f"set `{key}.scheme` to one of {list(SPAN_SCHEMES)} or the metric to accuracy."
            )
        if len(problems) == before and _is_int(index):
            out[str(name)] = Column(str(name), index, str(scheme), str(metric))
    return out, problems


def check_format(fmt: ColumnFormat) -> None:
    """One ConfigError naming every bad key of ``fmt`` (``data.word_column``, ...)."""
    problems = []
    if fmt.separator not in SEPARATORS:
        problems.append(
            f"`data.separator` should be one of {list(SEPARATORS)}. "
            f"Found `data.separator = {fmt.separator}`."
        )
    if not _is_int(fmt.word_column):
        problems.append(
            f"`data.word_column` should be an integer. Found `data.word_column = {fmt.word_column}`."
        )
    if fmt.id_column is not None and not _is_int(fmt.id_column):
        problems.append(
            "`data.id_column` should be an integer or null. "
            f"Found `data.id_column = {fmt.id_column}`."
        )
    for key, value in (("comment", fmt.comment), ("docstart", fmt.docstart)):
        if value is not None and not str(value).strip():
            problems.append(
                f"`data.{key}` should be a non-blank string or null. Found `{value!r}`."
            )
    if problems:
        raise ConfigError("\n".join(problems))


# ---------------------------------------------------------------------------- reading


def _needed(index: int) -> int:
    """Fields a line needs to have column ``index`` (negative: from the end)."""
    return index + 1 if index >= 0 else -index


class _Parser:
    """Lines -> sentences for one file; ``path`` only names the file in messages."""

    def __init__(self, path: Path, columns: Sequence[Column], fmt: ColumnFormat) -> None:
        self.path, self.columns, self.fmt = path, columns, fmt
        # Each index a line must have, with what it holds.
        self.needs = [(c.column, c.name) for c in columns]
        self.needs.append((fmt.word_column, "the word"))
        if fmt.id_column is not None:
            self.needs.append((fmt.id_column, "the token id"))
        self.min_fields = max(_needed(index) for index, _ in self.needs)
        # A line's (word, tag, ...) in one call; the combinations of tags already checked.
        indices = (fmt.word_column, *(c.column for c in columns))
        one = operator.itemgetter(*indices)  # a tuple for two indices or more, else the field
        self.get: Callable[[list[str]], tuple[str, ...]] = (
            one if len(indices) > 1 else lambda fields: (one(fields),)
        )
        self.valid: set[tuple[str, ...]] = set()

    def error(self, lineno: int, what: str, line: str) -> DataError:
        return DataError(f"{self.path}:{lineno}: {what}: {line!r}")

    def width_error(
        self, fields: list[str], lineno: int, line: str, width: int, first: int
    ) -> DataError:
        for index, what in self.needs:
            if len(fields) < _needed(index):
                return self.error(
                    lineno,
                    f"{len(fields)} column(s), but column {index} ({what}) needs at least "
                    f"{_needed(index)}",
                    line,
                )
        hint = ""
        if self.fmt.separator == "whitespace" and "\t" in line:
            hint = " (fields are split at any space; data.separator=tab splits at tabs only)"
        return self.error(
            lineno,
            f"{len(fields)} columns, but line {first} of this sentence has {width}{hint}",
            line,
        )

    def check_tags(self, row: tuple[str, ...], lineno: int, line: str) -> None:
        for c, tag in zip(self.columns, row[1:], strict=True):
            if c.span and not _SPAN_TAG[c.scheme].match(tag):
                raise self.error(
                    lineno,
                    f"bad {c.name} tag {tag!r} in column {c.column} (scheme {c.scheme} "
                    f"expects {_EXPECTED[c.scheme]})",
                    line,
                )
        self.valid.add(row[1:])

    def sentence(self, rows: list[tuple[str, ...]], first: int) -> Sentence:
        words, *columns = zip(*rows, strict=True)
        tags = {
            c.name: to_iob2(column, c.scheme) if c.span else column
            for c, column in zip(self.columns, columns, strict=True)
        }
        return Sentence(words, tags, line=first)

    def parse(self, lines: Iterable[str]) -> list[Sentence]:
        fmt, get, valid, min_fields = self.fmt, self.get, self.valid, self.min_fields
        sentences: list[Sentence] = []
        rows: list[tuple[str, ...]] = []
        first = width = 0  # the current sentence's first line and its number of fields
        for lineno, raw in enumerate(lines, start=1):
            line = raw.rstrip("\r\n")
            if fmt.comment is not None and line.startswith(fmt.comment):
                continue
            fields = fmt.split(line)
            # A document marker also closes any sentence before it, even without a blank line.
            if not fields or (fmt.docstart is not None and fields[0] == fmt.docstart):
                if rows:
                    sentences.append(self.sentence(rows, first))
                    rows, width = [], 0
                continue
            if len(fields) < min_fields or (width and len(fields) != width):
                raise self.width_error(fields, lineno, line, width, first)
            if fmt.id_column is not None and not fields[fmt.id_column].isdigit():
                continue  # a multiword-token range (3-4) or an empty node (5.1)
            if not rows:
                first, width = lineno, len(fields)
            row = get(fields)
            if row[1:] not in valid:
                self.check_tags(row, lineno, line)
            rows.append(row)
        if rows:
            sentences.append(self.sentence(rows, first))
        return sentences


def parse_lines(
    lines: Iterable[str], path: Path, columns: Sequence[Column], fmt: ColumnFormat
) -> list[Sentence]:
    """Parse column-format lines into sentences with the tags of ``columns`` (span columns in
    IOB2); ``path`` is only used in error messages, each naming the file and line."""
    return _Parser(path, columns, fmt).parse(lines)


def decode(data: bytes, path: Path) -> str:
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


def read_columns(path: Path, columns: Sequence[Column], fmt: ColumnFormat) -> list[Sentence]:
    """Read one column file into sentences; a DataError naming the file (and line) if it is
    unreadable, malformed or holds no sentence."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    sentences = parse_lines(io.StringIO(decode(data, path), newline=None), path, columns, fmt)
    if not sentences:
        marker = f" or only {fmt.docstart} lines" if fmt.docstart else ""
        raise DataError(f"{path}: no sentences found (empty file{marker})")
    return sentences


def load_columns(
    files: Mapping[str, Path],
    columns: Sequence[Column],
    fmt: ColumnFormat,
    max_sentence_len: int | None = None,
) -> dict[str, list[Sentence]]:
    """Read each split's file: ``{split: [Sentence, ...]}``, with one warning per file that
    holds very long sentences (``max_sentence_len``, the training cap, shapes it)."""
    out: dict[str, list[Sentence]] = {}
    for split, path in files.items():
        out[split] = read_columns(path, columns, fmt)
        warn_long_sentences(out[split], path, split, max_sentence_len)
    return out


def split_files(root: Path, names: Mapping[str, str]) -> dict[str, Path]:
    """Each split's file, ``root / name`` (an absolute name stands alone); one DataError
    naming every missing file and its key (``data.train``, ...)."""
    files = {split: Path(root) / name for split, name in names.items()}
    missing = [f"data.{split}: {path}" for split, path in files.items() if not path.is_file()]
    if missing:
        raise DataError(
            f"tagging files missing ({'; '.join(missing)}). A relative name is read under "
            f"data.root ({Path(root).resolve()}); set data.root=PATH or give each split's "
            "path (data.train, data.valid, data.test)."
        )
    return files


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


def split_sentence(sentence: Sentence, max_len: int, spans: Collection[str]) -> list[Sentence]:
    """Cut a sentence of L > ``max_len`` tokens into ceil(L / max_len) near-equal pieces.

    Every token keeps its tags; the tags of the ``spans`` tasks (IOB2) stay IOB2, so a piece
    that starts inside a span opens it with ``B-``.
    """
    n = len(sentence)
    if n <= max_len:
        return [sentence]
    k = -(-n // max_len)
    bounds = [n * i // k for i in range(k + 1)]
    pieces = []
    for start, stop in zip(bounds, bounds[1:], strict=False):
        piece = {
            task: iob1_to_iob2(tags[start:stop]) if task in spans else tags[start:stop]
            for task, tags in sentence.tags.items()
        }
        pieces.append(Sentence(sentence.words[start:stop], piece, line=sentence.line))
    return pieces
