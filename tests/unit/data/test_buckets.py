"""Length-bucketed batches (data.batching=buckets): the sampler of Sun et al.'s code."""

from __future__ import annotations

import math

import pytest
import torch

from mtlrun.data.buckets import check_batching, length_buckets
from mtlrun.data.tagging import toy_data
from mtlrun.errors import ConfigError


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_parts_that_fill_whole_batches_give_batches_of_one_part() -> None:
    # Ranks by length: 1 (len 1), 3 (2), 4 (3), 2 (4), 0 (5), 5 (6); three parts of two.
    batches = length_buckets([5, 1, 4, 2, 3, 6], batch_size=2, buckets=3, generator=_gen())
    assert {frozenset(b) for b in batches} == {
        frozenset({1, 3}),
        frozenset({2, 4}),
        frozenset({0, 5}),
    }


def test_leftovers_move_on_to_the_next_part_and_end_in_one_smaller_batch() -> None:
    lengths = list(range(7))  # index == rank; parts {0, 1, 2} and {3, 4, 5, 6}
    for seed in range(20):
        batches = length_buckets(lengths, batch_size=2, buckets=2, generator=_gen(seed))
        assert sorted(len(b) for b in batches) == [1, 2, 2, 2]
        first_part = [b for b in batches if len(b) == 2 and set(b) <= {0, 1, 2}]
        assert len(first_part) == 1  # the first part's only full batch; its leftover moved on


@pytest.mark.parametrize(("n", "batch", "buckets"), [(1, 10, 10), (9, 10, 10), (95, 10, 4),
                                                      (100, 10, 10), (1403, 10, 10), (57, 1, 3)])  # fmt: skip
def test_every_index_once_and_as_many_batches_as_a_shuffle(
    n: int, batch: int, buckets: int
) -> None:
    lengths = torch.randint(1, 60, (n,), generator=_gen(n)).tolist()
    batches = length_buckets(lengths, batch, buckets, _gen(1))
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(n))
    assert len(batches) == math.ceil(n / batch)
    assert sum(len(b) < batch for b in batches) <= 1


def test_batches_are_drawn_from_narrow_length_ranges() -> None:
    lengths = list(range(1, 101))  # 10 parts of 10, each exactly one batch of 10
    batches = length_buckets(lengths, batch_size=10, buckets=10, generator=_gen())
    assert all(max(lengths[i] for i in b) - min(lengths[i] for i in b) == 9 for b in batches)
    # ...while a uniform shuffle's batches span most of the range
    shuffled = torch.randperm(100, generator=_gen()).tolist()
    spans = [max(shuffled[k : k + 10]) - min(shuffled[k : k + 10]) for k in range(0, 100, 10)]
    assert sum(spans) / len(spans) > 50


def test_one_bucket_is_a_shuffle_and_ties_keep_index_order() -> None:
    lengths = [3] * 12
    a = length_buckets(lengths, 4, 1, _gen(5))
    b = length_buckets(lengths, 4, 1, _gen(5))
    assert a == b  # equal lengths: the sort is stable, the draw decides alone
    assert a != length_buckets(lengths, 4, 1, _gen(6))
    assert sorted(i for batch in a for i in batch) == list(range(12))


def test_the_batches_depend_only_on_the_generator() -> None:
    lengths = torch.randint(1, 40, (200,), generator=_gen(3)).tolist()
    assert length_buckets(lengths, 10, 10, _gen(7)) == length_buckets(lengths, 10, 10, _gen(7))
    assert length_buckets(lengths, 10, 10, _gen(7)) != length_buckets(lengths, 10, 10, _gen(8))


@pytest.mark.parametrize(
    ("batching", "buckets", "message"),
    [
        ("sorted", 10, "`data.batching` should be one of ['random', 'buckets']. "
                       "Found `data.batching = sorted`."),
        ("buckets", 0, "`data.buckets` should be an integer >= 1. Found `data.buckets = 0`."),
    ],
)  # fmt: skip
def test_bad_settings_are_refused_in_the_users_keys(
    batching: str, buckets: int, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        check_batching(batching, buckets)
    assert str(info.value) == message
    with pytest.raises(ConfigError):
        toy_data(n_train=5, n_valid=2, n_test=2, batching=batching, buckets=buckets)


# ------------------------------------------------------------------ TaggingData


def _epoch_lengths(data, batch: int, epoch: int, steps: int | None = None) -> list[list[int]]:
    groups = data.train_steps(batch, epoch, seed=0, steps=steps)
    return [group[0][0].lengths.tolist() for group in groups]


def test_a_bucketed_epoch_reads_every_sentence_once_with_less_padding() -> None:
    plain = toy_data(n_train=400, n_valid=5, n_test=5)
    bucketed = toy_data(n_train=400, n_valid=5, n_test=5, batching="buckets", buckets=10)
    assert bucketed.steps_per_epoch(8) == plain.steps_per_epoch(8) == 50
    total = sum(len(words) for words, _, _ in plain._encoded["train"])
    padded = {}
    for name, data in (("plain", plain), ("bucketed", bucketed)):
        epoch = _epoch_lengths(data, 8, epoch=1)
        assert len(epoch) == 50 and sum(map(sum, epoch)) == total
        padded[name] = sum(max(b) * len(b) for b in epoch)
    assert padded["bucketed"] < 0.9 * padded["plain"]  # toy lengths are 6-20 tokens
    assert _epoch_lengths(bucketed, 8, 1) == _epoch_lengths(bucketed, 8, 1)
    assert _epoch_lengths(bucketed, 8, 1) != _epoch_lengths(bucketed, 8, 2)


def test_bucketed_steps_beyond_one_pass_start_another_pass() -> None:
    data = toy_data(n_train=40, n_valid=5, n_test=5, batching="buckets", buckets=4)
    epoch = _epoch_lengths(data, 8, epoch=0, steps=12)
    assert len(epoch) == 12 and all(len(b) == 8 for b in epoch)


def test_bucketed_batching_is_recorded_as_a_deviation() -> None:
    data = toy_data(n_train=40, n_valid=5, n_test=5, batching="buckets", buckets=4)
    assert data.deviations == [
        "toy: training batches drawn from 4 length buckets (data.batching=buckets, the sampler "
        "of Sun et al.'s code) instead of uniformly shuffled sentences"
    ]
    assert toy_data(n_train=40, n_valid=5, n_test=5).deviations == []


def test_random_batching_keeps_the_batches_of_before() -> None:
    """The default draws exactly what train_steps drew before data.batching existed: one
    randperm per pass, cut into consecutive slices (across passes when steps ask for more)."""
    data = toy_data(n_train=30, n_valid=5, n_test=5)
    lengths = [len(words) for words, _, _ in data._encoded["train"]]
    for steps in (None, 2, 9):
        g = torch.Generator().manual_seed(0 * 100_003 + 3)
        order = torch.randperm(30, generator=g).tolist()
        n = steps or 4
        while len(order) < n * 8:
            order += torch.randperm(30, generator=g).tolist()
        expected = [[lengths[i] for i in order[k * 8 : (k + 1) * 8]] for k in range(n)]
        assert _epoch_lengths(data, 8, epoch=3, steps=steps) == expected
