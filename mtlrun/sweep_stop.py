"""Stopping a sweep: a signal to the sweep's process stops the sweep (:class:`SweepProcess`),
and a job that runs in a process the sweep started watches that process (:func:`watch_sweep`):
when the sweep is stopped or its process is gone, the job stops after its mini-batch as if it
had received the signal, and the process ends once its job has written its result."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from mtlrun.errors import StorageError
from mtlrun.training.interrupt import SIGNALS, STOP
from mtlrun.training.run_dir import atomic_write

log = logging.getLogger(__name__)

# Written by the sweep's process when a signal stops the sweep; its jobs read it.
STOP_FILE = Path(".mtlrun") / "stop.json"
# "<host>:<pid>" of the sweep's process, set there for the jobs it starts.
PARENT_ENV = "MTLRUN_SWEEP_PARENT"
# Launchers whose jobs run in the sweep's process or in processes it starts on this box; a
# signal to the sweep's process stops their jobs. (A SLURM or Ray job is its scheduler's.)
LOCAL_LAUNCHERS = ("BasicLauncher", "JoblibLauncher", "submitit_launcher.LocalLauncher")
WATCH_S = 0.5  # how often a job looks whether its sweep was stopped or its process is gone


def _sweep_job() -> Any:
    """The Hydra config of the running job when it is a job of a sweep, else None."""
    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    return hydra_cfg if hydra_cfg.mode == RunMode.MULTIRUN else None


def _host_pid(value: str) -> tuple[str, int] | None:
    host, _, pid = value.rpartition(":")
    return (host, int(pid)) if host and pid.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is gone, not yet reaped
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


class SweepProcess:
    """The sweep's own process: the signal that stopped the sweep (None: none did).

    While the jobs run on a local launcher (:data:`LOCAL_LAUNCHERS`), the first SIGTERM or
    SIGINT to this process stops the sweep instead of killing it: it writes ``STOP_FILE``, the
    running jobs stop after their mini-batch and write their results (marked ``interrupted``),
    the jobs not started yet are not run, ``report.md`` is written, and ``mtlrun`` exits with
    128 + the signal's number. A second signal kills this process at once; its jobs then see
    that it is gone and stop the same way.
    """

    def __init__(self) -> None:
        self.signal: str | None = None
        self.root: Path | None = None
        self._previous: dict[signal.Signals, Any] = {}

    def start(self, root: Path, launcher_target: str) -> None:
        self.signal, self.root = None, root
        (root / STOP_FILE).unlink(missing_ok=True)  # an earlier run's, whose process is gone
        if not any(name in launcher_target for name in LOCAL_LAUNCHERS):
            os.environ.pop(PARENT_ENV, None)  # a SLURM or Ray job outlives this process
            return
        os.environ[PARENT_ENV] = f"{socket.gethostname()}:{os.getpid()}"  # for the jobs' processes
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.getsignal(s) for s in SIGNALS}
            for s in SIGNALS:
                signal.signal(s, self._on_signal)

    def end(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}
        if self.root is not None:
            (self.root / STOP_FILE).unlink(missing_ok=True)

    def stopped_by(self, name: str) -> None:
        """A job of this process (the basic launcher's) was stopped by the signal ``name``."""
        self.signal = self.signal or name

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        sig = signal.Signals(signum)
        # A second signal (to the sweep, or passed on by the handler of a run of this process
        # that the first one is stopping): end now; the jobs see that this process is gone.
        if self.signal is not None or STOP.requested:
            signal.signal(sig, signal.SIG_DFL)
            signal.raise_signal(sig)
            return
        self.signal = sig.name
        if self.root is not None:
            stop = {"host": socket.gethostname(), "pid": os.getpid(), "signal": sig.name}
            try:
                (self.root / STOP_FILE).parent.mkdir(parents=True, exist_ok=True)
                atomic_write(self.root / STOP_FILE, lambda tmp: tmp.write_text(json.dumps(stop)))
            except (OSError, StorageError) as e:
                log.error("could not tell the jobs to stop (%s); send %s again", e, sig.name)
        log.warning(
            "%s received: the running jobs stop after their mini-batch and keep their results, "
            "the others do not start (send it again to stop at once)",
            sig.name,
        )


SWEEP = SweepProcess()


class _Watchdog(threading.Thread):
    """In a process that the sweep's process started (a joblib worker, a local submitit job):
    while a job runs, stop it (``STOP``, as a signal would) once the sweep was stopped
    (``STOP_FILE``) or the sweep's process is gone (SIGHUP); between jobs, end this process
    once the sweep's process is gone, so that no worker outlives its sweep."""

    def __init__(self, parent: int, child: bool) -> None:
        super().__init__(name="mtlrun-sweep-watchdog", daemon=True)
        self.parent, self.child = parent, child
        self.stop_file: Path | None = None
        self.running = False

    def gone(self) -> bool:
        # A child is handed to another parent when its parent ends (zombie or not).
        return os.getppid() != self.parent if self.child else not _alive(self.parent)

    def reason(self) -> tuple[str, str] | None:
        """(signal name, why) when the job must stop, else None."""
        if self.gone():
            return "SIGHUP", f"the sweep's process (pid {self.parent}) ended"
        try:
            stop = json.loads(self.stop_file.read_text()) if self.stop_file else None
        except (OSError, ValueError):
            return None
        if not isinstance(stop, dict) or stop.get("pid") != self.parent:
            return None  # no stop, or another sweep process's (an earlier run of this sweep)
        name = stop.get("signal")
        if stop.get("host") != socket.gethostname() or name not in {s.name for s in SIGNALS}:
            return None
        return str(name), f"the sweep was stopped by {name}"

    def run(self) -> None:
        while True:
            time.sleep(WATCH_S)
            found = self.reason()
            if found is None:
                continue
            if self.running:
                if not STOP.requested:
                    STOP.signal = found[0]
            elif self.gone():
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(128 + signal.SIGHUP)


_WATCHDOG: list[_Watchdog] = []  # this process's, once a job started it


def _between_jobs(signum: int, frame: FrameType | None) -> None:
    """SIGTERM or SIGINT in a job process that the sweep started, outside the run's handlers:
    ignored between jobs; during a run it is the second signal (passed on by the run's
    handler, :func:`mtlrun.training.interrupt.stop_on_signals`), which ends the process."""
    if _WATCHDOG and _WATCHDOG[0].running:
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)


def _watchdog() -> _Watchdog | None:
    """This job process's watchdog, started with its first job; None when the job runs in the
    sweep's own process, or in one that a local launcher did not start (SLURM, Ray).

    Between jobs such a process ignores SIGTERM and SIGINT (:func:`_between_jobs`; during a
    run, the run's handlers take them): a signal to the whole process group (Ctrl-C, a
    scheduler) also reaches the sweep's process, which stops the jobs, and an idle worker that
    died of it would break the pool.
    """
    hydra_cfg = _sweep_job()
    if hydra_cfg is None:
        return None
    if not _WATCHDOG:
        parent = _host_pid(os.environ.get(PARENT_ENV, ""))
        if parent is None or parent[0] != socket.gethostname() or parent[1] == os.getpid():
            return None
        # a joblib worker is the sweep process's child; a local submitit job, its grandchild
        _WATCHDOG.append(_Watchdog(parent[1], child=os.getppid() == parent[1]))
        _WATCHDOG[0].start()
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                signal.signal(s, _between_jobs)
    _WATCHDOG[0].stop_file = Path(hydra_cfg.sweep.dir) / STOP_FILE
    return _WATCHDOG[0]


def stop_reason() -> str | None:
    """Why this sweep job must not start (the sweep was stopped, its process is gone), or None."""
    if SWEEP.signal is not None:
        return f"the sweep was stopped by {SWEEP.signal}"
    watchdog = _watchdog()
    found = watchdog.reason() if watchdog is not None else None
    return found[1] if found is not None else None


@contextmanager
def watch_sweep() -> Iterator[None]:
    """Run a sweep job under its process's watchdog (see :class:`_Watchdog`), if it has one."""
    watchdog = _watchdog()
    if watchdog is None:
        yield
        return
    watchdog.running = True
    try:
        yield
    finally:
        watchdog.running = False


def job_stopped(signal_name: str | None) -> str | None:
    """A job ended ``interrupted`` by the signal ``signal_name``: why, when the sweep was
    stopped (a job of the sweep's own process stops the sweep with it), else None."""
    own = _host_pid(os.environ.get(PARENT_ENV, "")) == (socket.gethostname(), os.getpid())
    if signal_name and own:
        SWEEP.stopped_by(signal_name)
    return stop_reason()
