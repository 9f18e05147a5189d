"""logger=mlflow|wandb|tensorboard end to end: a 2-job sweep's MLflow file store read back with
MLflow's client, several trackers in one run read back with each tool's reader, a tracker that
fails, and a tracker whose library is missing."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mtlrun.errors import ConfigError
from mtlrun.report.collect import collect
from mtlrun.run import run
from mtlrun.training.mlflow_tracker import MLflowTracker
from tests.conftest import TINY_TEXT, TOY_SMALL
from tests.unit.training.test_trackers import mlflow_artifacts, mlflow_history, wandb_run

pytestmark = pytest.mark.slow
pytest.importorskip("mlflow")

QUICK = [*TINY_TEXT, *TOY_SMALL, "trainer.progress=false", "trainer.max_epochs=2"]


@pytest.fixture(autouse=True)
def file_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """The readers open the file store too (MLflow >= 3.7 asks for the opt-in)."""
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")


def client(store: Path) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=store.as_uri())


def experiment_runs(store: Path, experiment: str) -> list[Any]:
    mlflow = client(store)
    return mlflow.search_runs([mlflow.get_experiment_by_name(experiment).experiment_id])


def cli_env(**extra: str) -> dict[str, str]:
    """The user's environment: no MLFLOW_ALLOW_FILE_STORE (a run opts in by itself)."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_ALLOW_FILE_STORE"}
    return {**env, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0", **extra}


def approx(value: Any) -> Any:
    """history.csv holds 6 significant digits; the trackers get the numbers themselves."""
    return pytest.approx(value, rel=1e-5)


def history(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "history.csv").open() as f:
        return list(csv.DictReader(f))


def test_an_mlflow_file_store_of_a_two_job_sweep_read_back(tmp_path: Path) -> None:
    """Jobs that start at once share the experiment too (a unit test races them)."""
    sweep_dir, store = tmp_path / "sweep", tmp_path / "mlruns"
    done = subprocess.run(
        [sys.executable, "-m", "mtlrun", "-m", "logger=mlflow",
         f"logger.mlflow.tracking_uri={store}", f"hydra.sweep.dir={sweep_dir}",
         "method=single,hard", *QUICK],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env=cli_env(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    jobs = sorted(p.parent for p in sweep_dir.glob("*/metrics.json"))
    assert [p.name.split("_")[0] for p in jobs] == ["0", "1"]
    assert "method=single" in jobs[0].name and "method=hard" in jobs[1].name
    assert not any("logger" in p.name for p in jobs)  # a tracker does not name run folders
    mlflow = client(store)
    names = {e.name for e in mlflow.search_experiments()}
    assert names == {"Default", str(sweep_dir)}  # one experiment for the sweep, made once
    experiment = mlflow.get_experiment_by_name(str(sweep_dir))
    runs = {r.info.run_name: r for r in mlflow.search_runs([experiment.experiment_id])}
    assert sorted(runs) == [p.name for p in jobs]  # one run per job, named by its folder
    for job in jobs:
        found = runs[job.name]
        run_id, metrics = found.info.run_id, json.loads((job / "metrics.json").read_text())
        assert found.info.status == "FINISHED"
        assert found.data.tags["mtlrun.run_dir"] == str(job)
        params = found.data.params
        assert params["method.name"] == ("single" if job.name.startswith("0_") else "hard")
        assert params["trainer.max_epochs"] == "2"
        assert params["data.tasks"] == '["pos", "chunk", "ner"]'
        assert params["logger.mlflow.tracking_uri"] == str(store)
        rows = history(job)
        for key in ("valid/score", "train/loss/ner", "valid/chunk/f1"):
            expected = [(i + 1, approx(float(r[key]))) for i, r in enumerate(rows)]
            assert mlflow_history(store, run_id, key) == expected
        for task, values in metrics["test"].items():
            for name, value in values.items():
                assert found.data.metrics[f"test/{task}/{name}"] == pytest.approx(value)
        primary = [metrics["test"][t][m] for t, m in metrics["primary"].items()]
        assert found.data.metrics["test/score"] == pytest.approx(sum(primary) / 3)
        assert found.data.metrics["epochs/trained"] == 2
        assert mlflow_artifacts(store, run_id) == [
            ".hydra", "balancer.png", "curves.png", "history.csv", "metrics.json"
        ]  # fmt: skip
        copy = Path(mlflow.download_artifacts(run_id, ".hydra/config.yaml", str(tmp_path)))
        assert copy.read_text() == (job / ".hydra" / "config.yaml").read_text()


def test_three_trackers_at_once_read_back_with_their_own_readers(
    compose_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("wandb")
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tests.unit.training.test_trackers import tb_hparams

    monkeypatch.chdir(tmp_path)  # the default store: mlruns/ in the launch folder
    run_dir = tmp_path / "run"
    cfg = compose_cfg([*QUICK, "logger=[mlflow,wandb,tensorboard]", "trainer.plots=false"])
    metrics = run(cfg, run_dir)
    rows = history(run_dir)
    score = [float(r["valid/score"]) for r in rows]
    test_ner = metrics["test"]["ner"]["f1"]
    # MLflow: experiment `name` (a single run), the default store
    store = tmp_path / "mlruns"
    [found] = experiment_runs(store, "run")
    run_id = found.info.run_id
    assert [v for _, v in mlflow_history(store, run_id, "valid/score")] == approx(score)
    assert found.data.metrics["test/ner/f1"] == pytest.approx(test_ner)
    # W&B: the offline run under <run>/wandb/, group `name`
    got = wandb_run(run_dir)
    assert (got["run"].run_group, got["run"].display_name) == ("run", "run")
    assert sorted(got["history"]) == [1, 2]
    assert [got["history"][s]["valid/score"] for s in (1, 2)] == approx(score)
    assert got["summary"]["test/ner/f1"] == pytest.approx(test_ner)
    assert got["config"]["trainer"]["max_epochs"] == 2
    assert set(got["files"]) >= {"history.csv", ".hydra/config.yaml"}
    # no second metrics.json inside the run folder: mtlrun-report counts the run once
    assert list(run_dir.rglob("metrics.json")) == [run_dir / "metrics.json"]
    assert [r.path for r in collect(run_dir)] == [run_dir / "metrics.json"]
    assert got["exit_code"] == 0
    # TensorBoard: scalars and the HParams tab
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    assert [e.value for e in events.Scalars("valid/score")] == approx(score)
    assert [(e.step, e.value) for e in events.Scalars("test/ner/f1")] == [
        (2, pytest.approx(test_ner, rel=1e-5))
    ]
    hparams, metric_tags = tb_hparams(run_dir)
    assert hparams["method.name"] == "hard" and hparams["trainer.max_epochs"] == 2
    assert "test/ner/f1" in metric_tags


@pytest.mark.parametrize(
    ("hook", "what", "logged"), [("rows", "history", 1), ("finish", "summary and files", 2)]
)
def test_a_tracker_failing_never_loses_the_run(
    compose_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hook: str, what: str, logged: int
) -> None:
    """The store's disk fills up after epoch 1 (``rows``) or after training (``finish``)."""
    original = getattr(MLflowTracker, hook)
    calls = []

    def full_disk(self: MLflowTracker, *args: object) -> None:
        calls.append(hook)
        if hook == "rows" and len(calls) == 1:
            return original(self, *args)
        raise OSError("No space left on device")

    monkeypatch.setattr(MLflowTracker, hook, full_disk)
    store, run_dir = tmp_path / "mlruns", tmp_path / "run"
    cfg = compose_cfg([*QUICK, "logger=mlflow", f"logger.mlflow.tracking_uri={store}"])
    metrics = run(cfg, run_dir)
    assert len(calls) == (2 if hook == "rows" else 1)  # dropped at its first failure
    assert json.loads((run_dir / "metrics.json").read_text()) == metrics
    assert "test" in metrics and "interrupted" not in metrics
    assert len(history(run_dir)) == 2  # training went on
    log_text = (run_dir / "mtlrun.log").read_text()
    assert (
        f"logger=mlflow could not log the run's {what} (OSError: No space left on device); the "
        "run goes on without it, its own files in the run folder are not affected"
    ) in log_text
    [found] = experiment_runs(store, "run")
    assert found.info.status == "FAILED"  # what it logged is there, its end marked
    assert len(mlflow_history(store, found.info.run_id, "valid/score")) == logged


def test_a_missing_library_is_one_line_before_training(tmp_path: Path) -> None:
    """``logger=mlflow`` where ``import mlflow`` fails: the CLI's one line names the extra."""
    fake = tmp_path / "site" / "mlflow"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('not installed')\n")
    path = os.pathsep.join([str(fake.parent), *filter(None, [os.environ.get("PYTHONPATH")])])
    done = subprocess.run(
        [sys.executable, "-m", "mtlrun", "logger=mlflow", *QUICK],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, env=cli_env(PYTHONPATH=path),
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "mtlrun: error: `logger=mlflow` needs the mlflow-skinny (or mlflow) package: "
        "pip install 'mtlrun[mlflow]'"
    )
    assert "epoch 1" not in done.stderr  # refused before training
    assert not (tmp_path / "outputs").exists()  # and the refused run left no folder


def test_an_unknown_logger_is_refused(compose_cfg, tmp_path: Path) -> None:
    cfg = compose_cfg([*QUICK, "logger=mlflow", "+logger.mlfow.experiment=x"])
    with pytest.raises(ConfigError) as raised:
        run(cfg, tmp_path / "run")
    assert str(raised.value) == (
        "`logger.mlfow` is not a logger (allowed: mlflow, wandb, tensorboard)."
    )
