"""``logger=mlflow``: a run in an MLflow tracking store (docs/trackers.md; the parts every
tracker shares are in :mod:`mtlrun.training.trackers`)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from mtlrun.errors import ConfigError
from mtlrun.training.tblog import HistorySteps, row_numbers
from mtlrun.training.trackers import flat_config, install_hint, one_line

log = logging.getLogger(__name__)

RUN_ID_FILE = ".mlflow_run.json"  # the MLflow run this folder's run opened (store, run id)
RUN_DIR_TAG = "mtlrun.run_dir"  # a run's tag: its run folder, to find earlier runs of it
_UNSAFE_KEY = re.compile(r"[^\w./\- :]")  # what MLflow refuses in a metric or parameter name


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _key(name: str) -> str:
    """A metric or parameter name MLflow accepts: other characters become ``_``."""
    return _UNSAFE_KEY.sub("_", name)


def _text(value: bool | int | float | str) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def tracking_store(uri: str) -> tuple[str, Path | None]:
    """``(the URI for MLflow's client, the folder of a local file store or None)``.

    A path (relative to the current folder, the launch folder) or a ``file:`` URI is a file
    store; any other URI (``http://``, ``sqlite:///``, ``databricks``) is passed as it is.
    """
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        folder = Path(unquote(parsed.path))
    elif len(parsed.scheme) > 1 or uri == "databricks":
        return uri, None
    else:
        folder = Path(uri).expanduser()
    folder = folder.absolute()
    return folder.as_uri(), folder


@contextlib.contextmanager
def _file_store_allowed(store: Path | None) -> Iterator[None]:
    """MLflow ≥ 3.7 refuses its file store unless MLFLOW_ALLOW_FILE_STORE is set: allowed here
    (while the client opens the store, which it keeps) unless the user set the variable."""
    key = "MLFLOW_ALLOW_FILE_STORE"
    if store is None or key in os.environ:
        yield
        return
    os.environ[key] = "true"
    try:
        yield
    finally:
        os.environ.pop(key, None)


@contextlib.contextmanager
def _store_lock(store: Path | None) -> Iterator[None]:
    """Jobs that start at once create an experiment once: a file store checks names without a
    lock, so two jobs could each create "their" experiment of the same name."""
    try:
        import fcntl
    except ImportError:  # not on a POSIX system
        fcntl = None  # type: ignore[assignment]
    if store is None or fcntl is None:
        yield
        return
    store.mkdir(parents=True, exist_ok=True)
    with (store / ".mtlrun.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class MLflowTracker:
    """``logger=mlflow``: one MLflow run per run folder, in the experiment ``experiment`` (null:
    ``default_group``, the sweep folder for a sweep's jobs, else the config's ``name``).

    Parameters: the flattened resolved config. Metrics: every number of each history row at
    its step; the :func:`summary` at the last step. Artefacts: :data:`ARTEFACTS`, with their
    folders (``.hydra/config.yaml``). Tags: ``tags``, and :data:`RUN_DIR_TAG` (the run folder):
    a run resumed or restarted in its own folder logs its whole history again, so the MLflow
    runs that earlier processes opened for that folder are deleted (one run per folder).
    """

    name = "mlflow"

    def __init__(
        self,
        run_dir: Path,
        config: Mapping[str, Any],
        default_group: str,
        tracking_uri: str,
        experiment: str | None = None,
        run_name: str | None = None,
        tags: Mapping[str, Any] | None = None,
        artifacts: bool = True,
    ) -> None:
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise ConfigError(install_hint("mlflow")) from None
        self.uri, self.store = tracking_store(tracking_uri)
        try:
            with _file_store_allowed(self.store):
                self.client = MlflowClient(tracking_uri=self.uri)
        except Exception as e:  # noqa: BLE001 - MLflow's errors for a URI it cannot serve
            raise ConfigError(
                f"`logger.mlflow.tracking_uri` could not be opened by MLflow ({one_line(e)}). "
                f"Found `logger.mlflow.tracking_uri = {tracking_uri}`."
            ) from None
        self.run_dir = Path(run_dir).absolute()
        self.experiment = experiment or default_group
        self.run_name = run_name or self.run_dir.name
        self.tags = {str(k): str(v) for k, v in (tags or {}).items()}
        self.artifacts = artifacts
        self._config = config
        self._steps = HistorySteps()
        self._run_id: str | None = None
        self._closed = False

    @property
    def run_id(self) -> str:
        """The MLflow run's id; the run is created on first use."""
        if self._run_id is None:
            self._run_id = self._open()
        return self._run_id

    def _open(self) -> str:
        from mlflow.entities import Param
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

        experiment_id = self._experiment_id()
        self._supersede(experiment_id)
        tags = {**self.tags, RUN_DIR_TAG: str(self.run_dir)}
        run = self.client.create_run(experiment_id, tags=tags, run_name=self.run_name)
        self._remember(experiment_id, str(run.info.run_id))
        params = [
            Param(_key(k), _text(v)[:MAX_PARAM_VAL_LENGTH])
            for k, v in flat_config(self._config).items()
        ]
        for chunk in _chunks(params, 100):
            self.client.log_batch(run.info.run_id, params=chunk)
        log.info(
            "mlflow: run %s (%s) in experiment %r of %s",
            self.run_name,
            run.info.run_id,
            self.experiment,
            self.uri,
        )
        return str(run.info.run_id)

    def _experiment_id(self) -> str:
        from mlflow.exceptions import MlflowException

        with _store_lock(self.store):
            found = self.client.get_experiment_by_name(self.experiment)
            if found is None:
                try:
                    return str(self.client.create_experiment(self.experiment))
                except MlflowException:  # another job made it first (a tracking server)
                    found = self.client.get_experiment_by_name(self.experiment)
                    if found is None:
                        raise
            if found.lifecycle_stage == "deleted":
                self.client.restore_experiment(found.experiment_id)
            return str(found.experiment_id)

    def _supersede(self, experiment_id: str) -> None:
        """Delete the run an earlier process opened for this folder in this store (its id is
        in :data:`RUN_ID_FILE`). Not a search of the store: a file store's search reads every
        run's metric files, which parallel jobs are writing at that moment."""
        from mlflow.exceptions import MlflowException

        path = self.run_dir / RUN_ID_FILE
        try:
            earlier = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        if not isinstance(earlier, dict) or earlier.get("tracking_uri") != self.uri:
            return
        try:
            self.client.delete_run(str(earlier.get("run_id")))
        except MlflowException:  # deleted meanwhile, or never finished opening
            return
        log.info(
            "mlflow: deleted run %s, opened for this folder by an earlier process (this run "
            "logs the whole history again)",
            earlier.get("run_id"),
        )

    def _remember(self, experiment_id: str, run_id: str) -> None:
        """Write :data:`RUN_ID_FILE` into the run folder (which the run owns; none: nothing to
        supersede later)."""
        record = {"tracking_uri": self.uri, "experiment_id": experiment_id, "run_id": run_id}
        if self.run_dir.is_dir():
            (self.run_dir / RUN_ID_FILE).write_text(json.dumps(record), encoding="utf-8")

    def _log_metrics(self, values: Sequence[tuple[str, float, int]]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(_key(k), v, now, step) for k, v, step in values]
        for chunk in _chunks(metrics, 1000):
            self.client.log_batch(self.run_id, metrics=chunk)

    def rows(self, history: Sequence[Mapping[str, Any]]) -> None:
        new = self._steps.new(history)
        self._log_metrics([(k, v, s) for i, s in new for k, v in row_numbers(history[i]).items()])

    def finish(self, summary: Mapping[str, float], files: Sequence[Path]) -> None:
        step = self._steps.last
        self._log_metrics([(k, v, step) for k, v in summary.items()])
        if not self.artifacts:
            return
        for relative in files:
            folder = relative.parent.as_posix()
            self.client.log_artifact(
                self.run_id, str(self.run_dir / relative), None if folder == "." else folder
            )

    def close(self, status: str) -> None:
        if self._closed:
            return
        self._closed = True
        if self._run_id is not None:
            state = {"finished": "FINISHED", "interrupted": "KILLED"}.get(status, "FAILED")
            self.client.set_terminated(self._run_id, status=state)
