"""A run folder belongs to one run: naming, exclusive ownership, and leaving nothing behind.

* :func:`safe_dirname` turns Hydra's ``override_dirname`` into a folder name that is readable
  while it is short and safe, and a stable hash otherwise (file systems cap a name at 255 bytes;
  a value such as ``data.root=../../x`` must not move the run out of ``outputs/``).
* :class:`RunFolder` takes an exclusive lock on the folder for the duration of the run and
  refuses a folder that holds another run's result or resumable state (unless resuming it).
* :func:`discard_if_empty` removes a folder a rejected run never wrote into.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from mtlrun.errors import ConfigError, StorageError

log = logging.getLogger(__name__)

try:  # POSIX advisory locks; elsewhere runs go unlocked
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

# The readable part of a run folder's name stays well below the 255-byte cap of a file name,
# leaving room for Hydra's time or job-number prefix.
MAX_READABLE = 200
_UNSAFE = re.compile(r"[^A-Za-z0-9._=,+\-\[\]@%:]")
OWN_FILES = {".hydra", "mtlrun.log", ".lock"}  # what a run writes before it trains
NOSPACE_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


def safe_dirname(override_dirname: str, limit: int = MAX_READABLE) -> str:
    """The part of a run folder's name that comes from the overrides.

    The overrides themselves (``data.n_train=40,trainer.seed=1``) while they are at most
    ``limit`` bytes and hold no path separator, no ``..`` and no character outside
    ``[A-Za-z0-9._=,+-[]@%:]``; otherwise ``h`` plus 10 hex digits of their SHA-1 (stable: the
    same overrides always give the same name). ``.hydra/overrides.yaml`` keeps the full list.
    """
    name = str(override_dirname)
    readable = (
        len(name.encode()) <= limit
        and not _UNSAFE.search(name)
        and ".." not in name
        and not name.startswith(".")
    )
    if readable:
        return name
    return "h" + hashlib.sha1(name.encode()).hexdigest()[:10]


def register_resolvers() -> None:
    """``${mtlrun_dirname:...}`` for ``hydra.run.dir`` and ``hydra.sweep.subdir``."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("mtlrun_dirname"):
        OmegaConf.register_new_resolver("mtlrun_dirname", safe_dirname)


def no_space(exc: BaseException) -> OSError | None:
    """The OSError of ``exc``'s chain that says the disk (or a file-size limit) is full."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in NOSPACE_ERRNOS:
            return e
        stack += [e.__cause__, e.__context__]
    return None


def storage_error(exc: BaseException, path: Path) -> StorageError:
    """One line for a failed write: ``no space left on <path>`` or the OS reason."""
    full = no_space(exc)
    if full is not None:
        reason = (
            "file size limit reached" if full.errno == errno.EFBIG else os.strerror(full.errno or 0)
        )
        return StorageError(f"no space left on {path} ({reason})")
    if isinstance(exc, PermissionError):
        return StorageError(f"cannot write {path}: permission denied")
    return StorageError(f"cannot write {path}: {exc}")


def atomic_write(
    path: Path,
    write: Callable[[Path], object],
    errors: tuple[type[BaseException], ...] = (OSError,),
) -> None:
    """``write(tmp)`` to ``<name>.tmp`` beside ``path``, then replace ``path`` with it.

    A reader never sees half a file. A failed write (``errors``: full disk, file-size limit, no
    permission) removes the partial temp file, leaves ``path`` as it was, and raises
    :class:`StorageError` naming ``path``.
    """
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except errors as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise storage_error(e, path) from None


def unwritable_ancestor(path: Path) -> Path | None:
    """The nearest existing ancestor of ``path`` when it is not a writable folder (else None)."""
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return None if p.is_dir() and os.access(p, os.W_OK | os.X_OK) else p


def discard_if_empty(path: Path) -> None:
    """Remove ``path`` and its empty parents inside ``outputs/`` when nothing was written there."""
    path = path.absolute()
    with contextlib.suppress(OSError):
        path.rmdir()  # fails unless empty
        parent = path.parent
        while parent.name not in ("outputs", "multirun", "") and parent != Path.cwd():
            if not any(a.name == "outputs" for a in parent.parents):
                break
            parent.rmdir()
            parent = parent.parent


def read_metrics(path: Path) -> dict[str, Any] | None:
    """A run folder's metrics.json, or None when absent or unreadable."""
    try:
        value = json.loads((path / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def resumable_checkpoint(run_dir: Path) -> Path | None:
    """What ``trainer.resume`` continues in a run folder: the main phase's ``last.pt``, else the
    newest file of an unfinished search (``checkpoints/search/``), else None."""
    main = run_dir / "checkpoints" / "last.pt"
    if main.is_file():
        return main
    search = run_dir / "checkpoints" / "search"
    files = [p for p in [search / "last.pt", *search.glob("phase_*.pt")] if p.is_file()]
    return max(files, key=lambda p: p.stat().st_mtime) if files else None


def is_finished(metrics: dict[str, Any] | None) -> bool:
    """A result that a later run must not overwrite: tested, neither interrupted nor diverged."""
    return bool(metrics) and "interrupted" not in metrics and "diverged" not in metrics  # type: ignore[operator]


class RunFolder:
    """Exclusive use of a run folder for one run (``with RunFolder(path, resuming_own):``).

    Refuses, in one line, a folder that another mtlrun process holds, one that holds a finished
    ``metrics.json``, and one that holds another run's resumable ``checkpoints/last.pt``,
    unless this run resumes that very folder (``resuming_own``).
    """

    def __init__(self, path: Path, resuming_own: bool = False) -> None:
        self.path, self.resuming_own = path, resuming_own
        self._fd: int | None = None
        self.fresh = False

    def __enter__(self) -> RunFolder:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise storage_error(e, self.path) from None
        self.fresh = not any(p.name != ".lock" for p in self.path.iterdir())
        self._lock()
        try:
            self._check_contents()
        except BaseException:
            self._unlock()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._unlock()

    def forget_if_unused(self) -> None:
        """Remove what this run wrote (``.hydra/``, ``mtlrun.log``) if it got no further."""
        if not self.fresh:
            return
        if any(p.name not in OWN_FILES for p in self.path.iterdir()):
            return
        shutil.rmtree(self.path / ".hydra", ignore_errors=True)
        with contextlib.suppress(OSError):
            (self.path / "mtlrun.log").unlink()

    def _lock(self) -> None:
        if fcntl is None:
            return
        lock = self.path / ".lock"
        while True:
            try:
                fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise storage_error(e, self.path) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                owner = _read_owner(lock)
                raise ConfigError(
                    f"run folder {self.path} is in use by another mtlrun run{owner}; "
                    "give this run its own hydra.run.dir"
                ) from None
            try:  # the holder may have removed the file between our open and our lock
                same = os.fstat(fd).st_ino == os.stat(lock).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def _unlock(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            (self.path / ".lock").unlink()
        os.close(self._fd)  # closing releases the lock
        self._fd = None

    def _check_contents(self) -> None:
        if self.resuming_own:
            return
        metrics = read_metrics(self.path)
        if is_finished(metrics):
            raise ConfigError(
                f"run folder {self.path} already holds a finished result (metrics.json); "
                "a run never overwrites another's: give this run its own hydra.run.dir"
            )
        if metrics is not None and "diverged" in metrics:
            raise ConfigError(
                f"run folder {self.path} holds the metrics.json of a diverged run; "
                "give this run its own hydra.run.dir"
            )
        if resumable_checkpoint(self.path) is not None:
            raise ConfigError(
                f"run folder {self.path} holds an unfinished run (checkpoints/); continue "
                "it with trainer.resume=true, or give this run its own hydra.run.dir"
            )
        if metrics is not None:
            raise ConfigError(
                f"run folder {self.path} holds the metrics.json of a stopped run; "
                "give this run its own hydra.run.dir"
            )


def _read_owner(lock: Path) -> str:
    try:
        pid = lock.read_text().strip()
    except OSError:
        return ""
    return f" (pid {pid})" if pid.isdigit() else ""
