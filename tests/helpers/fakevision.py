"""Tiny generated files in torchvision's own layouts: CIFAR-10 pickles, SVHN ``.mat``, EMNIST
idx files. Each image holds a bright square whose place (and, in colour, whose channel) depends
on its label, so a few training steps learn them."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from tests.helpers.fakedata import write_idx_images, write_idx_labels

CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip


def class_patterns(labels: Tensor, channels: int, size: int, seed: int) -> Tensor:
    """uint8 (N, C, H, W): noise with a bright 8x8 square at a label-dependent place; in
    colour, label parity also picks the channel that is brightest."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 50, (len(labels), channels, size, size), generator=g)
    for i, label in enumerate(labels.tolist()):
        row, col = 2 + 10 * ((label // 4) % 3), 2 + 7 * (label % 4)
        bright = slice(None) if channels == 1 else slice(label % channels, label % channels + 1)
        images[i, bright, row : row + 8, col : col + 8] += 200
    return images.clamp(0, 255).to(torch.uint8)


def balanced_labels(n: int, n_classes: int, seed: int) -> Tensor:
    labels = torch.arange(n) % n_classes
    return labels[torch.randperm(n, generator=torch.Generator().manual_seed(seed))]


def write_cifar10(root: Path, n_train: int = 50, n_test: int = 20, seed: int = 0) -> Tensor:
    """``root/cifar-10-batches-py/``: data_batch_1..5, test_batch, batches.meta, pickled as the
    published archive holds them (rows of 3072 bytes, R then G then B planes; ``labels``
    lists). Returns the training images (N, 3, 32, 32) in file order."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    train_labels = balanced_labels(n_train, 10, seed)
    train = class_patterns(train_labels, 3, 32, seed)
    cuts = np.array_split(np.arange(n_train), 5)
    for k, idx in enumerate(cuts, start=1):
        batch = {
            "batch_label": f"training batch {k} of 5",
            "labels": train_labels[idx].tolist(),
            "data": train[idx].reshape(len(idx), -1).numpy(),
            "filenames": [f"img_{i}.png" for i in idx],
        }
        (folder / f"data_batch_{k}").write_bytes(pickle.dumps(batch))
    test_labels = balanced_labels(n_test, 10, seed + 1)
    test = class_patterns(test_labels, 3, 32, seed + 1)
    batch = {"labels": test_labels.tolist(), "data": test.reshape(n_test, -1).numpy()}
    (folder / "test_batch").write_bytes(pickle.dumps(batch))
    meta = {"label_names": CIFAR10_CLASSES, "num_cases_per_batch": n_train // 5}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))
    return train


def write_svhn(root: Path, split: str = "train", n: int = 40, seed: int = 0) -> Tensor:
    """``root/<split>_32x32.mat`` as SVHN publishes it: X (32, 32, 3, N) uint8, y (N, 1) with
    digit 0 written as label 10. Returns the images (N, 3, 32, 32) and labels 0..9 in order."""
    from scipy.io import savemat

    labels = balanced_labels(n, 10, seed)
    images = class_patterns(labels, 3, 32, seed)
    y = labels.numpy().copy()
    y[y == 0] = 10
    root.mkdir(parents=True, exist_ok=True)
    savemat(
        root / f"{split}_32x32.mat",
        {"X": images.permute(2, 3, 1, 0).numpy(), "y": y.reshape(-1, 1).astype(np.uint8)},
    )
    return images


def write_emnist(
    root: Path, split: str = "letters", n_train: int = 60, n_test: int = 30, seed: int = 0
) -> Path:
    """``root/EMNIST/raw/emnist-<split>-{train,test}-{images-idx3,labels-idx1}-ubyte``; letters
    are labelled 1..26 as in EMNIST (class 0 is "N/A")."""
    raw = root / "EMNIST" / "raw"
    first, n_classes = (1, 26) if split == "letters" else (0, 10)
    for part, n in (("train", n_train), ("test", n_test)):
        labels = balanced_labels(n, n_classes, seed) + first
        images = class_patterns(labels, 1, 28, seed)[:, 0]
        write_idx_images(raw / f"emnist-{split}-{part}-images-idx3-ubyte", images)
        write_idx_labels(raw / f"emnist-{split}-{part}-labels-idx1-ubyte", labels)
        seed += 1
    return root
