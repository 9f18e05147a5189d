"""Search once, discretise many times: finished search phases shared between runs.

A sparse-sharing search does not depend on the target sparsity: DML's Algorithm 1 applies the
keep ratio only when it discretises the learned π, and Sun et al.'s pruning passes through every
density on its way to the last. So runs that differ only in keys their method's search never
reads (``SharingMethod.search_free_keys``: the keep ratio, the fine-tune length, ...) share one
search: the first run stores each finished phase under an entry of ``trainer.search_cache``,
keyed by everything the search reads; later runs load those phases instead of training them
(exactly as a resumed run loads its own, random state included) and train only the phases the
entry lacks (e.g. deeper pruning rounds), which they add to it.

The key is a SHA-256 of: the resolved config without the search-free keys and the keys that
only change how a run is executed or logged; the device type; the data as loaded (name, split
sizes, where ``MTLRUN_DATA`` points); the mtlrun source (a hash of every ``.py`` file of the
package) and the torch version. Any change in them is another entry: a search is never reused
when an input differs.

An entry is a folder ``<cache>/<key>/``: ``key.json`` (the key's material, readable) and one
``phases/<phase>.pt`` per finished phase, each written atomically (a killed run leaves no
partial file, only phases that finished). A run takes the entry's lock (``<key>.lock``,
``flock``) for its whole search, so parallel jobs of a sweep wait for one search instead of
running several; the lock is the kernel's, released when the process dies however it dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from mtlrun.config.saved import RUN_ONLY, flatten
from mtlrun.errors import ConfigError
from mtlrun.training import checkpoint

log = logging.getLogger(__name__)


@functools.cache
def source_hash() -> str:
    """SHA-256 of the mtlrun package's Python files (paths and contents), read once."""
    import mtlrun

    root = Path(mtlrun.__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def key_material(
    config: Mapping[str, Any],
    free_keys: Sequence[str],
    device: str,
    data: Mapping[str, Any],
) -> dict[str, Any]:
    """Everything a search reads, as a JSON-able dict (see the module docstring)."""
    skipped = (*RUN_ONLY, *free_keys)
    kept = {
        k: v
        for k, v in flatten(config).items()
        if not any(k == s or k.startswith(f"{s}.") for s in skipped)
    }
    return {
        "config": kept,
        "device": device,
        "data": dict(data),
        "mtlrun_source": source_hash(),
        "torch": torch.__version__,
    }


def digest(material: Mapping[str, Any]) -> str:
    text = json.dumps(material, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _file_name(phase: str) -> str:
    """A phase name as a file name (``imp/pos/round3`` -> ``imp__pos__round3.pt``)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "__", phase) + ".pt"


class SearchCache:
    """One entry of the search cache: the finished phases of one search (see module docstring).

    ``load(phase)`` returns a phase's payload (as ``RunContext`` saves it) or None; ``store``
    adds one; ``reused`` lists what this run loaded (phase, the run that trained it, seconds).
    """

    def __init__(self, root: Path, material: dict[str, Any], run_dir: Path) -> None:
        self.root = root
        self.material = material
        self.key = digest(material)
        self.entry = root / self.key
        self.run_dir = run_dir
        self.reused: list[dict[str, Any]] = []
        self.stored: list[str] = []

    # ------------------------------------------------------------------ lock

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the entry's lock (blocking): one search per entry at a time."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            handle = (self.root / f"{self.key}.lock").open("a+")
        except OSError as e:
            raise ConfigError(
                f"`trainer.search_cache`: cannot use {self.root} ({e.strerror or e}); give a "
                "writable folder, or trainer.search_cache=null to search without it."
            ) from None
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("search cache %s: another run is searching; waiting for it", self.entry)
                started = time.perf_counter()
                fcntl.flock(handle, fcntl.LOCK_EX)
                log.info("search cache: waited %.0fs", time.perf_counter() - started)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # ------------------------------------------------------------------ phases

    def path(self, phase: str) -> Path:
        return self.entry / "phases" / _file_name(phase)

    def load(self, phase: str) -> dict[str, Any] | None:
        """The stored payload of ``phase``, or None (an unreadable file is ignored, with a
        warning, and trained again)."""
        path = self.path(phase)
        if not path.is_file():
            return None
        try:
            payload = checkpoint.load(path)
        except ConfigError as e:
            log.warning("search cache: ignoring %s (%s)", path, e)
            return None
        if payload.get("name") != phase:
            log.warning("search cache: ignoring %s (it holds phase %r)", path, payload.get("name"))
            return None
        cached = payload.get("cache", {})
        self.reused.append(
            {"phase": phase, "run": cached.get("run"), "seconds": cached.get("seconds")}
        )
        log.info("search phase %s: loaded from the search cache (%s)", phase, cached.get("run"))
        return payload

    def store(self, phase: str, payload: dict[str, Any], seconds: float) -> None:
        """Add a finished phase (atomically); a failure to write only loses the sharing."""
        try:
            self.entry.mkdir(parents=True, exist_ok=True)
            key_file = self.entry / "key.json"
            if not key_file.is_file():
                tmp = key_file.with_name(f".key.json.{os.getpid()}.tmp")
                tmp.write_text(json.dumps(self.material, indent=1, sort_keys=True, default=str))
                tmp.replace(key_file)
            cached = {"run": str(self.run_dir), "seconds": round(seconds, 3)}
            checkpoint.save(self.path(phase), {**payload, "cache": cached})
        except Exception as e:  # noqa: BLE001 - the run's own result must not depend on the cache
            log.warning("search cache: could not store phase %s in %s (%s)", phase, self.entry, e)
            return
        self.stored.append(phase)

    def summary(self) -> dict[str, Any] | None:
        """metrics.json ``search.reused_from``: the entry, the phases loaded from it, the runs
        that trained them and the seconds they took there; None when nothing was reused."""
        if not self.reused:
            return None
        seconds = [r["seconds"] for r in self.reused if isinstance(r.get("seconds"), int | float)]
        return {
            "entry": str(self.entry),
            "phases": [r["phase"] for r in self.reused],
            "runs": sorted({str(r["run"]) for r in self.reused}),
            "seconds": round(sum(seconds), 3),
        }


def cache_root(value: str | None) -> Path | None:
    """``trainer.search_cache`` as a folder (relative paths from the launch directory)."""
    if value in (None, "", "null", "none", "off"):
        return None
    path = Path(str(value)).expanduser()
    if not path.is_absolute():
        path = _launch_dir() / path
    return path


def _launch_dir() -> Path:
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.cwd)
    except Exception:  # noqa: BLE001 - outside a Hydra app: the working directory
        return Path.cwd()
