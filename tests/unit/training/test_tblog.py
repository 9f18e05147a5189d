"""TensorBoard mirror of history.csv: tags, steps and values read back from the event files."""

from __future__ import annotations

import importlib.util
import math
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from mtlrun.errors import ConfigError
from mtlrun.training.tblog import INSTALL_HINT, TensorBoardLog, scalar

# tensorboard is optional: the tests that write and read event files skip without it.
needs_tensorboard = pytest.mark.skipif(
    importlib.util.find_spec("tensorboard") is None, reason="needs the tensorboard package"
)

# Values exactly representable in float32 (TensorBoard stores scalars as float32).
HISTORY: list[dict[str, Any]] = [
    {"phase": "warmup", "epoch": 1, "lr": 0.5, "valid/pos/accuracy": 0.25, "note": "x"},
    {"phase": "train", "epoch": 1, "lr": 0.25, "valid/pos/accuracy": 0.5, "kkt/checked": 3},
    {
        "phase": "train",
        "epoch": 2,
        "lr": 0.125,
        "valid/pos/accuracy": 0.75,
        "kkt/checked": math.nan,
    },
    {"phase": "train", "epoch": 3, "lr": 0.0625, "valid/pos/accuracy": 1.0, "hybrid/on": True},
]


def read(run_dir: Path) -> Any:
    """The run's events as the classic EventAccumulator reads them (scalars as ScalarEvents)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    return acc


def points(acc: Any, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def served(run_dir: Path) -> Any:
    """The reader the TensorBoard server uses (it also purges text events on a restart)."""
    from tensorboard.backend.event_processing import plugin_event_accumulator

    acc = plugin_event_accumulator.EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    return acc


def served_points(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.util import tensor_util

    events = served(run_dir).Tensors(tag)
    return [(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in events]


def phases(run_dir: Path) -> list[tuple[int, str]]:
    """The phase text summaries, as TensorBoard's Text tab shows them."""
    events = served(run_dir).Tensors("phase/text_summary")
    return [(e.step, e.tensor_proto.string_val[0].decode()) for e in events]


def later_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stamp new event files 60 s later: a resume runs in a later second than the first run.

    TensorBoard reads a folder's event files in name order, and the name starts with the
    creation second; within one second a per-process counter (not zero-padded) decides.
    """
    from tensorboard.summary.writer import event_file_writer

    clock = time.time
    monkeypatch.setattr(event_file_writer, "time", SimpleNamespace(time=lambda: clock() + 60))


@needs_tensorboard
def test_rows_logged_under_their_keys_at_one_based_steps(tmp_path: Path) -> None:
    with TensorBoardLog(tmp_path) as tb:
        tb.rows(HISTORY)
    acc = read(tmp_path)
    assert sorted(acc.Tags()["scalars"]) == ["hybrid/on", "kkt/checked", "lr", "valid/pos/accuracy"]
    assert points(acc, "valid/pos/accuracy") == [(1, 0.25), (2, 0.5), (3, 0.75), (4, 1.0)]
    assert points(acc, "lr") == [(1, 0.5), (2, 0.25), (3, 0.125), (4, 0.0625)]
    assert points(acc, "kkt/checked") == [(2, 3.0)]  # the NaN of step 3 is skipped
    assert points(acc, "hybrid/on") == [(4, 1.0)]  # bool -> 0/1
    assert phases(tmp_path) == [(1, "warmup"), (2, "train")]  # once per phase change


@needs_tensorboard
def test_incremental_calls_log_each_row_once(tmp_path: Path) -> None:
    history: list[dict[str, Any]] = []
    with TensorBoardLog(tmp_path) as tb:
        for row in HISTORY:
            history.append(row)
            tb.rows(history)  # the whole history, re-passed after every epoch
            tb.rows(history)  # nothing new: nothing logged
            # Flushed after every call: a reader sees the rows so far.
            assert [s for s, _ in points(read(tmp_path), "lr")] == list(range(1, len(history) + 1))
    acc = read(tmp_path)
    assert points(acc, "valid/pos/accuracy") == [(1, 0.25), (2, 0.5), (3, 0.75), (4, 1.0)]
    assert phases(tmp_path) == [(1, "warmup"), (2, "train")]


@needs_tensorboard
def test_shorter_history_continues_the_step_axis(tmp_path: Path) -> None:
    with TensorBoardLog(tmp_path) as tb:
        tb.rows(HISTORY[:3])
        tb.rows(HISTORY[3:])  # a list that restarted: its row 0 goes to step 4
    acc = read(tmp_path)
    assert points(acc, "lr") == [(1, 0.5), (2, 0.25), (3, 0.125), (4, 0.0625)]
    assert phases(tmp_path) == [(1, "warmup"), (2, "train"), (4, "train")]


@needs_tensorboard
def test_resume_purges_unsaved_steps_and_does_not_duplicate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    crashed = [*HISTORY[:3], {"phase": "train", "epoch": 3, "lr": 9.0, "valid/pos/accuracy": 9.0}]
    with TensorBoardLog(tmp_path) as tb:
        tb.rows(crashed)  # step 4 logged, but the checkpoint holds only 3 rows
    later_files(monkeypatch)
    with TensorBoardLog(tmp_path, already_logged=3) as tb:
        tb.rows(HISTORY[:3])  # the restored rows: already in the event files
        tb.rows(HISTORY)
    assert len(list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))) == 2
    acc = read(tmp_path)
    assert points(acc, "valid/pos/accuracy") == [(1, 0.25), (2, 0.5), (3, 0.75), (4, 1.0)]
    assert points(acc, "lr") == [(1, 0.5), (2, 0.25), (3, 0.125), (4, 0.0625)]
    assert points(acc, "kkt/checked") == [(2, 3.0)]
    assert served_points(tmp_path, "lr") == [(1, 0.5), (2, 0.25), (3, 0.125), (4, 0.0625)]
    assert phases(tmp_path) == [(1, "warmup"), (2, "train")]


@needs_tensorboard
def test_start_over_purges_all_earlier_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with TensorBoardLog(tmp_path) as tb:
        tb.rows([{"phase": "old", "epoch": 1, "lr": 7.0, "old/key": 1.0}] * 5)
    later_files(monkeypatch)
    with TensorBoardLog(tmp_path) as tb:
        tb.rows(HISTORY[:2])
    acc = read(tmp_path)
    assert points(acc, "lr") == [(1, 0.5), (2, 0.25)]
    assert points(acc, "old/key") == []
    assert served_points(tmp_path, "lr") == [(1, 0.5), (2, 0.25)]
    assert phases(tmp_path) == [(1, "warmup"), (2, "train")]


@needs_tensorboard
def test_resume_without_earlier_events_logs_the_whole_history(tmp_path: Path) -> None:
    with TensorBoardLog(tmp_path, already_logged=3) as tb:  # the first run had no TensorBoard
        tb.rows(HISTORY)
    acc = read(tmp_path)
    assert points(acc, "valid/pos/accuracy") == [(1, 0.25), (2, 0.5), (3, 0.75), (4, 1.0)]
    assert phases(tmp_path) == [(1, "warmup"), (2, "train")]


@needs_tensorboard
def test_close_is_idempotent_and_rows_after_close_fail(tmp_path: Path) -> None:
    tb = TensorBoardLog(tmp_path)
    tb.close()
    tb.close()
    with pytest.raises(RuntimeError, match="after close"):
        tb.rows(HISTORY)


def test_negative_already_logged_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="already_logged"):
        TensorBoardLog(tmp_path, already_logged=-1)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (3, 3.0),
        (0.5, 0.5),
        (True, 1.0),
        (False, 0.0),
        (np.float32(0.25), 0.25),
        (np.int64(4), 4.0),
        (torch.tensor(0.5), 0.5),
        (math.nan, None),
        (-math.inf, None),
        (np.float64("nan"), None),
        ("0.5", None),
        (None, None),
        (torch.ones(2), None),
        ([1.0], None),
    ],
)
def test_scalar(value: Any, expected: float | None) -> None:
    assert scalar(value) == expected


def test_missing_tensorboard_is_a_config_error_with_the_install_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import -> ImportError
    with pytest.raises(ConfigError) as raised:
        TensorBoardLog(tmp_path)
    assert str(raised.value) == INSTALL_HINT
    assert "pip install 'mtlrun[tensorboard]'" in str(raised.value)
    assert "\n" not in str(raised.value)
    assert not (tmp_path / "tensorboard").exists()
