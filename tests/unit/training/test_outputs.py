"""Run-folder writers: history.csv, predictions, atomic JSON, curve plots."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from mtlrun.training.outputs import plot_curves, write_history, write_json, write_predictions


def test_write_history_union_of_columns_in_first_seen_order(tmp_path: Path) -> None:
    rows = [
        {"epoch": 1, "lr": 0.1, "train/loss/a": 1.2345678912},
        {"epoch": 2, "lr": 0.05, "train/loss/a": 0.5, "weight/a": 2.0},
        {"epoch": 3, "valid/score": 1 / 3},
    ]
    path = tmp_path / "history.csv"
    write_history(path, rows)
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["epoch", "lr", "train/loss/a", "weight/a", "valid/score"]
        read = list(reader)
    assert len(read) == 3
    assert read[0] == {
        "epoch": "1",
        "lr": "0.1",
        "train/loss/a": "1.23457",
        "weight/a": "",
        "valid/score": "",
    }
    assert read[1]["weight/a"] == "2"
    assert read[2]["valid/score"] == "0.333333"
    assert read[2]["lr"] == ""
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("value", [1.2345678912, 1e-9 / 3, 123456789.123, -0.000123456789, 0.0])
def test_history_floats_round_trip_to_six_significant_digits(tmp_path: Path, value: float) -> None:
    path = tmp_path / "history.csv"
    write_history(path, [{"x": value}])
    with path.open(newline="") as f:
        back = float(next(csv.DictReader(f))["x"])
    assert math.isclose(back, value, rel_tol=5e-6, abs_tol=0.0)


def test_write_history_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "history.csv"
    write_history(path, [{"a": 1}, {"a": 2}])
    write_history(path, [{"b": 3}])
    assert path.read_text().splitlines() == ["b", "3"]


def test_write_predictions_conlleval_format(tmp_path: Path) -> None:
    path = tmp_path / "test.ner.txt"
    words = [["EU", "rejects", "German"], ["Peter"]]
    gold = [["B-ORG", "O", "B-MISC"], ["B-PER"]]
    pred = [["B-ORG", "O", "O"], ["B-LOC"]]
    write_predictions(path, words, gold, pred)
    assert path.read_text() == (
        "EU B-ORG B-ORG\nrejects O O\nGerman B-MISC O\n\nPeter B-PER B-LOC\n\n"
    )


def test_write_predictions_rejects_ragged_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_predictions(tmp_path / "p.txt", [["a", "b"]], [["O", "O"]], [["O"]])


def test_write_json_is_atomic_and_loads(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    obj = {
        "test": {"pos": {"accuracy": 0.95}},
        "params": {"used": 533_930, "per_task": {"pos": 533_930}},
        "time": {"train_s": 1.5, "search_s": None},
        "tensor": torch.tensor(0.25),
        "numpy": np.float32(0.5),
        "path": tmp_path,
    }
    write_json(path, obj)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]
    loaded = json.loads(path.read_text())
    assert loaded["test"] == {"pos": {"accuracy": 0.95}}
    assert loaded["params"]["used"] == 533_930
    assert loaded["time"] == {"train_s": 1.5, "search_s": None}
    assert loaded["tensor"] == 0.25 and loaded["numpy"] == 0.5
    assert loaded["path"] == str(tmp_path)
    assert list(loaded) == list(obj)  # key order kept
    write_json(path, {"v": 2})
    assert json.loads(path.read_text()) == {"v": 2}
    assert not list(tmp_path.glob("*.tmp"))


def test_plot_curves_writes_a_png(tmp_path: Path) -> None:
    rows = [
        {
            "epoch": e,
            "train/loss/a": 1.0 / e,
            "valid/loss/a": 1.2 / e,
            "valid/a/accuracy": 0.5 + 0.1 * e,
        }
        for e in (1, 2, 3)
    ]
    rows[1].pop("valid/loss/a")  # a missing value is a gap, not an error
    path = tmp_path / "curves.png"
    plot_curves(path, rows, ["a"], {"a": "accuracy"})
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 1000


def test_balancer_plot_is_written_only_with_weights(tmp_path: Path) -> None:
    from mtlrun.training.outputs import plot_balancer

    rows = [
        {"epoch": e, "weight/a": 1.0 + e / 10, "weight/b": 1.0 - e / 10, "kkt/stationary": e / 4}
        for e in (1, 2, 3)
    ]
    rows[-1]["hybrid/phase"] = 1.0
    assert plot_balancer(tmp_path / "balancer.png", rows, ["a", "b"])
    assert (tmp_path / "balancer.png").stat().st_size > 1000
    assert not plot_balancer(tmp_path / "none.png", [{"epoch": 1}], ["a", "b"])
    assert not (tmp_path / "none.png").exists()


def test_git_commit_prefers_the_launchers_word(monkeypatch: pytest.MonkeyPatch) -> None:
    from mtlrun.run import git_commit

    monkeypatch.setenv("MTLRUN_GIT_COMMIT", "0a04ff7")
    assert git_commit() == "0a04ff7"
    monkeypatch.delenv("MTLRUN_GIT_COMMIT")
    found = git_commit()
    assert found is None or len(found.split("-")[0]) == 40  # a checkout's own HEAD, or nothing


def test_git_commit_is_read_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """A commit made while a run trains must not be credited with the run: the tree is read
    the first time (run() asks before training) and that answer stays."""
    import subprocess

    from mtlrun import run as run_module

    monkeypatch.delenv("MTLRUN_GIT_COMMIT", raising=False)
    run_module._source_commit.cache_clear()
    answers = iter(["a" * 40, "", "b" * 40, " M mtlrun/run.py"])
    calls = []

    def fake_git(args: list[str], **kwargs: object) -> subprocess.CompletedProcess:
        calls.append(args)
        return subprocess.CompletedProcess(args, 0, stdout=next(answers) + "\n", stderr="")

    monkeypatch.setattr(run_module.subprocess, "run", fake_git)
    try:
        assert run_module.git_commit() == "a" * 40
        assert run_module.git_commit() == "a" * 40  # HEAD moved on disk; this process did not
        assert len(calls) == 2
    finally:
        run_module._source_commit.cache_clear()


def _rows() -> list[dict]:
    return [
        {
            "epoch": e, "train/loss/a": 1.0 / e, "valid/loss/a": 1.2 / e, "train/loss/b": 2.0 / e,
            "valid/loss/b": 2.5 / e, "valid/a/accuracy": 0.5 + 0.1 * e, "valid/b/f1": 0.2 * e,
            "weight/a": 1.0 + e / 10, "weight/b": 1.0 - e / 10, "kkt/stationary": e / 4,
            "kkt/ratio": 0.5 / e,
        }
        for e in (1, 2, 3)
    ]  # fmt: skip


def test_curves_use_one_colour_per_task_train_solid_valid_dashed() -> None:
    from matplotlib.colors import to_hex

    from mtlrun.training.outputs import curves_figure

    fig = curves_figure(_rows(), ["a", "b"], {"a": "accuracy", "b": "f1"})
    loss, valid = fig.axes
    lines = {ln.get_label(): ln for ax in fig.axes for ln in ax.get_lines()}
    for task in ("a", "b"):
        colours = {to_hex(lines[k].get_color()) for k in lines if k.startswith(f"{task} ")}
        assert len(colours) == 1  # the task's colour, in both panels
    assert lines["a train"].get_linestyle() == "-" and lines["a valid"].get_linestyle() == "--"
    assert lines["b valid f1"].get_linestyle() == "--"
    assert to_hex(lines["a train"].get_color()) != to_hex(lines["b train"].get_color())
    for ax in (loss, valid):
        assert ax.get_ylabel() and ax.get_xlabel() == "epoch"
        ticks = [t for t in ax.get_xticks() if 1 <= t <= 3]
        assert ticks and all(float(t).is_integer() for t in ticks)


def test_balancer_figure_shows_the_kkt_ratio_with_y_labels() -> None:
    from mtlrun.training.outputs import balancer_figure

    fig = balancer_figure(_rows(), ["a", "b"])
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["task weights", "Pareto-stationary mini-batches",
                      "KKT ratio ||Σ α g|| / max ||g||"]  # fmt: skip
    assert all(ax.get_ylabel() for ax in fig.axes)
    ratio = fig.axes[2].get_lines()[0].get_ydata()
    assert list(ratio) == [0.5, 0.25, 0.5 / 3]
    assert balancer_figure([{"epoch": 1}], ["a"]) is None
