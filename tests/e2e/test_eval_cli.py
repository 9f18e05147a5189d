"""mtlrun-eval reproduces a finished run's test metrics exactly, for every kind of method: plain
(hard, single, soft), masks (sparse_ste), a policy (adashare) and a tree (tree_search)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from mtlrun.config.source import compose_config
from mtlrun.eval_cli import main
from mtlrun.run import run
from tests.conftest import TINY_RESNET, TINY_TEXT, TOY_SMALL

QUIET = ["trainer.progress=false", "trainer.plots=false", "trainer.search_cache=null"]
TEXT = [*TINY_TEXT, *QUIET, "optim.lr=0.5", "trainer.max_epochs=2"]
IMAGES = ["data=mnist3", "data.tasks=[mnist,fashion]", "data.valid_size=16", *QUIET]
IMAGES += ["data.limit_train=32", "trainer.batch_size=16", "trainer.max_epochs=1"]
RUNS = {
    # conll (generated files): --file reads its test file again
    "hard": ["data=conll", *TEXT],
    "single": ["method=single", *TOY_SMALL, *TEXT],
    "soft": ["method=soft", *TOY_SMALL, *TEXT],
    "sparse_ste": ["method=sparse_ste", "method.warmup_epochs=1", "method.search_epochs=1"]
    + ["method.finetune_epochs=2", *TOY_SMALL, *TINY_TEXT, *QUIET, "optim.lr=0.5"],
    "adashare": ["method=adashare", "backbone=resnet", *TINY_RESNET, "method.warmup_epochs=1"]
    + ["method.curriculum_speed=1", "method.policy_epochs=5", "method.n_samples=1", *IMAGES],
    "tree_search": ["method=tree_search", "backbone=lenet_bn", "method.n_splits=1"]
    + ["method.peel_epochs=1", "method.max_stationary_epochs=1", "method.similarity_batches=1"]
    + ["method.stationary_share=0.0", *IMAGES],
}


@pytest.fixture(scope="module")
def runs(fake_data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """One finished tiny run per method, trained once for the module (one CPU thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MTLRUN_DATA", str(fake_data_root))
        out = {name: root / name for name in RUNS}
        for name, overrides in RUNS.items():
            run(compose_config(overrides), out[name])
        yield out
    torch.set_num_threads(threads)


def evaluate(run_dir: Path, out: Path, *args: str) -> dict:
    main([str(run_dir), "--out", str(out), *args])
    return json.loads((out / "metrics.json").read_text())


def recorded(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.parametrize("method", list(RUNS))
def test_eval_reproduces_the_runs_test_and_valid_metrics_exactly(
    runs: dict, tmp_path: Path, method: str
) -> None:
    run_dir = runs[method]
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()}
    got = evaluate(run_dir, tmp_path / "eval", "--split", "test", "--split", "valid")
    want = recorded(run_dir)
    assert any(v > 0 for ms in want["test"].values() for v in ms.values())  # a trained network
    assert got["metrics"]["test"] == want["test"]
    assert got["metrics"]["valid"] == want["valid"]
    assert got["loss"] == {"test": want["loss"]["test"], "valid": want["loss"]["valid"]}
    assert got["same_as_run"] == {s: {"metrics": True, "loss": True} for s in ("test", "valid")}
    assert got["evaluation"]["checkpoint"]["epoch"] == want["epochs"]["best"]
    assert got["evaluation"]["run_dir"] == str(run_dir.resolve())
    if (run_dir / "predictions").is_dir():  # text data: the run's own format
        for path in (run_dir / "predictions").iterdir():
            assert (tmp_path / "eval" / "predictions" / path.name).read_text() == path.read_text()
    after = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()}
    assert after == before  # the run's files untouched, nothing added to it


def test_a_new_file_is_read_with_the_runs_vocabularies(runs: dict, fake_data_root: Path) -> None:
    """The run's own test file given as a new file scores as its test split; the default folder
    is new under RUN_DIR/eval and a second evaluation never reuses it."""
    run_dir = runs["hard"]
    test_file = fake_data_root / "conll2003" / "test.txt"
    for _ in range(2):
        main([str(run_dir), "--file", str(test_file), "--split", "test"])
    first, second = sorted((run_dir / "eval").iterdir())
    assert first.name.endswith("_file-test_test_best")
    assert second.name != first.name and second.name.startswith(first.name[:10])
    got = json.loads((first / "metrics.json").read_text())
    assert got["metrics"]["file-test"] == got["metrics"]["test"] == recorded(run_dir)["test"]
    assert got["data"]["files"] == {"file-test": str(test_file.resolve())}
    assert set(got["same_as_run"]) == {"test"}  # a new file has no recorded scores
    for task in ("pos", "chunk", "ner"):
        same = (run_dir / "predictions" / f"test_{task}.txt").read_text()
        assert (first / "predictions" / f"file-test_{task}.txt").read_text() == same
        assert (first / "predictions" / f"test_{task}.txt").read_text() == same
    shutil.rmtree(run_dir / "eval")


def test_the_last_checkpoint_is_the_last_epochs_weights(runs: dict, tmp_path: Path) -> None:
    """--checkpoint last scores the last whole epoch: its validation row of the main phase."""
    run_dir = runs["sparse_ste"]
    got = evaluate(run_dir, tmp_path / "last", "--checkpoint", "last", "--split", "valid")
    last = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)
    assert got["evaluation"]["checkpoint"]["epoch"] == last["fit"]["epoch"] == 2
    row = last["fit"]["history"][-1]
    assert row["epoch"] == 2
    for task, scores in got["metrics"]["valid"].items():
        for metric, value in scores.items():
            assert value == row[f"valid/{task}/{metric}"], (task, metric)


def test_changed_weights_give_other_metrics(runs: dict, tmp_path: Path) -> None:
    """The comparison with the run is not vacuous: altered weights are reported as differing."""
    copy = tmp_path / "copy"
    shutil.copytree(runs["single"], copy)
    best = torch.load(copy / "checkpoints" / "best.pt", weights_only=False)
    heads = [k for k in best["model"] if k.startswith("blocks.head:")]
    assert heads
    for key in heads:
        best["model"][key] = torch.zeros_like(best["model"][key])
    torch.save(best, copy / "checkpoints" / "best.pt")
    got = evaluate(copy, tmp_path / "eval")
    assert got["same_as_run"]["test"]["metrics"] is False
    assert got["metrics"]["test"] != recorded(copy)["test"]


def refused(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and "\n" not in err and "Traceback" not in err, err
    assert err.startswith("mtlrun-eval: error: ")
    return err


def test_refusals_are_one_line_with_status_2(
    runs: dict, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    hard, nowhere, words = runs["hard"], tmp_path / "nowhere", tmp_path / "words.txt"
    words.write_text("Paris NNP B-NP B-LOC\n")
    assert "no such run folder" in refused([str(nowhere)], capsys)
    assert refused([str(tmp_path)], capsys) == (
        f"mtlrun-eval: error: {tmp_path} is not a finished run: it has no metrics.json "
        "(give the folder of one mtlrun run, e.g. outputs/<date>/<time>_...)"
    )
    assert "no such file" in refused([str(hard), "--file", str(nowhere)], capsys)
    out = refused([str(hard), "--out", str(hard)], capsys)
    assert f"--out {hard}: exists and is not an empty folder" in out
    image = refused([str(runs["adashare"]), "--file", str(words)], capsys)
    assert "data=mnist3 cannot read new files" in image
    policy = tmp_path / "policy"
    shutil.copytree(runs["adashare"], policy)
    (policy / "checkpoints" / "last.pt").unlink()
    assert f"{policy / 'checkpoints' / 'last.pt'} does not exist" in refused([str(policy)], capsys)
    (policy / "checkpoints" / "best.pt").unlink()
    assert "best.pt does not exist" in refused([str(policy)], capsys)
    gone = tmp_path / "gone"
    shutil.copytree(runs["single"], gone)
    config = gone / ".hydra" / "config.yaml"
    config.write_text(config.read_text().replace("mtlrun.methods.single.", "mtlrun.methods.gone."))
    assert f"{config}: this mtlrun cannot build the run" in refused([str(gone)], capsys)
    config.write_text(config.read_text() + "future_key: 1\n")
    assert "`future_key` is not a key of this config" in refused([str(gone)], capsys)
    for folder in (hard, policy, gone):
        assert not (folder / "eval").exists()  # a refused evaluation leaves nothing


def test_the_console_script(runs: dict, tmp_path: Path) -> None:
    """The installed ``mtlrun-eval`` command reproduces the run's test metrics."""
    script = Path(sys.executable).parent / "mtlrun-eval"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run_dir = runs["tree_search"]
    done = subprocess.run(
        [str(script), str(run_dir), "--split", "test", "--out", str(tmp_path / "e")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "(the same as the run's metrics.json)" in done.stdout
    assert f"outputs in {tmp_path / 'e'}" in done.stdout
    got = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert got["metrics"]["test"] == recorded(run_dir)["test"]
    assert got["evaluation"]["command"].startswith("mtlrun-eval ")
