"""Graceful stop on SIGTERM / SIGINT: finish the step, keep the finished result.

Schedulers (SLURM, ``timeout``) send SIGTERM some time before they kill a job. While
:func:`stop_on_signals` is active, the first SIGTERM or SIGINT only sets :data:`STOP`: the trainer
ends the current mini-batch, keeps the last complete epoch's checkpoint (so ``trainer.resume``
redoes the cut epoch), and the run evaluates its best weights and writes ``metrics.json`` marked
``interrupted``. A second signal stops at once, as without the handler.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopFlag:
    """Which signal asked the run to stop (None: none did)."""

    def __init__(self) -> None:
        self.signal: str | None = None

    @property
    def requested(self) -> bool:
        return self.signal is not None


STOP = StopFlag()


@contextmanager
def stop_on_signals() -> Iterator[StopFlag]:
    """Install the graceful handlers for the duration of a run (main thread only)."""
    STOP.signal = None
    if threading.current_thread() is not threading.main_thread():
        yield STOP
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS}

    def handler(signum: int, frame: FrameType | None) -> None:
        sig = signal.Signals(signum)
        name = sig.name
        if STOP.requested:  # a second signal: the default behaviour
            signal.signal(sig, previous[sig])
            signal.raise_signal(signum)
            return
        STOP.signal = name
        log.warning(
            "%s received: stopping after this mini-batch and writing the result "
            "(send it again to stop at once)",
            name,
        )

    for s in SIGNALS:
        signal.signal(s, handler)
    try:
        yield STOP
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
