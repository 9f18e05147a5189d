"""CoNLL-2003 from the Hugging Face hub's parquet copy (``data.source=hub``), no loading script.

The hub's CoNLL-2003 (``eriktks/conll2003``, formerly ``conll2003``) is a loading script, which
``datasets`` refuses since 4.0. The hub's parquet converter publishes the same data, without a
script, in the branch ``refs/convert/parquet`` as ``conll2003/{train,validation,test}/*.parquet``.
Its columns are ``tokens`` (strings) and ``pos_tags``, ``chunk_tags``, ``ner_tags`` (integer ids
of the label lists below); an ``id`` column is ignored.

``data.root`` may point at a local copy in that layout: per split, ``<split>.parquet``,
``<split>-*.parquet`` (as ``push_to_hub`` writes them) or ``<split>/*.parquet`` (the parquet
branch), with ``<split>`` one of ``train``, ``validation`` (or ``valid``), ``test``. Without one
the branch is downloaded to the Hugging Face cache. Both need the ``hub`` extra (``datasets``,
which brings ``pyarrow`` and ``huggingface_hub``).
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

from mtlrun.data.columns import Sentence, iob1_to_iob2, warn_long_sentences
from mtlrun.data.conll import CONLL_COLUMNS, CONLL_TASKS
from mtlrun.errors import DataError

HUB_REPO = "eriktks/conll2003"
HUB_REVISION = "refs/convert/parquet"
HUB_CONFIG = "conll2003"  # the folder of the dataset's only config in the parquet branch
HUB_SPLITS: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "valid": ("validation", "valid"),
    "test": ("test",),
}
INSTALL_HINT = (
    "data.source=hub needs the optional `hub` extra (datasets, pyarrow): "
    'pip install "mtlrun[hub]". Without it, read the CoNLL-2003 text files with '
    "data.source=files data.root=PATH."
)

# The names of the hub's integer tag ids, in id order. They are the ClassLabel features that the
# hub's conll2003 loading script declares (`_info()` of conll2003.py, first in the
# huggingface/datasets repository, now in eriktks/conll2003) and that its dataset card lists;
# a parquet copy need not carry them. Chunk and NER are IOB2 there.
HUB_LABELS: dict[str, tuple[str, ...]] = {
    "pos": (
        '"', "''", "#", "$", "(", ")", ",", ".", ":", "``", "CC", "CD", "DT", "EX", "FW", "IN",
        "JJ", "JJR", "JJS", "LS", "MD", "NN", "NNP", "NNPS", "NNS", "NN|SYM", "PDT", "POS",
        "PRP", "PRP$", "RB", "RBR", "RBS", "RP", "SYM", "TO", "UH", "VB", "VBD", "VBG", "VBN",
        "VBP", "VBZ", "WDT", "WP", "WP$", "WRB",
    ),
    "chunk": (
        "O", "B-ADJP", "I-ADJP", "B-ADVP", "I-ADVP", "B-CONJP", "I-CONJP", "B-INTJ", "I-INTJ",
        "B-LST", "I-LST", "B-NP", "I-NP", "B-PP", "I-PP", "B-PRT", "I-PRT", "B-SBAR", "I-SBAR",
        "B-UCP", "I-UCP", "B-VP", "I-VP",
    ),
    "ner": ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"),
}  # fmt: skip


def _parquet() -> ModuleType:
    """``pyarrow.parquet``, or the install hint as a DataError when the extra is missing."""
    try:
        import pyarrow.parquet as pq  # noqa: PLC0415 - optional dependency (the hub extra)
    except ImportError:
        raise DataError(INSTALL_HINT) from None
    return pq


def _one_line(exc: Exception) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}".rstrip(": ")


def find_parquet_files(root: Path) -> dict[str, list[Path]]:
    """The parquet files of each split under ``root``; ``{}`` when there are none at all.

    A folder holding some splits but not all is an error that names the missing ones.
    """
    found: dict[str, list[Path]] = {}
    for split, names in HUB_SPLITS.items():
        for name in names:
            patterns = (f"{name}.parquet", f"{name}-*.parquet", f"{name}/*.parquet")
            files = sorted({path for pattern in patterns for path in root.glob(pattern)})
            if files:
                found[split] = files
                break
    missing = [HUB_SPLITS[split][0] for split in HUB_SPLITS if split not in found]
    if found and missing:
        expected = "; ".join(f"{n}.parquet, {n}-*.parquet or {n}/*.parquet" for n in missing)
        raise DataError(f"CoNLL-2003 parquet files missing in {root.resolve()} ({expected})")
    return found


def _check_tag_column(path: Path, table: Any, column: str) -> None:
    import pyarrow as pa  # noqa: PLC0415 - present whenever pyarrow.parquet is

    kind = table.schema.field(column).type
    item = getattr(kind, "value_type", None)  # set on every list type
    if item is None or not pa.types.is_integer(item):
        found = kind if item is None else f"lists of {item}"
        raise DataError(
            f"{path}: column {column} holds {found}; expected lists of integer label ids "
            "(the hub's layout)"
        )


def read_parquet_split(path: Path) -> list[Sentence]:
    """Read one parquet file in the hub's layout; tag ids become label names (chunk/NER IOB2)."""
    pq = _parquet()
    try:
        table = pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow reports a bad file many ways
        raise DataError(f"{path}: not a readable parquet file ({_one_line(exc)})") from None
    columns = ["tokens", *(f"{task}_tags" for task in CONLL_TASKS)]
    absent = [c for c in columns if c not in table.column_names]
    if absent:
        raise DataError(
            f"{path}: column(s) {', '.join(absent)} missing; the hub's layout has "
            f"{', '.join(columns)} (found: {', '.join(table.column_names)})"
        )
    for column in columns[1:]:
        _check_tag_column(path, table, column)
    data = table.select(columns).to_pydict()
    sentences = []
    for row, tokens in enumerate(data["tokens"]):
        if not tokens or tokens[0] == "-DOCSTART-":
            continue
        tags = {
            task: _names(path, row, task, data[f"{task}_tags"][row], len(tokens))
            for task in CONLL_TASKS
        }
        sentences.append(Sentence(words=tuple(tokens), tags=tags, line=row))
    if not sentences:
        raise DataError(f"{path}: no sentences found (no rows, or only empty or -DOCSTART- rows)")
    return sentences


def _names(path: Path, row: int, task: str, ids: list[int] | None, n: int) -> tuple[str, ...]:
    labels = HUB_LABELS[task]
    ids = ids or []
    if len(ids) != n:
        raise DataError(f"{path}: row {row}: {len(ids)} {task}_tags for {n} tokens")
    for i in ids:
        if i is None or not 0 <= i < len(labels):
            raise DataError(
                f"{path}: row {row}: {task}_tags id {i} is outside 0..{len(labels) - 1} "
                f"(the hub's {len(labels)} {task} labels)"
            )
    names = tuple(labels[i] for i in ids)
    return iob1_to_iob2(names) if CONLL_COLUMNS[task].span else names


def download_parquet_branch() -> Path:
    """Download the hub's parquet copy to the Hugging Face cache; return its config folder."""
    _parquet()
    try:
        from huggingface_hub import snapshot_download  # noqa: PLC0415 - optional (hub extra)
    except ImportError:
        raise DataError(INSTALL_HINT) from None
    try:
        folder = snapshot_download(
            HUB_REPO,
            repo_type="dataset",
            revision=HUB_REVISION,
            allow_patterns=[f"{HUB_CONFIG}/*/*.parquet"],
        )
    except Exception as exc:  # noqa: BLE001 - offline, proxy, hub errors: one message
        raise DataError(
            f"data.source=hub could not download {HUB_REPO} (branch {HUB_REVISION}) from the "
            f"Hugging Face hub ({_one_line(exc)}). Offline, point data.root=PATH at a folder "
            "with train/validation/test parquet files in the hub's layout, or read the "
            "CoNLL-2003 text files with data.source=files."
        ) from None
    return Path(folder) / HUB_CONFIG


def load_conll_hub(
    root: Path | None = None, max_sentence_len: int | None = None
) -> dict[str, list[Sentence]]:
    """CoNLL-2003 from parquet files under ``root``, else from the hub's parquet branch.

    Returns ``{"train"|"valid"|"test": [Sentence, ...]}`` like :func:`load_conll`;
    ``max_sentence_len`` (the training cap, or None) only shapes the long-sentence warning.
    """
    _parquet()
    files = find_parquet_files(Path(root)) if root is not None else {}
    if not files:
        folder = download_parquet_branch()
        files = find_parquet_files(folder)
        if not files:
            raise DataError(f"{folder}: the download holds no parquet files of {HUB_REPO}")
    out: dict[str, list[Sentence]] = {}
    for split, paths in files.items():
        out[split] = []
        for path in paths:
            sentences = read_parquet_split(path)
            warn_long_sentences(sentences, path, split, max_sentence_len, rows=True)
            out[split] += sentences
    return out
