"""Length-bucketed training batches for sentences (``data.batching=buckets``).

A batch is padded to its longest sentence, and the BiLSTM and the character CNN pay for every
padded position. Uniformly shuffled batches of 10 CoNLL-2003 training sentences are about 60 %
padding; batches drawn from sentences of similar length are about 14 %.

The scheme is the one of the sampler Sun et al.'s code (AAAI 2020, the ``sparse_imp``
baseline) uses for its second and later passes over a task's data (fastNLP's
``BucketSampler``, 10 buckets): sort the
sentences by length, cut the sorted list into ``buckets`` parts of equal count (the last one
takes the remainder), and walk the parts from short to long. Each part, together with the
sentences left over from the part before, is shuffled and cut into full batches; what does
not fill a batch moves on to the next part, and the last leftover forms one smaller batch.
The batches are then shuffled. Every sentence is in exactly one batch, and there are
``ceil(n / batch_size)`` batches, as with uniform shuffling.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mtlrun.errors import ConfigError

BATCHING = ("random", "buckets")


def check_batching(batching: str, buckets: int) -> None:
    """Refuse a bad ``data.batching`` / ``data.buckets`` pair in the user's key names."""
    if batching not in BATCHING:
        raise ConfigError(
            f"`data.batching` should be one of {list(BATCHING)}. Found `data.batching = {batching}`."
        )
    if buckets < 1:
        raise ConfigError(
            f"`data.buckets` should be an integer >= 1. Found `data.buckets = {buckets}`."
        )


def length_buckets(
    lengths: Sequence[int], batch_size: int, buckets: int, generator: torch.Generator
) -> list[list[int]]:
    """Batches of indices into ``lengths`` drawn by length buckets (see the module docstring).

    Sentences of equal length keep their index order in the sort, so the batches depend only
    on ``lengths``, ``batch_size``, ``buckets`` and the generator's state. With fewer
    sentences than buckets, the whole set is one bucket.
    """
    n = len(lengths)
    ranked = sorted(range(n), key=lambda i: (lengths[i], i))
    parts = max(1, min(buckets, n))
    per_part = n // parts
    batches: list[list[int]] = []
    pending: list[int] = []
    for part in range(parts):
        end = n if part == parts - 1 else per_part * (part + 1)
        pending += ranked[per_part * part : end]
        shuffled = torch.randperm(len(pending), generator=generator).tolist()
        pending = [pending[k] for k in shuffled]
        full = len(pending) // batch_size
        batches += [pending[k * batch_size : (k + 1) * batch_size] for k in range(full)]
        pending = pending[full * batch_size :]
    if pending:
        batches.append(pending)
    return [batches[k] for k in torch.randperm(len(batches), generator=generator).tolist()]
