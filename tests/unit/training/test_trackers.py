"""Experiment trackers (logger=mlflow|wandb|tensorboard): what each writes, read back with the
tool's own reader (MLflow's client on its file store, the records of W&B's offline run file,
TensorBoard's EventAccumulator), and the runner's guard around them."""

from __future__ import annotations

import importlib.util
import json
import logging
import struct
import sys
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mtlrun.config.validate import validate
from mtlrun.errors import ConfigError
from mtlrun.training.mlflow_tracker import MLflowTracker, tracking_store
from mtlrun.training.tblog import HistorySteps
from mtlrun.training.trackers import (
    TensorBoardTracker,
    Trackers,
    artefacts,
    flat_config,
    install_hint,
    run_status,
    summary,
)
from mtlrun.training.wandb_tracker import WandbTracker


def needs(module: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        importlib.util.find_spec(module) is None, reason=f"needs the {module} package"
    )


CONFIG: dict[str, Any] = {
    "data": {"name": "toy", "tasks": ["pos", "ner"], "limit_train": None},
    "trainer": {"seed": 3, "lr_decay": 0.5, "progress": False},
    "balancer": {"weights": {}},
    "name": "run",
}
HISTORY: list[dict[str, Any]] = [
    {"phase": "warmup", "epoch": 1, "lr": 0.5, "valid/pos/accuracy": 0.25, "note": "x"},
    {"phase": "train", "epoch": 1, "lr": 0.25, "valid/pos/accuracy": 0.5, "odd key[0]": 2.0},
    {"phase": "train", "epoch": 2, "lr": 0.125, "valid/pos/accuracy": float("nan")},
]
METRICS: dict[str, Any] = {
    "test": {"pos": {"accuracy": 0.75}, "ner": {"f1": 0.5, "precision": 0.25}},
    "valid": {"pos": {"accuracy": 1.0}, "ner": {"f1": 0.5, "precision": 0.5}},
    "primary": {"pos": "accuracy", "ner": "f1"},
    "loss": {"test": {"pos": 0.125, "ner": 2.0}, "valid": {"pos": 0.0625, "ner": 1.0}},
    "params": {"used": 100, "supernet": 120, "per_task": {"pos": 60}},
    "epochs": {"trained": 3, "best": 2, "phases": {"train": 3}},
    "time": {"train_s": 1.5, "search_s": None, "epoch_s": 0.5},
    "config": {"name": "run"},
}
SUMMARY = {
    "test/pos/accuracy": 0.75,
    "test/ner/f1": 0.5,
    "test/ner/precision": 0.25,
    "test/loss/pos": 0.125,
    "test/loss/ner": 2.0,
    "test/score": 0.625,  # (0.75 + 0.5) / 2: each task's primary metric
    "best/valid/pos/accuracy": 1.0,
    "best/valid/ner/f1": 0.5,
    "best/valid/ner/precision": 0.5,
    "best/valid/loss/pos": 0.0625,
    "best/valid/loss/ner": 1.0,
    "best/valid/score": 0.75,
    "params/used": 100.0,
    "params/supernet": 120.0,
    "epochs/trained": 3.0,
    "epochs/best": 2.0,
    "total/train_s": 1.5,  # search_s is null: left out
}


def run_folder(root: Path) -> Path:
    """A finished run's files, as the runner leaves them."""
    run_dir = root / "0_method=hard,trainer.seed=1"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / "checkpoints").mkdir()
    (run_dir / "metrics.json").write_text(json.dumps(METRICS))
    (run_dir / "history.csv").write_text("phase,epoch\ntrain,1\n")
    (run_dir / "curves.png").write_bytes(b"\x89PNG curves")
    (run_dir / "masks.json").write_text("{}")
    (run_dir / ".hydra" / "config.yaml").write_text("name: run\n")
    (run_dir / ".hydra" / "overrides.yaml").write_text("- method=hard\n")
    (run_dir / "checkpoints" / "last.pt").write_bytes(b"weights")
    (run_dir / "mtlrun.log").write_text("log\n")
    return run_dir


# --------------------------------------------------------------------------- config


def test_several_logger_options_compose_each_under_its_key(compose_cfg) -> None:
    cfg = compose_cfg(["logger=[mlflow,wandb,tensorboard]", "logger.wandb.project=p"])
    assert list(cfg.logger) == ["mlflow", "wandb", "tensorboard"]
    assert cfg.logger.wandb.project == "p" and cfg.logger.wandb.mode == "offline"
    assert cfg.logger.mlflow.experiment is None
    assert cfg.logger.mlflow._target_ == "mtlrun.training.mlflow_tracker.MLflowTracker"
    assert cfg.logger.tensorboard._target_ == "mtlrun.training.trackers.TensorBoardTracker"
    validate(cfg)
    assert compose_cfg([]).logger is None  # no tracker unless asked for


def test_misspelt_logger_keys_are_refused_all_at_once(compose_cfg) -> None:
    cfg = compose_cfg(
        ["logger=[mlflow,wandb]", "+logger.mlflow.trackin_uri=x", "+logger.wandb.projet=y"]
    )
    with pytest.raises(ConfigError) as raised:
        validate(cfg)
    assert str(raised.value) == (
        "invalid configuration:\n"
        "  - `logger.mlflow.trackin_uri` is not a key of this config; did you mean "
        "`logger.mlflow.tracking_uri`? (allowed: tracking_uri, experiment, run_name, tags, "
        "artifacts).\n"
        "  - `logger.wandb.projet` is not a key of this config; did you mean "
        "`logger.wandb.project`? (allowed: mode, project, entity, group, run_name, tags, "
        "artifacts)."
    )


# ---------------------------------------------------------------------- pure helpers


def test_summary_of_a_metrics_json() -> None:
    assert summary(METRICS) == pytest.approx(SUMMARY)
    assert list(summary(METRICS)) == list(SUMMARY)


def test_summary_of_a_run_stopped_before_its_first_epoch_is_its_epoch_counts() -> None:
    stopped = {"interrupted": {"signal": "SIGTERM"}, "epochs": {"trained": 0, "best": 0}}
    assert summary(stopped) == {"epochs/trained": 0.0, "epochs/best": 0.0}


@pytest.mark.parametrize(
    ("metrics", "status"),
    [(METRICS, "finished"), ({"interrupted": {}}, "interrupted"), ({"diverged": {}}, "diverged")],
)
def test_run_status(metrics: dict[str, Any], status: str) -> None:
    assert run_status(metrics) == status


def test_artefacts_are_the_listed_files_in_order(tmp_path: Path) -> None:
    run_dir = run_folder(tmp_path)
    assert artefacts(run_dir) == [
        Path("metrics.json"),
        Path("history.csv"),
        Path("masks.json"),
        Path("curves.png"),
        Path(".hydra/config.yaml"),
        Path(".hydra/overrides.yaml"),
    ]  # no checkpoints, no log


def test_flat_config_keeps_scalars_and_writes_the_rest_as_json() -> None:
    assert flat_config(CONFIG) == {
        "data.name": "toy",
        "data.tasks": '["pos", "ner"]',
        "data.limit_train": "null",
        "trainer.seed": 3,
        "trainer.lr_decay": 0.5,
        "trainer.progress": False,
        "balancer.weights": "{}",
        "name": "run",
    }


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("file:///tmp/a%20b/mlruns", ("file:///tmp/a%20b/mlruns", Path("/tmp/a b/mlruns"))),
        ("/tmp/store", ("file:///tmp/store", Path("/tmp/store"))),
        ("http://localhost:5000", ("http://localhost:5000", None)),
        ("sqlite:///mlflow.db", ("sqlite:///mlflow.db", None)),
        ("databricks", ("databricks", None)),
    ],
)
def test_tracking_store(uri: str, expected: tuple[str, Path | None]) -> None:
    assert tracking_store(uri) == expected


def test_a_relative_tracking_folder_is_under_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert tracking_store("outputs/mlruns") == (
        (tmp_path / "outputs/mlruns").as_uri(),
        tmp_path / "outputs/mlruns",
    )


def test_history_steps_continue_after_a_list_that_restarted() -> None:
    steps = HistorySteps()
    assert steps.new(HISTORY[:2]) == [(0, 1), (1, 2)]
    assert steps.new(HISTORY[:2]) == []  # re-passed, nothing new
    assert steps.new(HISTORY) == [(2, 3)]
    assert steps.new(HISTORY[:1]) == [(0, 4)]  # shorter: a new list after step 3
    assert steps.last == 4


# ------------------------------------------------------------------------- Trackers


class Recorder:
    """A tracker that records its calls, and fails in the hook named by ``fail``."""

    def __init__(self, name: str, fail: str | None = None) -> None:
        self.name, self.fail, self.calls = name, fail, []

    def _call(self, hook: str, *args: Any) -> None:
        self.calls.append((hook, *args))
        if hook == self.fail:
            raise OSError(f"{hook} broke\nsecond line")

    def rows(self, history: Any) -> None:
        self._call("rows", len(history))

    def finish(self, summary: Any, files: Any) -> None:
        self._call("finish", dict(summary), list(files))

    def close(self, status: str) -> None:
        self._call("close", status)


def test_trackers_fan_out_and_finish_with_the_runs_status(tmp_path: Path) -> None:
    run_dir = run_folder(tmp_path)
    a, b = Recorder("a"), Recorder("b")
    trackers = Trackers([a, b], run_dir)
    trackers.rows(HISTORY)
    trackers.finish({**METRICS, "interrupted": {"signal": "SIGTERM"}})
    trackers.close()  # after finish: nothing left to close
    for tracker in (a, b):
        assert tracker.calls == [
            ("rows", 3),
            ("finish", pytest.approx(SUMMARY), artefacts(run_dir)),
            ("close", "interrupted"),
        ]


def test_a_failing_tracker_is_dropped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broken, fine = Recorder("mlflow", fail="rows"), Recorder("wandb")
    trackers = Trackers([broken, fine], tmp_path)
    with caplog.at_level(logging.WARNING):
        trackers.rows(HISTORY)
        trackers.rows(HISTORY)
        trackers.finish(METRICS)
    assert broken.calls == [("rows", 3), ("close", "failed")]
    assert [c[0] for c in fine.calls] == ["rows", "rows", "finish", "close"]
    assert fine.calls[-1] == ("close", "finished")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "logger=mlflow could not log the run's history (OSError: rows broke); the run goes on "
        "without it, its own files in the run folder are not affected"
    ]


def test_a_tracker_failing_at_the_end_leaves_the_others(tmp_path: Path) -> None:
    broken, fine = Recorder("wandb", fail="finish"), Recorder("tensorboard")
    Trackers([broken, fine], tmp_path).finish(METRICS)
    assert [c[0] for c in broken.calls] == ["finish", "close"]
    assert broken.calls[-1] == ("close", "failed")
    assert fine.calls[-1] == ("close", "finished")


def test_a_crash_closes_every_tracker_as_failed(tmp_path: Path) -> None:
    a, b = Recorder("a", fail="close"), Recorder("b")
    trackers = Trackers([a, b], tmp_path)
    trackers.close("failed")  # a's close raises: b is still closed
    assert a.calls == [("close", "failed")] and b.calls == [("close", "failed")]


# --------------------------------------------------------------------------- MLflow


@pytest.fixture()
def file_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """Readers open the file store too (MLflow >= 3.7 asks for the opt-in)."""
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")


def mlflow_runs(store: Path, experiment: str, deleted: bool = False) -> list[Any]:
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store.as_uri())
    found = client.get_experiment_by_name(experiment)
    view = ViewType.DELETED_ONLY if deleted else ViewType.ACTIVE_ONLY
    return client.search_runs([found.experiment_id], run_view_type=view)


def mlflow_history(store: Path, run_id: str, key: str) -> list[tuple[int, float]]:
    from mlflow.tracking import MlflowClient

    history = MlflowClient(tracking_uri=store.as_uri()).get_metric_history(run_id, key)
    return sorted((m.step, m.value) for m in history)


def mlflow_artifacts(store: Path, run_id: str, folder: str | None = None) -> list[str]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store.as_uri())
    return sorted(a.path for a in client.list_artifacts(run_id, folder))


@needs("mlflow")
def test_mlflow_run_read_back_with_mlflows_client(tmp_path: Path, file_store: None) -> None:
    run_dir, store = run_folder(tmp_path), tmp_path / "mlruns"
    tracker = MLflowTracker(run_dir, CONFIG, "sweep/a", str(store), tags={"owner": "me", "n": 1})
    tracker.rows(HISTORY[:2])
    tracker.rows(HISTORY)  # re-passed whole: row 3 only is new
    tracker.finish(summary(METRICS), artefacts(run_dir))
    tracker.close("finished")
    [run] = mlflow_runs(store, "sweep/a")  # experiment: the group (the sweep folder)
    assert run.info.run_name == run_dir.name
    assert run.info.status == "FINISHED"
    assert run.data.tags["owner"] == "me" and run.data.tags["n"] == "1"
    assert run.data.tags["mtlrun.run_dir"] == str(run_dir)
    assert run.data.params == {k: str(v) for k, v in FLAT_TEXT.items()}
    run_id = run.info.run_id
    assert mlflow_history(store, run_id, "lr") == [(1, 0.5), (2, 0.25), (3, 0.125)]
    assert mlflow_history(store, run_id, "valid/pos/accuracy") == [(1, 0.25), (2, 0.5)]  # NaN
    assert mlflow_history(store, run_id, "odd key_0_") == [(2, 2.0)]  # MLflow refuses [ and ]
    for key, value in SUMMARY.items():  # at the last step
        assert mlflow_history(store, run_id, key) == [(3, pytest.approx(value))]
    assert "epoch" not in run.data.metrics and "note" not in run.data.metrics
    assert mlflow_artifacts(store, run_id) == [
        ".hydra", "curves.png", "history.csv", "masks.json", "metrics.json"
    ]  # fmt: skip
    assert mlflow_artifacts(store, run_id, ".hydra") == [
        ".hydra/config.yaml", ".hydra/overrides.yaml"
    ]  # fmt: skip
    artifact = Path(run.info.artifact_uri.removeprefix("file://")) / "metrics.json"
    assert json.loads(artifact.read_text()) == METRICS


FLAT_TEXT = {
    "data.name": "toy",
    "data.tasks": '["pos", "ner"]',
    "data.limit_train": "null",
    "trainer.seed": "3",
    "trainer.lr_decay": "0.5",
    "trainer.progress": "false",
    "balancer.weights": "{}",
    "name": "run",
}


@needs("mlflow")
def test_mlflow_restart_in_the_same_folder_replaces_the_earlier_run(
    tmp_path: Path, file_store: None
) -> None:
    run_dir, store = run_folder(tmp_path), tmp_path / "mlruns"
    first = MLflowTracker(run_dir, CONFIG, "g", str(store))
    first.rows(HISTORY[:2])
    first.close("failed")  # killed; restarted in its folder, the run logs all rows again
    other = MLflowTracker(run_folder(tmp_path / "o"), CONFIG, "g", str(store))
    other.rows(HISTORY[:1])
    second = MLflowTracker(run_dir, CONFIG, "g", str(store), experiment=None)
    second.rows(HISTORY)
    second.close("interrupted")
    active = {r.info.run_id: r for r in mlflow_runs(store, "g")}
    assert set(active) == {second.run_id, other.run_id}  # one run per folder
    assert active[second.run_id].info.status == "KILLED"
    assert [r.info.run_id for r in mlflow_runs(store, "g", deleted=True)] == [first.run_id]
    assert mlflow_history(store, second.run_id, "lr") == [(1, 0.5), (2, 0.25), (3, 0.125)]


@needs("mlflow")
def test_mlflow_opens_nothing_before_the_first_row(tmp_path: Path, file_store: None) -> None:
    from mlflow.tracking import MlflowClient

    store = tmp_path / "mlruns"
    tracker = MLflowTracker(tmp_path / "run", CONFIG, "refused", str(store), experiment="e")
    tracker.close("failed")  # e.g. a data error before training
    assert MlflowClient(tracking_uri=store.as_uri()).get_experiment_by_name("e") is None


@needs("mlflow")
def test_mlflow_experiment_name_and_a_deleted_experiment_restored(
    tmp_path: Path, file_store: None
) -> None:
    from mlflow.tracking import MlflowClient

    store = tmp_path / "mlruns"
    client = MlflowClient(tracking_uri=store.as_uri())
    client.delete_experiment(client.create_experiment("mine"))
    tracker = MLflowTracker(tmp_path / "run", CONFIG, "ignored", str(store), experiment="mine")
    tracker.rows(HISTORY)
    tracker.close("finished")
    assert [r.info.run_id for r in mlflow_runs(store, "mine")] == [tracker.run_id]
    assert client.get_experiment_by_name("mine").lifecycle_stage == "active"


@needs("mlflow")
def test_jobs_starting_at_once_share_one_experiment(tmp_path: Path, file_store: None) -> None:
    """A file store checks experiment names without a lock: jobs that open their runs at the
    same moment (a parallel sweep) would each create an experiment of the same name."""
    store = tmp_path / "mlruns"
    jobs = [MLflowTracker(tmp_path / f"{i}_job", CONFIG, "sweep", str(store)) for i in range(6)]
    start = threading.Barrier(len(jobs))
    errors: list[BaseException] = []

    def job(tracker: MLflowTracker) -> None:
        start.wait()
        try:
            tracker.rows(HISTORY[:1])
            tracker.close("finished")
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=job, args=(t,)) for t in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    from mlflow.tracking import MlflowClient

    names = [e.name for e in MlflowClient(tracking_uri=store.as_uri()).search_experiments()]
    assert sorted(names) == ["Default", "sweep"]
    assert sorted(r.info.run_name for r in mlflow_runs(store, "sweep")) == [
        f"{i}_job" for i in range(6)
    ]


@needs("mlflow")
def test_an_unusable_tracking_uri_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        MLflowTracker(tmp_path, CONFIG, "g", "nosuchscheme://x")
    message = str(raised.value)
    assert message.startswith("`logger.mlflow.tracking_uri` could not be opened by MLflow (")
    assert message.endswith("Found `logger.mlflow.tracking_uri = nosuchscheme://x`.")
    assert "\n" not in message


@pytest.mark.parametrize(
    ("module", "make"),
    [
        ("mlflow.tracking", lambda p: MLflowTracker(p, CONFIG, "g", str(p / "s"))),
        ("wandb", lambda p: WandbTracker(p, CONFIG, "g")),
    ],
)
def test_a_missing_library_is_refused_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module: str, make: Any
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # import -> ImportError
    with pytest.raises(ConfigError) as raised:
        make(tmp_path)
    option = module.split(".")[0]
    assert str(raised.value) == install_hint(option)
    assert f"pip install 'mtlrun[{option}]'" in str(raised.value)
    assert list(tmp_path.iterdir()) == []


def test_install_hints() -> None:
    assert install_hint("mlflow") == (
        "`logger=mlflow` needs the mlflow-skinny (or mlflow) package: pip install 'mtlrun[mlflow]'"
    )
    assert install_hint("wandb") == (
        "`logger=wandb` needs the wandb package: pip install 'mtlrun[wandb]'"
    )


# ------------------------------------------------------------------- Weights & Biases


def wandb_records(path: Path) -> Iterator[Any]:
    """The records of a W&B run file (``run-<id>.wandb``), decoded with W&B's own record type.

    The file is LevelDB's log format behind W&B's 7-byte header (``:W&B``, magic 0xBEE1,
    version 0): 32 KiB blocks of chunks ``crc32 (of type + data) | length | type | data``,
    a record in one FULL chunk or FIRST, MIDDLE..., LAST; a block's tail under 7 bytes is
    padding. wandb >= 0.22 writes it from Go and no longer ships its Python reader
    (``wandb.sdk.internal.datastore``), so the framing is read here, every checksum checked.
    """
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert struct.unpack("<4sHB", data[:7]) == (b":W&B", 0xBEE1, 0)
    pos, parts = 7, []
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:
            pos += left
            continue
        checksum, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if (checksum, length, kind) == (0, 0, 0):  # zero padding up to the next block
            pos += left
            continue
        chunk = data[pos + 7 : pos + 7 + length]
        assert zlib.crc32(chunk, zlib.crc32(bytes([kind]))) == checksum
        parts.append(chunk)
        pos += 7 + length
        if kind in (1, 4):  # FULL, LAST
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(parts))
            parts = []
            yield record


def _item_key(item: Any) -> str:
    return item.key or "/".join(item.nested_key)


def wandb_run(run_dir: Path) -> dict[str, Any]:
    """What an offline run folder holds: run, config, history by step, summary, files, exit."""
    [path] = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    out: dict[str, Any] = {"config": {}, "history": {}, "summary": {}, "files": []}
    for record in wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out["run"] = record.run
            for item in record.run.config.update:
                out["config"][item.key] = json.loads(item.value_json)
        elif kind == "config":
            for item in record.config.update:
                out["config"][item.key] = json.loads(item.value_json)
        elif kind == "history":
            row = {_item_key(i): json.loads(i.value_json) for i in record.history.item}
            out["history"][row.pop("_step")] = row
        elif kind == "summary":
            for item in record.summary.update:
                out["summary"][_item_key(item)] = json.loads(item.value_json)
        elif kind == "files":
            out["files"] += [f.path for f in record.files.files]
        elif kind == "exit":
            out["exit_code"] = record.exit.exit_code
    return out


@needs("wandb")
def test_wandb_offline_run_read_back_from_its_run_file(tmp_path: Path) -> None:
    run_dir = run_folder(tmp_path)
    tracker = WandbTracker(run_dir, CONFIG, "sweep/a", tags=["t1"])
    tracker.rows(HISTORY[:1])
    tracker.rows(HISTORY)
    tracker.finish(summary(METRICS), artefacts(run_dir))
    tracker.close("finished")
    got = wandb_run(run_dir)
    run = got["run"]
    assert (run.project, run.run_group, run.display_name) == ("mtlrun", "sweep/a", run_dir.name)
    assert list(run.tags) == ["t1"]
    assert {k: v for k, v in got["config"].items() if k != "_wandb"} == CONFIG
    history = {step: {k: v for k, v in row.items() if not k.startswith("_")}
               for step, row in got["history"].items()}  # fmt: skip
    assert history == {
        1: {"lr": 0.5, "valid/pos/accuracy": 0.25},
        2: {"lr": 0.25, "valid/pos/accuracy": 0.5, "odd key[0]": 2.0},
        3: {"lr": 0.125},  # NaN left out, as epoch, phase and strings
    }
    for key, value in SUMMARY.items():
        assert got["summary"][key] == pytest.approx(value)
    assert set(got["files"]) >= {str(p) for p in artefacts(run_dir)} - {"metrics.json"}
    assert "metrics.json" not in got["files"]  # mtlrun-report would count a second run
    assert got["exit_code"] == 0


@needs("wandb")
def test_wandb_restart_in_the_same_folder_replaces_the_earlier_offline_run(
    tmp_path: Path,
) -> None:
    run_dir = run_folder(tmp_path)
    first = WandbTracker(run_dir, CONFIG, "g")
    first.rows(HISTORY[:2])
    first.close("failed")
    assert wandb_run(run_dir)["exit_code"] == 1
    second = WandbTracker(run_dir, CONFIG, "g")
    second.rows(HISTORY)
    second.close("finished")
    got = wandb_run(run_dir)  # exactly one offline run is left
    assert sorted(got["history"]) == [1, 2, 3] and got["exit_code"] == 0


def test_wandb_mode_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        WandbTracker(tmp_path, CONFIG, "g", mode="onlin")
    assert str(raised.value) == (
        "`logger.wandb.mode` should be one of offline, online, disabled. "
        "Found `logger.wandb.mode = onlin`."
    )


# ------------------------------------------------------------------------ TensorBoard


def tb_hparams(run_dir: Path) -> tuple[dict[str, Any], list[str]]:
    """The HParams tab's view of a run: its hyper-parameters and the metrics it names."""
    from tensorboard.backend.event_processing import plugin_event_accumulator
    from tensorboard.plugins.hparams import metadata

    acc = plugin_event_accumulator.EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    content = acc.PluginTagToContent(metadata.PLUGIN_NAME)
    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    experiment = metadata.parse_experiment_plugin_data(content[metadata.EXPERIMENT_TAG])
    values = {}
    for key, value in start.hparams.items():
        kind = value.WhichOneof("kind")
        values[key] = getattr(value, kind)
    return values, [m.name.tag for m in experiment.metric_infos]


@needs("tensorboard")
def test_tensorboard_tracker_adds_the_summary_and_hparams(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = run_folder(tmp_path)
    tracker = TensorBoardTracker(run_dir, CONFIG, "ignored")
    tracker.rows(HISTORY)
    tracker.finish(summary(METRICS), artefacts(run_dir))
    tracker.close("finished")
    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("lr")] == [(1, 0.5), (2, 0.25), (3, 0.125)]
    for key, value in SUMMARY.items():
        [event] = acc.Scalars(key)
        assert (event.step, event.value) == (3, pytest.approx(value, rel=1e-6))
    hparams, metric_tags = tb_hparams(run_dir)
    assert hparams == {**FLAT_TB}
    assert metric_tags == list(SUMMARY)


FLAT_TB = {  # numbers as numbers (sortable), bools as 0/1 (torch writes them so), the rest as text
    "data.name": "toy",
    "data.tasks": '["pos", "ner"]',
    "data.limit_train": "null",
    "trainer.seed": 3.0,
    "trainer.lr_decay": 0.5,
    "trainer.progress": 0.0,
    "balancer.weights": "{}",
    "name": "run",
}


@needs("tensorboard")
def test_tensorboard_writes_nothing_before_the_first_row(tmp_path: Path) -> None:
    TensorBoardTracker(tmp_path, CONFIG, "g").close("failed")
    assert not (tmp_path / "tensorboard").exists()
