"""TensorBoard event files mirroring history.csv (``trainer.tensorboard=true``).

:class:`TensorBoardLog` turns the per-epoch rows of history.csv (see
:func:`mtlrun.training.loop.fit`) into TensorBoard scalars under ``<run_dir>/tensorboard/``:

* global step = the row's 1-based index in the history, so the phases of a run (``warmup``,
  ``search``, ``imp/pos/round3``, ``train`` …) follow each other on one axis;
* every finite number of a row becomes a scalar under its history key as the tag
  (``lr``, ``train/loss/<task>``, ``valid/<task>/<metric>``, ``valid/score``,
  ``weight/<task>``, ``kkt/*``, ``time/*`` …); bools are logged as 0/1;
* ``epoch`` (the epoch within its phase, already given by the step) is not logged, nor are
  NaN/±inf values, strings or other non-numeric values;
* the phase name is logged as a text summary (tag ``phase``) at the step of the first row of
  each phase, i.e. whenever it differs from the previous row's phase.

``logger=tensorboard`` (and ``trainer.tensorboard=true``, its alias) is
:class:`mtlrun.training.trackers.TensorBoardTracker`: these scalars, then at the end of the run
the test metrics and the flattened config in TensorBoard's HParams tab.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from mtlrun.errors import ConfigError

INSTALL_HINT = (
    "`logger=tensorboard` (or `trainer.tensorboard=true`) needs the tensorboard package: "
    "pip install 'mtlrun[tensorboard]'"
)
SKIPPED_KEYS = frozenset({"epoch", "phase"})  # the step says the epoch; the phase goes as text


class HistorySteps:
    """Which rows of a history, re-passed whole after every epoch, are new, at which step.

    Row ``i`` (0-based) of the list is at global step ``i + 1``. A list shorter than the rows
    seen so far is taken as a new list that restarted (e.g. one phase's rows only): its rows
    continue the step axis after the last step instead of overwriting earlier steps.
    """

    def __init__(self, logged: int = 0) -> None:
        self.logged = logged  # rows of the current list already seen
        self.offset = 0  # steps before the current list

    def new(self, history: Sequence[Mapping[str, Any]]) -> list[tuple[int, int]]:
        """``(index in history, global step)`` of each row not seen yet; marks them seen."""
        if len(history) < self.logged:
            self.offset += self.logged
            self.logged = 0
        out = [(i, self.offset + i + 1) for i in range(self.logged, len(history))]
        self.logged = len(history)
        return out

    @property
    def last(self) -> int:
        """The last step seen (0 before any row)."""
        return self.offset + self.logged


def row_numbers(row: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers of a history row by key (see :func:`scalar`), epoch and phase aside."""
    out = {}
    for key, value in row.items():
        number = None if key in SKIPPED_KEYS else scalar(value)
        if number is not None:
            out[str(key)] = number
    return out


class TensorBoardLog:
    """Logs history.csv rows as TensorBoard scalars, one global step per row.

    ``already_logged`` is for resuming: the number of rows of the history an earlier process of
    this run logged into the same folder (the length of the history restored from the
    checkpoint). :meth:`rows` then skips those rows, and the writer is opened with SummaryWriter's
    ``purge_step = already_logged + 1``: TensorBoard discards the events the earlier process
    left at later steps (epochs it logged but never checkpointed), so every step ends up with
    exactly one event. With ``already_logged=0`` on a folder that already holds event files (a
    run started over), all earlier events are purged. When the folder holds no event files yet
    (the earlier process ran without TensorBoard) nothing can be duplicated: ``already_logged``
    is ignored and the first call of :meth:`rows` logs the whole history from step 1.

    The event file names start with the creation time in seconds; TensorBoard reads the files
    in name order, so the purge applies to the files of earlier processes (a resume is always a
    later second). The folder and its event file are made on the first write, so a run refused
    before its first epoch (a data error) leaves none.
    """

    def __init__(self, run_dir: Path, already_logged: int = 0) -> None:
        if already_logged < 0:
            raise ValueError(f"already_logged should be >= 0, got {already_logged}")
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(INSTALL_HINT) from None
        self._summary_writer = SummaryWriter
        self.log_dir = Path(run_dir) / "tensorboard"
        earlier = self.log_dir.is_dir() and any(self.log_dir.glob("events.out.tfevents.*"))
        # Steps 1..logged of the current history list are in the event files.
        self.steps = HistorySteps(already_logged if earlier else 0)
        self._writer: Any = None
        self._closed = False

    @property
    def writer(self) -> Any:
        """The SummaryWriter, opened on first use."""
        if self._closed:
            raise RuntimeError("TensorBoardLog used after close()")
        if self._writer is None:
            # Every writer starts with a SessionLog.START at step logged + 1: TensorBoard's
            # server takes the first START of a run as its start and each later one as a
            # restart that discards the earlier events at that step or later.
            purge = self.steps.last + 1
            self._writer = self._summary_writer(log_dir=str(self.log_dir), purge_step=purge)
        return self._writer

    def rows(self, history: Sequence[Mapping[str, Any]]) -> None:
        """Log the rows of ``history`` not logged yet, then flush (a live TensorBoard sees them).

        ``history`` is the whole history so far, re-passed after every epoch; row ``i``
        (0-based) is logged at step ``i + 1``. A list shorter than the rows logged so far is
        taken as a new list that restarted (e.g. one phase's rows only): its rows continue the
        step axis after the last step logged instead of overwriting earlier steps.
        """
        if self._closed:
            raise RuntimeError("TensorBoardLog.rows() called after close()")
        writer = self.writer
        for i, step in self.steps.new(history):
            row = history[i]
            phase = row.get("phase")
            before = history[i - 1].get("phase") if i > 0 else None
            if phase is not None and (i == 0 or phase != before):
                writer.add_text("phase", str(phase), global_step=step)
            for key, number in row_numbers(row).items():
                writer.add_scalar(key, number, global_step=step)
        writer.flush()

    def close(self) -> None:
        """Flush and close the event file; closing twice is harmless."""
        if not self._closed:
            if self._writer is not None:
                self._writer.close()
            self._closed = True

    def __enter__(self) -> TensorBoardLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def scalar(value: Any) -> float | None:
    """``value`` as a finite float, or None when it is not a finite number.

    Python and numpy numbers count, bools as 0/1, 0-d tensors and numpy arrays by their item;
    strings, None, NaN, ±inf and anything else do not.
    """
    if not isinstance(value, numbers.Real) and callable(getattr(value, "item", None)):
        try:
            value = value.item()
        except (ValueError, RuntimeError):  # more than one element
            return None
    if not isinstance(value, numbers.Real):
        return None
    number = float(value)
    return number if math.isfinite(number) else None
