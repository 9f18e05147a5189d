"""mtlrun.report on runs that did not simply finish: resumed, interrupted, diverged, empty or
unreadable metrics.json files, in generated run folders.

Every pooled number is computable by hand: POS 0.95 and 0.96 give 95.50 ± 0.71 (sample std
0.01 / √2 = 0.00707), NER 0.88 and 0.90 give 89.00 ± 1.41; POS 0.95, 0.96, 0.97 give
96.00 ± 1.00, NER 0.88, 0.90, 0.88 give 88.67 ± 1.15 (√((2 · 0.00667² + 0.01333²) / 2)).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from mtlrun.report.cli import main
from mtlrun.report.collect import collect
from mtlrun.report.tables import generic_table, table_4_2
from mtlrun.report.wall_time import fig6_table


def _metrics(
    pos: float | None,
    ner: float = 0.88,
    *,
    seed: int = 0,
    method: str = "hard",
    epochs: tuple[int, int] = (3, 3),
    **entries: Any,
) -> dict[str, Any]:
    """A CoNLL metrics.json in run.py's shape (no ``test`` when ``pos`` is None)."""
    test = {"pos": {"accuracy": pos}, "ner": {"f1": ner}, "chunk": {"f1": 0.9}}
    overrides = [f"method={method}", f"trainer.seed={seed}"]
    return {
        **({"test": test} if pos is not None else {}),
        "params": {"used": 1000},
        "time": {"train_s": 10.0 + seed, "search_s": None},
        "epochs": {"trained": epochs[0], "best": epochs[1]},
        "data": {"name": "conll", "tasks": ["pos", "ner", "chunk"], "deviations": []},
        "config": {"data": "conll", "method": method, "method_args": {}, "overrides": overrides},
        "run": {"seed": seed, "resumed_from": None},
        **entries,
    }


def _write(folder: Path, metrics: dict[str, Any] | str | bytes) -> Path:
    folder.mkdir(parents=True)
    path = folder / "metrics.json"
    if isinstance(metrics, bytes):
        path.write_bytes(metrics)
    else:
        path.write_text(metrics if isinstance(metrics, str) else json.dumps(metrics))
    return path


def _pooled(table: Any, method: str) -> dict[str, str]:
    rows = [dict(zip(table.headers, r, strict=True)) for r in table.rows if r[0] == method]
    assert len(rows) == 1, table.rows
    return rows[0]


SIGTERM = {"signal": "SIGTERM", "note": "training stopped by a signal"}


# ------------------------------------------------------------------------------ superseding


def _history(root: Path, epochs: int) -> None:
    """history.csv of ``epochs`` epochs: train loss 1.0 per task per epoch, 5 s per epoch."""
    lines = ["phase,epoch,train/loss/mnist,train/loss/fashion,time/train_s"]
    lines += [f"train,{k + 1},1.0,{1.0 + k},5.0" for k in range(epochs)]
    (root / "history.csv").write_text("\n".join(lines) + "\n")


def _mnist(balancer: str, epochs: int, **entries: Any) -> dict[str, Any]:
    return {
        "test": {"mnist": {"accuracy": 0.9}, "fashion": {"accuracy": 0.8}},
        "epochs": {"trained": epochs, "best": epochs},
        "data": {"name": "mnist3", "tasks": ["mnist", "fashion"]},
        "config": {
            "data": "mnist3",
            "method": "hard",
            "balancer": balancer,
            "method_args": {},
            "overrides": [f"balancer={balancer}", "trainer.seed=0"],
        },
        "run": {"seed": 0},
        **entries,
    }


def test_a_resumed_run_supersedes_the_folder_it_resumed_in_fig6(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "fig6"
    cut = root / "equal_cut"
    _write(cut, _mnist("equal", 1, interrupted=SIGTERM))
    _history(cut, 1)
    resumed = {"command": "mtlrun ...", "resumed_from": str(cut / "checkpoints" / "last.pt")}
    _write(root / "equal_resumed", _mnist("equal", 3, run={"seed": 0, **resumed}))
    _history(root / "equal_resumed", 3)
    _write(root / "mgda", _mnist("mgda", 3))
    _history(root / "mgda", 3)

    assert [r.rel for r in collect(root)] == ["equal_resumed", "mgda"]
    rows = {row[0]: row for row in fig6_table(collect(root)).rows}
    # n 1 and 3 epochs, not "2" and "1, 3"; final loss 1.0 + 3.0, 3 × 5 s
    assert rows["equal"][1:6] == ["mnist3", "1", "3", "4.0000", "15.0"]
    assert main([str(root), "--table", "fig6"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[:2] == [
        f"2 runs under {root}",
        "1 run(s) superseded by the run that resumed them, in no table: "
        "`equal_cut` → `equal_resumed`",
    ]


def test_a_chain_of_resumes_keeps_its_last_run_across_machines_and_path_forms(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A resumed by B (new ``resumed_from_dir``, written on another machine) resumed by C (old
    ``resumed_from``, a checkpoint path as given): only C pools with seed 1."""
    root = tmp_path / "multirun"
    sweep = root / "2026-01-01" / "12-00-00"
    elsewhere = "/cluster/home/someone/outputs/multirun/2026-01-01/12-00-00/0_a"
    _write(sweep / "0_a", _metrics(0.90, epochs=(1, 1), interrupted=SIGTERM))
    b = _metrics(0.93, epochs=(2, 2), interrupted=SIGTERM)
    b["run"]["resumed_from_dir"] = elsewhere
    _write(sweep / "1_b", b)
    c = _metrics(0.95)
    c["run"]["resumed_from"] = str(sweep / "1_b" / "checkpoints" / "last.pt")
    _write(sweep / "2_c", c)
    _write(sweep / "3_seed1", _metrics(0.96, 0.90, seed=1))
    # seed 2 of another sweep whose folder ends like 3_seed1: no run of this tree, none superseded
    s2 = _metrics(0.97, seed=2)
    s2["run"]["resumed_from"] = f"{elsewhere[:-4]}/3_seed1/checkpoints/last.pt"
    _write(root / "other" / "4_s2", s2)

    records = collect(root)
    assert [r.rel for r in records] == [
        "2026-01-01/12-00-00/2_c",
        "2026-01-01/12-00-00/3_seed1",
        "other/4_s2",
    ]
    runs = _pooled(generic_table(records), "hard")
    assert [runs[k] for k in ("n", "Seeds", "Epochs", "pos acc", "ner F1", "Dev.")] == [
        "3", "0, 1, 2", "3, 3, 3", "96.00 ± 1.00", "88.67 ± 1.15", "",
    ]  # fmt: skip
    hard = _pooled(table_4_2(records), "Hard")
    assert (hard["n"], hard["POS acc"], hard["NER F1"]) == ("3", "96.00 ± 1.00", "88.67 ± 1.15")
    assert main([str(root), "--table", "4.2"]) == 0
    assert (
        "2 run(s) superseded by the run that resumed them, in no table: "
        "`2026-01-01/12-00-00/0_a` → `2026-01-01/12-00-00/2_c`, "
        "`2026-01-01/12-00-00/1_b` → `2026-01-01/12-00-00/2_c`"
    ) in capsys.readouterr().out.splitlines()


# ------------------------------------------------------------------------- the runs table


def test_runs_table_pools_seeds_with_n_seeds_and_epochs(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    _write(root / "hard_s0", _metrics(0.95, 0.88, seed=0))
    _write(root / "hard_s1", _metrics(0.96, 0.90, seed=1, epochs=(4, 2)))
    _write(root / "single_s0", _metrics(0.94, seed=0, method="single"))
    table = generic_table(collect(root))
    assert table.headers == [
        "Method", "Setting", "Data", "n", "Seeds", "Epochs", "pos acc", "ner F1", "chunk F1",
        "Params used", "Train s", "Search s", "Dev.",
    ]  # fmt: skip
    assert table.rows == [
        ["hard", "", "conll", "2", "0, 1", "3, 4", "95.50 ± 0.71", "89.00 ± 1.41",
         "90.00", "1000", "10.5 ± 0.7", "–", ""],
        ["single", "", "conll", "1", "0", "3", "94.00", "88.00", "90.00", "1000", "10.0", "–", ""],
    ]  # fmt: skip


# ------------------------------------------------------------------- runs without results


def test_runs_without_test_metrics_are_skipped_with_a_note_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "runs"
    _write(root / "a_hard_s0", _metrics(0.95))
    empty = _write(root / "b_empty", "{}")
    cut = _write(root / "c_cut", _metrics(None, epochs=(0, 0), interrupted=SIGTERM))
    untrained = _write(root / "d_old_cut", _metrics(0.2, epochs=(0, 0), interrupted=SIGTERM))
    nan = {"task": "ner", "epoch": 1, "step": 7, "note": "non-finite loss"}
    diverged = _write(root / "e_diverged", _metrics(None, epochs=(0, 0), diverged=nan))

    with caplog.at_level(logging.WARNING, logger="mtlrun.report"):
        assert [r.rel for r in collect(root)] == ["a_hard_s0"]
    assert f"skipping {empty}: no test metrics" in caplog.text
    assert f"skipping {cut}: no test metrics: stopped by SIGTERM, before a best epoch" in (
        caplog.text
    )
    assert f"skipping {untrained}: stopped by SIGTERM before a best epoch" in caplog.text
    assert (
        f"skipping {diverged}: no test metrics: diverged at epoch 1 step 7 (ner loss not finite), "
        "before a best epoch"
    ) in caplog.text
    assert main([str(root), "--table", "runs"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"1 runs under {root}; 4 metrics.json skipped (see warnings)"
    table = generic_table(collect(root))
    assert [row[:4] for row in table.rows] == [["hard", "", "conll", "1"]]


def test_unreadable_metrics_json_is_skipped_with_a_warning_never_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "runs"
    bad = [
        _write(root / "deep", "[" * 100_000 + "]" * 100_000),  # too deep for Python's parser
        _write(root / "surrogate", '{"config": {"method": "\\ud800"}}'),  # not printable text
        _write(root / "latin1", b'{"config": {"method": "h\xe4rd"}}'),
        _write(root / "list", "[1, 2]"),
    ]
    _write(root / "inf_s0", _metrics(float("inf"), seed=0))  # json writes Infinity
    _write(root / "inf_s1", _metrics(0.96, seed=1))
    assert main([str(root)]) == 0
    out, err = capsys.readouterr()
    for path in bad:
        assert f"mtlrun-report: warning: skipping {path}: " in err
    assert "Traceback" not in err
    hard = _pooled(generic_table(collect(root)), "hard")
    assert (hard["n"], hard["pos acc"]) == ("2", "96.00")  # ±inf is no number to average


# --------------------------------------------------------------------------- diverged runs


def test_diverged_runs_are_marked_and_count_only_with_a_best_epoch(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    _write(root / "hard_s0", _metrics(0.95, 0.88, seed=0))
    nan = {"task": "ner", "epoch": 3, "step": 17, "loss": "nan", "note": "non-finite loss"}
    _write(root / "hard_s1", _metrics(0.96, 0.90, seed=1, epochs=(3, 2), diverged=nan))
    early = {"task": "pos", "epoch": 1, "step": 3, "loss": "inf", "note": "non-finite loss"}
    _write(root / "hard_s2", _metrics(0.10, 0.05, seed=2, epochs=(0, 0), diverged=early))
    broken = {"task": "pos", "epoch": 2, "step": None, "loss": "nan", "note": "..."}
    _write(root / "hard_s3", _metrics(float("nan"), seed=3, epochs=(2, 1), diverged=broken))

    records = collect(root)
    note = (
        "† `hard_s1` deviates from the paper's protocol: "
        "diverged at epoch 3 step 17 (ner loss not finite); test scores from best epoch 2"
    )
    hard = _pooled(table_4_2(records), "Hard †")
    assert (hard["n"], hard["POS acc"], hard["NER F1"]) == ("2", "95.50 ± 0.71", "89.00 ± 1.41")
    assert table_4_2(records).notes == [note]
    runs = _pooled(generic_table(records), "hard")
    assert (runs["n"], runs["Seeds"], runs["Epochs"], runs["Dev."]) == ("2", "0, 1", "3, 3", "†")
    assert note in generic_table(records).notes


def test_departures_from_the_authors_code_are_marked_and_named_by_component(
    tmp_path: Path,
) -> None:
    root = tmp_path / "runs"
    fidelity = {"backbone": ["random word embeddings"], "method": ["policy chosen on valid"]}
    _write(root / "hard_s0", _metrics(0.95, 0.88, seed=0, fidelity=fidelity))
    _write(root / "single_s0", _metrics(0.95, 0.88, seed=0, method="single"))
    table = table_4_2(collect(root))
    assert [r[0] for r in table.rows] == ["Single", "Hard †"]
    assert table.notes == [
        "† `hard_s0` deviates from the paper's protocol: "
        "backbone: random word embeddings; method: policy chosen on valid"
    ]


def test_mtlrun_eval_outputs_are_neither_runs_nor_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from mtlrun.report.collect import scan

    metrics = {"test": {"pos": {"accuracy": 0.9}}, "primary": {"pos": "accuracy"}}
    _write(tmp_path / "run", metrics)
    evaluation = {"metrics": {"test": metrics["test"]}, "evaluation": {"run_dir": "run"}}
    _write(tmp_path / "run" / "eval" / "2026-12-03_20-00-00_test_best", evaluation)
    with caplog.at_level(logging.WARNING):
        found = scan(tmp_path)
    assert [r.rel for r in found.records] == ["run"] and found.skipped == []
    assert "skipping" not in caplog.text


def test_tracker_copies_of_a_run_are_not_runs(tmp_path: Path) -> None:
    from mtlrun.report.collect import scan

    metrics = {"test": {"pos": {"accuracy": 0.9}}, "primary": {"pos": "accuracy"}}
    _write(tmp_path / "run", metrics)
    _write(tmp_path / "run" / "wandb" / "run-20261203_200000-abc" / "files", metrics)
    _write(tmp_path / "mlruns" / "1" / "0f1e" / "artifacts", metrics)
    found = scan(tmp_path)
    assert [r.rel for r in found.records] == ["run"] and found.skipped == []
