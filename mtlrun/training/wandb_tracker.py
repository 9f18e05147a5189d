"""``logger=wandb``: a Weights & Biases run, offline by default (docs/trackers.md; the parts
every tracker shares are in :mod:`mtlrun.training.trackers`)."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

from mtlrun.errors import ConfigError
from mtlrun.training.tblog import HistorySteps, row_numbers
from mtlrun.training.trackers import install_hint

log = logging.getLogger(__name__)

WANDB_MODES = ("offline", "online", "disabled")
# W&B links a run's files into <run>/wandb/, inside the run folder: a second metrics.json there
# would be counted as a second run by mtlrun-report (its numbers are the W&B run's summary).
WANDB_SKIPPED = {Path("metrics.json")}


class WandbTracker:
    """``logger=wandb``: one W&B run per run folder, files under ``<run>/wandb/``.

    ``mode=offline`` (the default) never reaches the network: ``wandb sync <run>/wandb/
    offline-run-*`` uploads the run later. Config: the resolved config (nested). History: every
    number of each history row at its step. Summary: :func:`summary`. Files:
    :data:`ARTEFACTS` but :data:`WANDB_SKIPPED`, saved with the run (linked into its
    ``files/``). The group is ``group``
    (null: ``default_group``, the sweep folder for a sweep's jobs, else the config's ``name``).
    A run restarted in its own folder logs its whole history again: the offline runs of that
    folder that earlier processes left are removed.
    """

    name = "wandb"

    def __init__(
        self,
        run_dir: Path,
        config: Mapping[str, Any],
        default_group: str,
        mode: str = "offline",
        project: str = "mtlrun",
        entity: str | None = None,
        group: str | None = None,
        run_name: str | None = None,
        tags: Sequence[str] = (),
        artifacts: bool = True,
    ) -> None:
        if mode not in WANDB_MODES:
            raise ConfigError(
                f"`logger.wandb.mode` should be one of {', '.join(WANDB_MODES)}. "
                f"Found `logger.wandb.mode = {mode}`."
            )
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise ConfigError(install_hint("wandb")) from None
        self.run_dir = Path(run_dir).absolute()
        self.mode, self.project, self.entity = mode, project, entity
        self.group = group or default_group
        self.run_name = run_name or self.run_dir.name
        self.tags = [str(t) for t in tags]
        self.artifacts = artifacts
        self._config = config
        self._steps = HistorySteps()
        self._run: Any = None
        self._closed = False

    @property
    def run(self) -> Any:
        """The W&B run; started on first use."""
        if self._run is None:
            self._run = self._open()
        return self._run

    def _open(self) -> Any:
        import wandb

        if self.mode == "offline":
            for earlier in sorted((self.run_dir / "wandb").glob("offline-run-*")):
                shutil.rmtree(earlier, ignore_errors=True)
                log.info("wandb: removed %s, left by an earlier process of this run", earlier)
        # W&B's console output goes by the settings of wandb.setup (reset by close()'s
        # teardown): quiet, as is its notice for every file linked into the run by save().
        quiet = wandb.Settings(silent=True, console="off", show_warnings=False)
        wandb.setup(settings=quiet)
        run = wandb.init(
            mode=cast(Any, self.mode),  # checked against WANDB_MODES when built
            dir=str(self.run_dir),
            project=self.project,
            entity=self.entity,
            group=self.group,
            name=self.run_name,
            tags=self.tags,
            config=dict(self._config),
            settings=quiet,
        )
        log.info(
            "wandb: %s run %s (%s) of group %r in %s",
            self.mode,
            self.run_name,
            run.id,
            self.group,
            run.dir,
        )
        return run

    def rows(self, history: Sequence[Mapping[str, Any]]) -> None:
        for i, step in self._steps.new(history):
            self.run.log(row_numbers(history[i]), step=step)

    def finish(self, summary: Mapping[str, float], files: Sequence[Path]) -> None:
        self.run.summary.update(dict(summary))
        if self.artifacts:
            for relative in [f for f in files if f not in WANDB_SKIPPED]:
                path = str(self.run_dir / relative)
                self.run.save(path, base_path=str(self.run_dir), policy="now")

    def close(self, status: str) -> None:
        if self._closed:
            return
        self._closed = True
        if self._run is not None:
            import wandb

            self._run.finish(exit_code=0 if status == "finished" else 1)
            # W&B's service writes the run file after finish() returns; its teardown waits for
            # it, so that the file is whole when the run (or the process) ends.
            wandb.teardown()
