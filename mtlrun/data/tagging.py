"""Sequence-tagging data (column files, CoNLL-2003, the generated toy set) as tensors and batches.

Every batch carries the label sequences of all tasks: the tasks read the same sentences. Each
task's metric comes with the data's description of it (a column's ``metric``) and travels on
its :class:`~mtlrun.data.base.Task` to the scores and ``metrics.json`` (``primary``).
"""

from __future__ import annotations

import copy
import logging
import math
import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

from mtlrun.data.base import IGNORE_INDEX, Group, InputSpec, Task, TextInputs, capped_batch_size
from mtlrun.data.buckets import check_batching, length_buckets
from mtlrun.data.columns import (
    Column,
    ColumnFormat,
    Sentence,
    check_format,
    describe_columns,
    load_columns,
    parse_columns,
    split_files,
    split_sentence,
)
from mtlrun.data.conll import CONLL_COLUMNS, CONLL_FORMAT, CONLL_TASKS, find_conll_files
from mtlrun.data.conll_hub import load_conll_hub
from mtlrun.data.subset import split_indices
from mtlrun.data.tags import SCHEMES, to_scheme
from mtlrun.data.toy import generate_toy
from mtlrun.errors import ConfigError

log = logging.getLogger(__name__)

PAD, UNK = "<pad>", "<unk>"
# Training label schemes of Sun et al.'s prepare-data.py (fastNLP Conll2003Pipe: chunk BIO, NER
# BIOES); read-only, as it is a signature default.
CONLL_SCHEMES: Mapping[str, str] = MappingProxyType({"chunk": "bio", "ner": "bioes"})
_DIGITS = re.compile(r"\d")


def normalise_word(word: str, zero_digits: bool = False) -> str:
    """Word-table key: lower case (Sun et al.'s ``StaticEmbedding(lower=True)``), and with
    ``zero_digits`` every digit mapped to 0. The char CNN always sees the raw form."""
    return _DIGITS.sub("0", word.lower()) if zero_digits else word.lower()


class Vocab:
    """Index of strings with ``<pad>`` = 0 and ``<unk>`` = 1."""

    def __init__(self, items: Sequence[str]) -> None:
        self.items: list[str] = [PAD, UNK, *items]
        self.index = {s: i for i, s in enumerate(self.items)}

    def __len__(self) -> int:
        return len(self.items)

    def __call__(self, item: str) -> int:
        return self.index.get(item, 1)


def _select_tasks(tasks: Sequence[str], available: Sequence[str]) -> list[str]:
    unknown = [t for t in tasks if t not in available]
    if unknown or not tasks or len(set(tasks)) != len(tasks):
        raise ConfigError(
            f"`data.tasks` should be a non-empty subset of {list(available)} without repeats. "
            f"Found `data.tasks = {list(tasks)}`."
        )
    return list(tasks)


def _check_tag_schemes(tag_schemes: Mapping[str, str], metrics: Mapping[str, str]) -> None:
    """Schemes are given for span tasks only (``metrics[task] == "f1"``), each ``bio`` or
    ``bioes``."""
    spans = [t for t, m in metrics.items() if m == "f1"]
    errors = [
        f"`data.tag_schemes.{task}` should be one of {list(SCHEMES)}. "
        f"Found `data.tag_schemes.{task} = {scheme}`."
        for task, scheme in tag_schemes.items()
        if task in spans and scheme not in SCHEMES
    ]
    errors += [
        f"`data.tag_schemes.{task}`: {task!r} is not a span task; span tasks are {spans}."
        for task in tag_schemes
        if task not in spans
    ]
    if errors:
        raise ConfigError("\n".join(errors))


def _check_max_sentence_len(max_sentence_len: int | None) -> None:
    if max_sentence_len is not None and max_sentence_len < 1:
        raise ConfigError(
            "`data.max_sentence_len` should be an integer >= 1 or null. "
            f"Found `data.max_sentence_len = {max_sentence_len}`."
        )


class TaggingData:
    """Sentences of train/valid/test encoded once as tensors; batches are padded on demand.

    Word ids come from a table built on the training split (forms seen at least
    ``min_word_freq`` times); char ids from the training characters. ``max_sentence_len``
    splits longer training sentences into near-equal pieces (every token kept and labelled;
    recorded as a deviation); valid and test sentences stay whole. ``batching="buckets"``
    draws each epoch's training batches from ``buckets`` length buckets
    (:mod:`mtlrun.data.buckets`; recorded as a deviation) instead of a uniform shuffle.

    Word table (as Sun et al.'s fastNLP vocabulary): ids 0 and 1 are padding and unknown, then
    the training forms, then the forms seen only in valid/test (``input_spec.n_train_words``
    marks the boundary; a backbone treats those as unknown unless pretrained vectors know
    them). Forms are lower-cased, and digits mapped to 0 with ``zero_digits``.
    ``metrics`` gives each described task's metric: ``accuracy``, or ``f1`` for a span task,
    whose sentences hold IOB2 tags (a task not named is scored by accuracy). ``tag_schemes``
    gives a span task's training labels in ``bio`` or ``bioes`` (default BIO); gold tags for
    scoring stay IOB2 (``gold_tags``), and each Task carries its metric and scheme.
    """

    modality = "text"

    def __init__(
        self,
        name: str,
        splits: dict[str, list[Sentence]],
        tasks: Sequence[str],
        limit_train: int | None = None,
        limit_eval: int | None = None,
        min_word_freq: int = 1,
        max_word_len: int = 30,
        max_sentence_len: int | None = None,
        batching: str = "random",
        buckets: int = 10,
        tag_schemes: Mapping[str, str] | None = None,
        zero_digits: bool = False,
        metrics: Mapping[str, str] | None = None,
    ) -> None:
        _check_max_sentence_len(max_sentence_len)
        check_batching(batching, buckets)
        schemes = dict(tag_schemes or {})
        described = dict(metrics or {})
        self.metrics = {**described, **{t: "accuracy" for t in tasks if t not in described}}
        _check_tag_schemes(schemes, self.metrics)
        self.name = name
        self.batching, self.buckets = batching, buckets
        self.deviations: list[str] = []
        limits = {"train": limit_train, "valid": limit_eval, "test": limit_eval}
        self.sentences = {s: splits[s][: limits[s]] if limits[s] else splits[s] for s in splits}
        self.deviations += [
            f"{name}: {split} cut to the first {limits[split]} of {len(splits[split])} sentences "
            f"(data.limit_{'train' if split == 'train' else 'eval'})"
            for split in splits
            if (limit := limits[split]) and limit < len(splits[split])
        ]
        if max_sentence_len is not None:
            self._split_long_training_sentences(max_sentence_len)
        if batching == "buckets":
            self.deviations.append(
                f"{name}: training batches drawn from {buckets} length buckets (data.batching="
                "buckets, the sampler of Sun et al.'s code) instead of uniformly shuffled sentences"
            )
        train = self.sentences["train"]
        self.zero_digits = zero_digits
        counts = Counter(normalise_word(w, zero_digits) for s in train for w in s.words)
        kept = sorted(w for w, c in counts.items() if c >= min_word_freq)
        unseen = {
            normalise_word(w, zero_digits)
            for split in ("valid", "test")
            for s in self.sentences.get(split, [])
            for w in s.words
        }
        self.words = Vocab([*kept, *sorted(unseen - set(counts))])
        self.chars = Vocab(sorted({c for s in train for w in s.words for c in w}))
        self.schemes = {
            t: schemes.get(t, "bio") if self.metrics[t] == "f1" else "bio" for t in tasks
        }
        self.tag_vocab = {
            t: sorted({tag for s in train for tag in self._tags(s, t)}) for t in tasks
        }
        self.tasks = [
            Task(t, self.metrics[t], tuple(self.tag_vocab[t]), self.schemes[t]) for t in tasks
        ]
        self.max_word_len = max_word_len
        self.input_spec = InputSpec(
            modality="text",
            n_words=len(self.words),
            n_chars=len(self.chars),
            words=tuple(self.words.items),
            n_train_words=2 + len(kept),
        )
        self._encoded = {
            split: [self._encode(s) for s in sents] for split, sents in self.sentences.items()
        }

    def _split_long_training_sentences(self, max_len: int) -> None:
        train = self.sentences["train"]
        n_long = sum(len(s) > max_len for s in train)
        if not n_long:
            return
        spans = [t for t, m in self.metrics.items() if m == "f1"]
        self.sentences["train"] = [p for s in train for p in split_sentence(s, max_len, spans)]
        n_pieces = len(self.sentences["train"]) - len(train) + n_long
        self.deviations.append(
            f"{self.name}: {n_long} training sentence(s) longer than {max_len} tokens split into "
            f"{n_pieces} pieces of at most {max_len} tokens (data.max_sentence_len)"
        )

    # ------------------------------------------------------------------ encoding

    def _tags(self, sentence: Sentence, task: str) -> tuple[str, ...]:
        """The training labels of ``task``: the sentence's (IOB2) tags in the task's scheme."""
        return to_scheme(sentence.tags[task], self.schemes[task])

    def _encode(self, sentence: Sentence) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        words = torch.tensor(
            [self.words(normalise_word(w, self.zero_digits)) for w in sentence.words]
        )
        width = min(self.max_word_len, max(len(w) for w in sentence.words))
        chars = torch.zeros(len(sentence.words), width, dtype=torch.long)
        for i, w in enumerate(sentence.words):
            ids = [self.chars(c) for c in w[:width]]
            chars[i, : len(ids)] = torch.tensor(ids)
        tags = {}
        for task in self.tasks:
            index = {tag: i for i, tag in enumerate(task.labels)}
            # A tag unseen in training can never be predicted; it is scored but not trained on.
            tags[task.name] = torch.tensor(
                [index.get(t, IGNORE_INDEX) for t in self._tags(sentence, task.name)]
            )
        return words, chars, tags

    def _collate(self, items: list[tuple[Tensor, Tensor, dict[str, Tensor]]]) -> Group:
        lengths = torch.tensor([len(w) for w, _, _ in items])
        words = pad_sequence([w for w, _, _ in items], batch_first=True)
        width = max(c.shape[1] for _, c, _ in items)
        chars = torch.zeros(len(items), words.shape[1], width, dtype=torch.long)
        for i, (_, c, _) in enumerate(items):
            chars[i, : c.shape[0], : c.shape[1]] = c
        targets = {
            t.name: pad_sequence(
                [tags[t.name] for _, _, tags in items], batch_first=True, padding_value=IGNORE_INDEX
            )
            for t in self.tasks
        }
        return TextInputs(words, chars, lengths), targets

    # ------------------------------------------------------------------ batches

    def sizes(self) -> dict[str, dict[str, int]]:
        return {
            split: {"sentences": len(s), "tokens": sum(len(x) for x in s)}
            for split, s in self.sentences.items()
        }

    def steps_per_epoch(self, batch_size: int) -> int:
        return math.ceil(len(self._encoded["train"]) / batch_size)

    def train_steps(
        self, batch_size: int, epoch: int, seed: int, steps: int | None = None
    ) -> Iterator[list[Group]]:
        data = self._encoded["train"]
        what = f"{self.name} sentences"
        batch_size = capped_batch_size(batch_size, len(data), what, self.deviations)
        g = torch.Generator().manual_seed(seed * 100_003 + epoch)
        n_steps = steps or self.steps_per_epoch(batch_size)
        for batch in self._batches(batch_size, n_steps, g):
            yield [self._collate([data[i] for i in batch])]

    def _batches(self, batch_size: int, n_steps: int, g: torch.Generator) -> list[list[int]]:
        """``n_steps`` batches of training-sentence indices, drawn with ``g``; an explicit
        ``steps_per_epoch`` may ask for more than one pass, which continues with a fresh one."""
        n = len(self._encoded["train"])
        if self.batching == "buckets":
            lengths = [len(words) for words, _, _ in self._encoded["train"]]
            batches: list[list[int]] = []
            while len(batches) < n_steps:
                batches += length_buckets(lengths, batch_size, self.buckets, g)
            return batches[:n_steps]
        order = torch.randperm(n, generator=g).tolist()
        while len(order) < n_steps * batch_size:
            order += torch.randperm(n, generator=g).tolist()
        return [order[k * batch_size : (k + 1) * batch_size] for k in range(n_steps)]

    def train_subset(self, fraction: float, seed: int, part: str) -> TaggingData:
        """A view with one part of the training sentences (the vocabularies stay those of the
        whole training split); see :func:`mtlrun.data.subset.split_indices`."""
        idx = split_indices(len(self._encoded["train"]), fraction, seed, part).tolist()
        view = copy.copy(self)
        view._encoded = {**self._encoded, "train": [self._encoded["train"][i] for i in idx]}
        view.sentences = {**self.sentences, "train": [self.sentences["train"][i] for i in idx]}
        return view

    def eval_order(self, split: str) -> list[int]:
        """The split's sentences shortest first (ties in file order). Batches of 256 CoNLL
        sentences in file order are about 75 % padding, in this order about 24 %; the order
        changes no score (evaluation puts its predictions back in file order)."""
        data = self._encoded[split]
        return sorted(range(len(data)), key=lambda i: (len(data[i][0]), i))

    def eval_groups(
        self, split: str, batch_size: int, order: Sequence[int] | None = None
    ) -> Iterator[Group]:
        data = self._encoded[split]
        if order is None:
            for k in range(0, len(data), batch_size):
                yield self._collate(data[k : k + batch_size])
            return
        for k in range(0, len(order), batch_size):
            yield self._collate([data[i] for i in order[k : k + batch_size]])

    def example_words(self, split: str) -> list[list[str]]:
        """The words of each example of a split, in file order (as evaluation returns predictions)."""
        return [list(s.words) for s in self.sentences[split]]

    def gold_tags(self, split: str, task: str) -> list[list[str]]:
        """Gold tag strings of a split, IOB2 for span tasks whatever the training scheme
        (unseen-in-training tags included, for honest scores)."""
        return [list(s.tags[task]) for s in self.sentences[split]]

    def with_split(self, name: str, sentences: Sequence[Sentence]) -> TaggingData:
        """The same data with one more split, ``name``: ``sentences`` (e.g. a new file read in
        the data set's format) encoded with this data's word, character and tag tables as valid
        and test are: forms and characters unseen in training read as unknown, tags unseen in
        training are scored but never predicted. The other splits are shared, not copied."""
        if name in self.sentences:
            raise ValueError(f"{self.name} already has a split named {name!r}")
        view = copy.copy(self)
        view.sentences = {**self.sentences, name: list(sentences)}
        view._encoded = {**self._encoded, name: [self._encode(s) for s in sentences]}
        return view


def described_columns(columns: Mapping[str, Mapping[str, Any]] | None) -> dict[str, Column]:
    """``data.columns`` of data=tagging as Columns (None: CoNLL-2003's,
    :data:`~mtlrun.data.conll.CONLL_COLUMNS`); a ConfigError naming every bad key."""
    return dict(CONLL_COLUMNS) if columns is None else parse_columns(columns)


def tagging_data(
    root: str,
    tasks: Sequence[str] = CONLL_TASKS,
    columns: Mapping[str, Mapping[str, Any]] | None = None,
    train: str = "train.txt",
    valid: str = "valid.txt",
    test: str = "test.txt",
    name: str = "tagging",
    modality: str = "text",
    word_column: int = 0,
    separator: str = "whitespace",
    comment: str | None = None,
    docstart: str | None = "-DOCSTART-",
    id_column: int | None = None,
    limit_train: int | None = None,
    limit_eval: int | None = None,
    min_word_freq: int = 1,
    max_word_len: int = 30,
    max_sentence_len: int | None = None,
    batching: str = "random",
    buckets: int = 10,
    tag_schemes: Mapping[str, str] | None = None,
    zero_digits: bool = False,
) -> TaggingData:
    """Any CoNLL-style column files: ``train``/``valid``/``test`` under ``root`` (an absolute
    path stands alone), each task a described column (``data.columns``).

    ``columns`` maps a task name to ``{column, scheme, metric}`` (see
    :func:`mtlrun.data.columns.describe_columns`; None: CoNLL-2003's,
    :data:`~mtlrun.data.conll.CONLL_COLUMNS`); ``tasks`` picks the columns to read and train.
    ``tag_schemes`` (None: every span task in BIO): see TaggingData.
    ``word_column``, ``separator``, ``comment``, ``docstart``, ``id_column``: the file layout
    (:class:`mtlrun.data.columns.ColumnFormat`). The rest: see TaggingData. Every bad key is
    named in one ConfigError before a file is read.
    """
    problems: list[str] = []
    if columns is None:
        described = dict(CONLL_COLUMNS)
    else:
        described, problems = describe_columns(columns)
    schemes = dict(tag_schemes or {})
    fmt = ColumnFormat(word_column, separator, comment, docstart, id_column)
    metrics = {c.name: c.metric for c in described.values()}
    for check in (
        lambda: check_format(fmt),
        lambda: _select_tasks(tasks, list(columns if isinstance(columns, Mapping) else described)),
        lambda: _check_tag_schemes(schemes, metrics),
        lambda: _check_max_sentence_len(max_sentence_len),
        lambda: check_batching(batching, buckets),
    ):
        try:
            check()
        except ConfigError as err:
            problems.append(str(err))
    if problems:
        raise ConfigError("\n".join(problems))
    files = split_files(Path(root), {"train": train, "valid": valid, "test": test})
    splits = load_columns(files, [described[t] for t in tasks], fmt, max_sentence_len)
    return TaggingData(
        name,
        splits,
        list(tasks),
        limit_train,
        limit_eval,
        min_word_freq,
        max_word_len,
        max_sentence_len,
        batching,
        buckets,
        schemes,
        zero_digits,
        metrics,
    )


def conll_data(
    root: str,
    tasks: Sequence[str] = CONLL_TASKS,
    source: str = "files",
    limit_train: int | None = None,
    limit_eval: int | None = None,
    min_word_freq: int = 1,
    max_word_len: int = 30,
    name: str = "conll",
    modality: str = "text",
    max_sentence_len: int | None = None,
    batching: str = "random",
    buckets: int = 10,
    tag_schemes: Mapping[str, str] = CONLL_SCHEMES,
    zero_digits: bool = False,
) -> TaggingData:
    """CoNLL-2003 English (METHODS §2) from ``root`` (train/valid/test files) or the hub.

    A preset of :func:`tagging_data`: the columns :data:`~mtlrun.data.conll.CONLL_COLUMNS`
    (POS plain, chunk and NER in IOB1, scored by span F1), the layout
    :data:`~mtlrun.data.conll.CONLL_FORMAT`, the files ``train.txt``/``valid.txt``/``test.txt``
    or the original release's ``eng.train``/``eng.testa``/``eng.testb``.
    ``source="hub"`` reads parquet files under ``root`` when it holds them, else the hub's
    parquet copy (see :mod:`mtlrun.data.conll_hub`). ``max_sentence_len``, ``batching``,
    ``buckets``, ``tag_schemes``, ``zero_digits``: see TaggingData (the defaults are Sun et al.'s:
    NER in BIOES, chunk in BIO, digits kept).
    """
    tasks = _select_tasks(tasks, CONLL_TASKS)
    metrics = {c.name: c.metric for c in CONLL_COLUMNS.values()}
    _check_tag_schemes(dict(tag_schemes), metrics)
    if source not in ("files", "hub"):
        raise ConfigError(
            f"`data.source` should be one of ['files', 'hub']. Found `data.source = {source}`."
        )
    _check_max_sentence_len(max_sentence_len)
    check_batching(batching, buckets)
    if source == "files":
        columns = [CONLL_COLUMNS[t] for t in tasks]
        splits = load_columns(find_conll_files(Path(root)), columns, CONLL_FORMAT, max_sentence_len)
    else:
        splits = load_conll_hub(Path(root), max_sentence_len)
    return TaggingData(
        name,
        splits,
        tasks,
        limit_train,
        limit_eval,
        min_word_freq,
        max_word_len,
        max_sentence_len,
        batching,
        buckets,
        dict(tag_schemes),
        zero_digits,
        metrics,
    )


def toy_data(
    tasks: Sequence[str] = CONLL_TASKS,
    n_train: int = 2000,
    n_valid: int = 300,
    n_test: int = 300,
    seed: int = 0,
    limit_train: int | None = None,
    limit_eval: int | None = None,
    name: str = "toy",
    modality: str = "text",
    max_sentence_len: int | None = None,
    batching: str = "random",
    buckets: int = 10,
) -> TaggingData:
    """The embedded generated tagging set (no files): tasks pos, chunk, ner like CoNLL-2003
    (and scored as its columns are: POS by accuracy, chunk and NER by span F1).

    ``max_sentence_len``, ``batching``, ``buckets``: see TaggingData (toy sentences have 6-20
    tokens).
    """
    tasks = _select_tasks(tasks, CONLL_TASKS)
    _check_max_sentence_len(max_sentence_len)
    check_batching(batching, buckets)
    splits = generate_toy(n_train, n_valid, n_test, seed)
    return TaggingData(
        name,
        splits,
        tasks,
        limit_train,
        limit_eval,
        max_sentence_len=max_sentence_len,
        batching=batching,
        buckets=buckets,
        metrics={c.name: c.metric for c in CONLL_COLUMNS.values()},  # the toy set mimics them
    )
