"""Pretrained word vectors in GloVe text format, and the word table they start, as Sun et al.'s
code gets it from fastNLP 0.5.0's ``StaticEmbedding(lower=True)``.

GloVe 6B-100d (``glove.6B.100d.txt`` from https://nlp.stanford.edu/projects/glove/) is what the
authors used; word2vec-style files with a "<count> <dim>" first line are read too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from mtlrun.errors import DataError

PADDING_ID = 0  # word id and char id 0 are padding (see TextInputs)
UNKNOWN_ID = 1  # word id 1 is the unknown word


class WordVectors:
    """The vectors a GloVe-format text file holds for some word forms.

    ``vectors`` maps form -> list of ``dim`` floats (the last line of a form wins, as in
    fastNLP); ``sha256`` is the file's digest and ``lines`` its number of lines.
    """

    def __init__(self, path: Path, vectors: dict[str, list[float]], sha256: str, lines: int):
        self.path, self.vectors, self.sha256, self.lines = path, vectors, sha256, lines


def _is_header(parts: list[str]) -> bool:
    """word2vec/fastText text files start with "<count> <dim>"; GloVe files do not."""
    return len(parts) == 2 and all(p.isdigit() for p in parts)


def read_vectors(path: str | Path, wanted: set[str], dim: int) -> WordVectors:
    """The vectors of the ``wanted`` forms in a GloVe text file (``word v1 ... v_dim`` lines).

    Every line's width is checked; numbers are parsed for wanted forms only (a malformed
    number elsewhere cannot reach the model, and parsing all of GloVe 840B takes minutes).
    Raises :class:`DataError` naming file:line on a bad line.
    """
    path = Path(path)
    found: dict[str, list[float]] = {}
    digest = hashlib.sha256()
    line_no = 0
    try:
        with path.open("rb") as lines:
            for line_no, raw in enumerate(lines, start=1):
                digest.update(raw)
                where = f"{path}:{line_no}"
                try:
                    parts = raw.decode("utf-8").split()
                except UnicodeDecodeError as err:
                    raise DataError(f"{where}: not UTF-8 text ({err.reason})") from None
                if not parts or (line_no == 1 and _is_header(parts)):
                    continue
                if len(parts) != dim + 1:
                    raise DataError(
                        f"{where}: expected a word and {dim} numbers (the backbone's word_dim), "
                        f"found {len(parts) - 1} numbers"
                    )
                if parts[0] in wanted:
                    try:
                        found[parts[0]] = [float(v) for v in parts[1:]]
                    except ValueError as err:
                        raise DataError(f"{where}: unreadable number ({err})") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read the word vectors file ({err.strerror})") from None
    return WordVectors(path, found, digest.hexdigest(), line_no)


def word_table(
    vectors: WordVectors | None, words: Sequence[str], n_train_words: int, dim: int
) -> tuple[Tensor, Tensor, Tensor]:
    """How the word table starts, as fastNLP's ``StaticEmbedding(lower=True)`` builds it.

    ``words[i]`` is the form of word id i (0 padding, 1 unknown, then training forms up to
    ``n_train_words``, then forms seen only in valid/test). Each form is looked up exactly,
    then lower-cased. Returns (row ids (N,), their vectors (N, dim), ``word_rows`` (n_words,)):
    a valid/test-only form reads its own row when the file has it and the unknown row
    otherwise; every other id reads its own row. Training forms without a vector keep their
    random initialisation; the caller zeroes the unknown row when a file is given.
    """
    word_rows = torch.arange(len(words))
    word_rows[n_train_words:] = UNKNOWN_ID
    if vectors is None:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dim), word_rows
    rows: list[int] = []
    values: list[list[float]] = []
    for row, form in enumerate(words):
        vector = vectors.vectors.get(form) or vectors.vectors.get(form.lower())
        if row > UNKNOWN_ID and vector is not None:
            rows.append(row)
            values.append(vector)
            word_rows[row] = row
    return torch.tensor(rows, dtype=torch.long), torch.tensor(values).reshape(-1, dim), word_rows
