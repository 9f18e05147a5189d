"""Which run a run continues (``trainer.resume``, ``trainer.resume_dir``), claimed for as long
as it lasts so that no other run resumes it meanwhile (README *Resuming*)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from mtlrun.config.saved import saved_config
from mtlrun.errors import ConfigError
from mtlrun.training import checkpoint
from mtlrun.training.run_dir import FolderLock, holds_no_result, is_finished, resume_override

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Resume:
    """Where a run continues from: a run folder and its main ``last.pt`` (None: its search)."""

    run_dir: Path
    last: Path | None
    payload: dict[str, Any] | None = None

    def into(self, run_dir: Path) -> bool:
        """Whether the run continues into another folder than the one it resumes."""
        return self.run_dir.resolve() != run_dir.resolve()


def claim(folder: Path, run_dir: Path, claims: contextlib.ExitStack) -> str | None:
    """Hold ``folder``'s lock until ``claims`` closes, so that no other run resumes (or writes)
    it meanwhile; returns who holds it when another run does. The run's own folder is held
    by its :class:`RunFolder`; a read-only folder is resumed unclaimed, with a warning."""
    if folder.resolve() == run_dir.resolve() or not folder.is_dir():
        return None
    if not os.access(folder, os.W_OK | os.X_OK):
        log.warning("%s is not writable: it is resumed without claiming it", folder)
        return None
    lock = FolderLock(folder, f"resuming it into {run_dir.resolve()}")
    holder = lock.acquire()
    if holder is None:
        claims.callback(lock.release)
    return holder


def resume_folder(folder: Path, config: dict[str, Any], key: str) -> Resume:
    """Continue the checkpoint of ``folder``, which must have been trained with ``config``
    and not be resumed already by a later run."""
    later = checkpoint.last_successor(folder)
    if later is not None:
        done = is_finished(checkpoint.read_metrics(later))
        raise ConfigError(
            f"cannot resume {folder}: {later} resumed it and holds all its epochs; continue "
            f"that one instead: {resume_override(later)}"
            + (" with a larger trainer.max_epochs" if done else "")
        )
    found = checkpoint.resumable_checkpoint(folder)
    if found is None:
        raise ConfigError(
            f"`{key}` holds no checkpoint to continue "
            f"({folder / 'checkpoints' / 'last.pt'} does not exist)."
        )
    main = folder / "checkpoints" / "last.pt"
    try:
        payload = checkpoint.load(main) if main.is_file() else None
    except ConfigError as e:  # truncated or damaged: say the way on, not only what broke
        raise ConfigError(
            f"{e}. Nothing can continue from it: delete {folder} and start the run again "
            "(a sweep re-run with trainer.resume=true then starts that job afresh)."
        ) from None
    saved = saved_config(folder)
    if saved is None:
        saved = (payload or {}).get("config", {})
    diff = checkpoint.config_differences(saved, config)
    if diff:
        raise ConfigError(
            f"cannot resume {folder}: it was trained with different values of "
            f"{checkpoint.describe_differences(saved, config, diff)}."
        )
    return Resume(folder, main if payload is not None else None, payload)


def find_resume(
    cfg: DictConfig,
    run_dir: Path,
    config: dict[str, Any],
    claims: contextlib.ExitStack,
    sweep_job: bool = False,
) -> Resume | None:
    """The run to continue, claimed in ``claims`` for as long as this run lasts.

    ``trainer.resume_dir`` (implies resuming); else with ``trainer.resume=true`` the run's own
    folder when it holds a checkpoint (a job restarted into its folder continues there), a
    fresh start when the run is a sweep's job or its folder holds only a run stopped before
    its first whole epoch, and otherwise the newest unfinished same-config run under
    ``outputs/`` that no other run holds and no later run resumed.
    """
    if cfg.trainer.resume_dir:
        folder = Path(cfg.trainer.resume_dir)
        holder = claim(folder, run_dir, claims)
        if holder is not None:
            raise ConfigError(
                f"cannot resume {folder}: another mtlrun run holds it ({holder}); a run is "
                "resumed by one run at a time"
            )
        return resume_folder(folder, config, f"trainer.resume_dir={folder}")
    if not cfg.trainer.resume:
        return None
    if checkpoint.resumable_checkpoint(run_dir) is not None:
        return resume_folder(run_dir, config, f"the run folder {run_dir}")
    if sweep_job or holds_no_result(run_dir):
        return None
    return newest_unfinished(run_dir, config, claims)


def newest_unfinished(
    run_dir: Path, config: dict[str, Any], claims: contextlib.ExitStack
) -> Resume:
    """``trainer.resume=true`` into a new folder: the newest candidate of
    :func:`checkpoint.find_resumable` that this run can claim and read."""
    root = next(
        (p for p in run_dir.resolve().parents if p.name == "outputs"), run_dir.resolve().parent
    )
    busy: list[tuple[Path, str]] = []
    for folder in checkpoint.find_resumable(root, config):
        with contextlib.ExitStack() as held:
            holder = claim(folder, run_dir, held)
            if holder is not None:
                busy.append((folder, holder))
                continue
            metrics = checkpoint.read_metrics(folder)
            finished = metrics is not None and "interrupted" not in metrics
            if finished or checkpoint.successor(folder) is not None:
                continue  # finished or taken over since it was listed
            main = folder / "checkpoints" / "last.pt"
            try:
                payload = checkpoint.load(main) if main.is_file() else None
            except ConfigError as e:
                log.warning("skipping an unreadable checkpoint: %s", e)
                continue
            claims.enter_context(held.pop_all())
            return Resume(folder, main if payload is not None else None, payload)
    if busy:
        folder, holder = busy[0]
        raise ConfigError(
            f"`trainer.resume=true`: the unfinished run with this configuration, {folder}, is "
            f"held by another mtlrun run ({holder}); a run is resumed by one run at a time"
        )
    raise ConfigError(
        f"`trainer.resume=true` but every same-config checkpoint under {root} is unreadable "
        "(see the warnings above)."
    )


def refuse_nothing_to_train(resume: Resume, epochs: int) -> None:
    """A resumed main phase that already has ``epochs`` epochs is refused before it starts."""
    trained = int(((resume.payload or {}).get("fit") or {}).get("epoch", 0))
    if resume.last is not None and trained >= epochs:
        raise ConfigError(
            f"{resume.run_dir} already trained {trained} epochs of its main phase; "
            f"raise trainer.max_epochs above {trained} to train on."
        )
