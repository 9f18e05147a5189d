"""A run folder belongs to one run: naming, exclusive ownership, and leaving nothing behind.

* :func:`safe_dirname` turns Hydra's ``override_dirname`` into a folder name that is readable
  while it is short and safe, and a stable hash otherwise (file systems cap a name at 255 bytes;
  a value such as ``data.root=../../x`` must not move the run out of ``outputs/``).
* :class:`FolderLock` is the exclusive lock (``.lock``) a run holds on each folder it uses: the
  one it writes, and the one of the run it resumes (so that one run is resumed once at a time).
* :class:`RunFolder` takes the lock on the folder for the duration of the run and refuses a
  folder that holds another run's result or resumable state (unless resuming it); a folder
  whose run stopped before its first whole epoch holds no result and is started afresh.
* :func:`discard_if_empty` removes a folder a rejected run never wrote into, and the parents
  the run created for it.
* :func:`resume_override` writes a run folder as ``trainer.resume_dir=...``, ready to paste.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import shlex
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
LOCK = ".lock"
OWN_FILES = {".hydra", "mtlrun.log", LOCK}  # what a run writes before it trains
# What a run stopped before its first whole epoch may have left (a new run replaces it).
EMPTY_RUN_FILES = (
    ".hydra",
    "mtlrun.log",
    "metrics.json",
    "history.csv",
    "tensorboard",
    "wandb",
    ".mlflow_run.json",
    "checkpoints",
)
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


# Folders that existed before this process made its run folder (noted by unwritable_ancestor,
# which the CLI calls before Hydra creates the folder): a rejected run removes none of them.
_EXISTED: list[Path] = []


def _nearest_existing(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def unwritable_ancestor(path: Path) -> Path | None:
    """The nearest existing ancestor of ``path`` when it is not a writable folder (else None).

    The ancestor is also remembered as existing before the run: :func:`discard_if_empty`
    never removes it or anything above it.
    """
    p = _nearest_existing(path)
    _EXISTED.append(p)
    return None if p.is_dir() and os.access(p, os.W_OK | os.X_OK) else p


def discard_if_empty(path: Path) -> None:
    """Remove ``path`` and the parents created for it when nothing was written there.

    Parents go up to the folder that existed before the run (noted by
    :func:`unwritable_ancestor`), so ``outputs/`` too when the run created it; without such a
    note, only empty parents inside ``outputs/`` (``outputs/`` itself kept).
    """
    path = path.absolute()
    for folder in [path, *_created_parents(path)]:
        try:
            if folder.exists():
                folder.rmdir()  # fails unless empty
        except OSError:
            return


def _created_parents(path: Path) -> list[Path]:
    """The parents of ``path`` (nearest first) that this run may have created."""
    noted = [p for p in _EXISTED if p == path or p in path.parents]
    if noted:
        stop = max(noted, key=lambda p: len(p.parts))
        return [p for p in path.parents if stop in p.parents]
    out = []
    for parent in path.parents:
        inside = any(a.name == "outputs" for a in parent.parents)
        if parent.name in ("outputs", "multirun", "") or parent == Path.cwd() or not inside:
            break
        out.append(parent)
    return out


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


def holds_no_result(path: Path) -> bool:
    """Whether ``path`` holds only a run stopped before its first whole epoch: a metrics.json
    marked ``interrupted`` without test metrics, and nothing to resume."""
    metrics = read_metrics(path)
    return (
        metrics is not None
        and "interrupted" in metrics
        and "test" not in metrics
        and "diverged" not in metrics
        and resumable_checkpoint(path) is None
    )


def resume_override(path: Path) -> str:
    """``trainer.resume_dir=<path>`` as one shell word that Hydra's grammar reads back as
    ``path``, ready to paste: run folder names hold ``=`` and ``,``, so the value is quoted
    for Hydra (``'...'``: a quote and the backslashes before it escaped, ``${`` too) and the
    whole override for the shell (``"..."``, or ``'...'`` when the path holds ``"$`\\!``)."""
    value = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", str(path))
    value = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, value).replace("${", "\\${")
    override = f"trainer.resume_dir='{value}'"
    return shlex.quote(override) if re.search(r'["$`\\!]', override) else f'"{override}"'


class FolderLock:
    """An exclusive lock (``flock`` on ``<folder>/.lock``) that says who holds it, and why.

    A run holds the lock of the folder it writes (:class:`RunFolder`) and, while it resumes a
    run from another folder, that folder's lock too, so that a run is resumed by one run at a
    time. Never waits: :meth:`acquire` returns the holder of a lock that is taken. Without
    ``fcntl`` (Windows) nothing is locked.
    """

    def __init__(self, folder: Path, doing: str) -> None:
        self.folder, self.doing = folder, doing
        self._fd: int | None = None

    def acquire(self) -> str | None:
        """Take the lock: None once taken, else who holds it (``pid 12, writing it``)."""
        if fcntl is None:
            return None
        lock = self.folder / LOCK
        while True:
            try:
                fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise storage_error(e, self.folder) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                return _read_holder(lock)
            try:  # the holder may have removed the file between our open and our lock
                same = os.fstat(fd).st_ino == os.stat(lock).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n{self.doing}\n".encode())
        self._fd = fd
        return None

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            (self.folder / LOCK).unlink()
        os.close(self._fd)  # closing releases the lock
        self._fd = None


def _read_holder(lock: Path) -> str:
    """``pid 12, resuming it into <folder>`` from a lock file (what its holder wrote)."""
    try:
        pid, _, doing = lock.read_text().strip().partition("\n")
    except OSError:
        return "another mtlrun run"
    if not pid.isdigit():
        return "another mtlrun run"
    return f"pid {pid}" + (f", {doing.strip()}" if doing.strip() else "")


class RunFolder:
    """Exclusive use of a run folder for one run (``with RunFolder(path, resuming_own):``).

    Refuses, in one line, a folder that another mtlrun process holds (writes or resumes), one
    that holds a finished or diverged ``metrics.json`` (also when resuming it: a result is
    never overwritten), and one that holds another run's resumable checkpoint, unless this run
    resumes that very folder (``resuming_own``). A folder whose run stopped before its first
    whole epoch (:func:`holds_no_result`) is cleared and used afresh.
    """

    def __init__(self, path: Path, resuming_own: bool = False) -> None:
        self.path, self.resuming_own = path, resuming_own
        self._lock = FolderLock(path, "writing it")
        self._created: list[Path] = []  # the folders this run made, deepest first
        self._forget = False
        self.fresh = False

    def __enter__(self) -> RunFolder:
        existing = _nearest_existing(self.path)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise storage_error(e, self.path) from None
        here = self.path.absolute()
        self._created = [p for p in [here, *here.parents] if existing in p.parents]
        self.fresh = not any(p.name != LOCK for p in self.path.iterdir())
        holder = self._lock.acquire()
        if holder is not None:
            self._discard_created()
            raise ConfigError(
                f"run folder {self.path} is in use by another mtlrun run ({holder}); "
                "give this run its own hydra.run.dir"
            )
        try:
            self._check_contents()
        except BaseException:
            self._lock.release()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._lock.release()
        if self._forget:
            self._discard_created()

    def forget_if_unused(self) -> None:
        """Remove what this run wrote (``.hydra/``, ``mtlrun.log``) if it got no further, and
        (once the run lets go of it) the folder and its parents when this run created them."""
        if not self.fresh:
            return
        if any(p.name not in OWN_FILES for p in self.path.iterdir()):
            return
        shutil.rmtree(self.path / ".hydra", ignore_errors=True)
        with contextlib.suppress(OSError):
            (self.path / "mtlrun.log").unlink()
        self._forget = True

    def _discard_created(self) -> None:
        for folder in self._created:
            try:
                folder.rmdir()  # fails unless empty
            except OSError:
                return

    def _check_contents(self) -> None:
        metrics = read_metrics(self.path)
        diverged = metrics is not None and "diverged" in metrics
        if self.resuming_own:
            if is_finished(metrics) or diverged:
                state = "a diverged run's" if diverged else "a finished"
                raise ConfigError(
                    f"run folder {self.path} holds {state} result (metrics.json), which is "
                    "never overwritten: to continue it, give the continued run another "
                    "hydra.run.dir (or none, for a new folder under outputs/)"
                )
            return
        if is_finished(metrics):
            raise ConfigError(
                f"run folder {self.path} already holds a finished result (metrics.json); "
                "a run never overwrites another's: give this run its own hydra.run.dir"
            )
        if diverged:
            raise ConfigError(
                f"run folder {self.path} holds the metrics.json of a diverged run; "
                "give this run its own hydra.run.dir"
            )
        if resumable_checkpoint(self.path) is not None:
            raise ConfigError(
                f"run folder {self.path} holds an unfinished run (checkpoints/); continue "
                "it with trainer.resume=true, or give this run its own hydra.run.dir"
            )
        if holds_no_result(self.path):
            self._replace_empty_run()
        elif metrics is not None:
            raise ConfigError(
                f"run folder {self.path} holds the metrics.json of a stopped run; "
                "give this run its own hydra.run.dir"
            )

    def _replace_empty_run(self) -> None:
        """Clear a run stopped before its first whole epoch: it holds no result to keep."""
        log.info(
            "%s holds a run stopped before its first whole epoch (no result, nothing to "
            "resume): this run replaces it",
            self.path,
        )
        for name in EMPTY_RUN_FILES:
            target = self.path / name
            if target.is_dir():
                shutil.rmtree(target, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    target.unlink()
        self.fresh = not any(p.name != LOCK for p in self.path.iterdir())
