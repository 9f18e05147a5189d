"""Tiny generated fixtures in the real file formats (CoNLL-2003 text, MNIST idx files)."""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor

from mtlrun.data.conll import Sentence
from mtlrun.data.mnist3 import FOLDERS
from mtlrun.data.toy import generate_toy

CONLL_NAMES: dict[str, dict[str, str]] = {
    "txt": {"train": "train.txt", "valid": "valid.txt", "test": "test.txt"},
    "eng": {"train": "eng.train", "valid": "eng.testa", "test": "eng.testb"},
}
DOCSTART_LINE = "-DOCSTART- -X- -X- O"


def conll_text(sentences: Sequence[Sentence], docs_every: int = 0) -> str:
    """CoNLL-2003 text for ``sentences``: a -DOCSTART- header, then 4-column lines.

    ``docs_every > 0`` starts a new document (another -DOCSTART- line) every that many sentences.
    """
    lines = [DOCSTART_LINE, ""]
    for i, sentence in enumerate(sentences):
        if docs_every and i and i % docs_every == 0:
            lines += [DOCSTART_LINE, ""]
        tags = sentence.tags
        for j, word in enumerate(sentence.words):
            lines.append(f"{word} {tags['pos'][j]} {tags['chunk'][j]} {tags['ner'][j]}")
        lines.append("")
    return "\n".join(lines) + "\n"


def write_conll_dir(
    root: Path, n_sentences: dict[str, int] | None = None, seed: int = 0, names: str = "txt"
) -> Path:
    """Write train/valid/test CoNLL files under ``root`` (``names``: "txt" or "eng"); return root.

    Sentences come from the toy grammar; a second -DOCSTART- appears every 5 sentences.
    """
    sizes = n_sentences or {"train": 20, "valid": 8, "test": 8}
    data = generate_toy(sizes["train"], sizes["valid"], sizes["test"], seed=seed)
    root.mkdir(parents=True, exist_ok=True)
    for split, file_name in CONLL_NAMES[names].items():
        (root / file_name).write_text(conll_text(data[split], docs_every=5), encoding="utf-8")
    return root


def write_idx_images(path: Path, images: Tensor) -> Path:
    """Write uint8 images (N, H, W) as an idx3 file (magic 2051, big-endian sizes)."""
    n, rows, cols = images.shape
    header = struct.pack(">iiii", 2051, n, rows, cols)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + images.to(torch.uint8).contiguous().numpy().tobytes())
    return path


def write_idx_labels(path: Path, labels: Tensor | Sequence[int]) -> Path:
    """Write labels (N,) in 0..255 as an idx1 file (magic 2049, big-endian size)."""
    values = torch.as_tensor(labels).to(torch.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack(">ii", 2049, values.shape[0]) + values.numpy().tobytes())
    return path


def class_images(labels: Tensor, generator: torch.Generator, shift: int = 0) -> Tensor:
    """Noisy 28x28 uint8 images with a bright 6x6 blob whose place depends on the label.

    labels: (N,) int64 -> (N, 28, 28) uint8. ``shift`` moves all blobs, to tell tasks apart.
    """
    images = torch.randint(0, 60, (labels.shape[0], 28, 28), generator=generator)
    for i, label in enumerate(labels.tolist()):
        row = 2 + 12 * (label // 5) + shift
        col = 1 + 5 * (label % 5)
        images[i, row : row + 6, col : col + 6] += 180
    return images.clamp(0, 255).to(torch.uint8)


def _balanced_labels(n: int, generator: torch.Generator) -> Tensor:
    labels = torch.arange(n) % 10
    return labels[torch.randperm(n, generator=generator)]


def write_mnist_family(
    root: Path,
    tasks: Sequence[str] = ("mnist", "fashion", "kmnist"),
    n_train: int = 64,
    n_test: int = 40,
    missing: dict[str, list[str]] | None = None,
    seed: int = 0,
) -> Path:
    """Write ``<root>/<Folder>/raw/`` idx files for each task, all 10 classes present; return root.

    ``missing`` maps a task to file names to leave out (e.g. ``{"kmnist":
    ["train-images-idx3-ubyte"]}``).
    """
    missing = missing or {}
    generator = torch.Generator().manual_seed(seed)
    for k, task in enumerate(tasks):
        raw = root / FOLDERS[task] / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        for prefix, n in (("train", n_train), ("t10k", n_test)):
            labels = _balanced_labels(n, generator)
            images = class_images(labels, generator, shift=k)
            image_name, label_name = f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"
            if image_name not in missing.get(task, []):
                write_idx_images(raw / image_name, images)
            if label_name not in missing.get(task, []):
                write_idx_labels(raw / label_name, labels)
    return root


def write_conll_parquet(
    path: Path, sentences: Sequence[Sentence], labels: Mapping[str, Sequence[str]]
) -> Path:
    """Write sentences as one parquet file in the hub's CoNLL-2003 layout; return its path.

    Columns: ``id``, ``tokens`` and ``pos_tags``/``chunk_tags``/``ner_tags`` as integer ids,
    ``labels[task]`` listing the tag names in id order. Needs pyarrow.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    index = {task: {name: i for i, name in enumerate(names)} for task, names in labels.items()}
    columns: dict[str, list[object]] = {
        "id": [str(i) for i in range(len(sentences))],
        "tokens": [list(s.words) for s in sentences],
    }
    for task in ("pos", "chunk", "ner"):
        columns[f"{task}_tags"] = [[index[task][t] for t in s.tags[task]] for s in sentences]
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)
    return path


def write_conll_parquet_dir(
    root: Path,
    labels: Mapping[str, Sequence[str]],
    n_sentences: dict[str, int] | None = None,
    seed: int = 0,
    layout: str = "flat",
) -> dict[str, list[Sentence]]:
    """Write toy sentences as a parquet copy of CoNLL-2003 under ``root``; return them by split.

    ``layout="flat"``: ``train.parquet``, ``validation.parquet``, ``test.parquet``;
    ``layout="branch"``: ``<split>/0000.parquet`` as in the hub's parquet branch.
    """
    sizes = n_sentences or {"train": 20, "valid": 8, "test": 8}
    data = generate_toy(sizes["train"], sizes["valid"], sizes["test"], seed=seed)
    for split, hub_split in (("train", "train"), ("valid", "validation"), ("test", "test")):
        name = f"{hub_split}.parquet" if layout == "flat" else f"{hub_split}/0000.parquet"
        write_conll_parquet(root / name, data[split], labels)
    return data
