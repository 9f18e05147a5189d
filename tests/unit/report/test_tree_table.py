"""Vu (2019) Table 1 in the report: searched vs random trees, pooled over seeds, and the affinity.

Hand values: searched kmnist accuracies 0.91 / 0.93 -> 0.9200 ± 0.0141; affinity kmnist–mnist
0.004 / 0.006 -> 0.0050 ± 0.0014.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mtlrun.report.cli import main
from mtlrun.report.collect import collect
from mtlrun.report.tree_table import affinity_table, table1

TASKS = ["mnist", "fashion", "kmnist"]


def _metrics(seed: int, acc: float, random_seed: int | None, affinity: float) -> dict[str, Any]:
    split = {"block": "conv2", "groups": [["x"], ["y"]], "copies": ["conv2-1", "conv2-2"]}
    paths = {
        "mnist": ["conv1", "conv2-1", "head:mnist"],
        "kmnist": ["conv1", "conv2-1", "head:kmnist"],
        "fashion": ["conv1", "conv2-2", "head:fashion"],
    }
    return {
        "test": {t: {"accuracy": acc} for t in TASKS},
        "valid": {t: {"accuracy": acc} for t in TASKS},
        "loss": {"test": {t: 0.1 for t in TASKS}},
        "params": {"used": 1000, "per_task": {t: 800 for t in TASKS}},
        "epochs": {"trained": 3, "best": 3},
        "data": {
            "name": "mnist3",
            "tasks": TASKS,
            "deviations": [],
            "sizes": {"test": {t: 1000 for t in TASKS}},
        },  # fmt: skip
        "config": {
            "method": "tree_search",
            "data": "mnist3",
            "method_args": {
                "random_splits": random_seed is not None,
                "random_seed": random_seed or 0,
                "n_splits": 1,
            },
        },
        "run": {"seed": seed},
        "search": {
            "tree": {"steps": [{"step": 0}, {"step": 1, "split": split, "paths": paths}]},
            "task_affinity": {
                "tasks": ["fashion", "kmnist", "mnist"],
                "matrix": [[0, 0.02, 0.03], [0.02, 0, affinity], [0.03, affinity, 0]],
            },
        },
    }


def _write(root: Path) -> None:
    runs = {
        "searched_seed0": _metrics(0, 0.91, None, 0.004),
        "searched_seed1": _metrics(1, 0.93, None, 0.006),
        "random1_seed0": _metrics(0, 0.90, 1, 0.5),
        "random2_seed0": _metrics(0, 0.89, 2, 0.5),
    }
    for name, metrics in runs.items():
        (root / name).mkdir(parents=True)
        (root / name / "metrics.json").write_text(json.dumps(metrics))


def test_table1_pools_seeds_per_tree_kind_beside_the_thesis(tmp_path: Path) -> None:
    _write(tmp_path)
    table = table1(collect(tmp_path))
    rows = {row[0]: dict(zip(table.headers, row, strict=True)) for row in table.rows}
    assert list(rows) == ["searched", "random 1", "random 2"]
    assert rows["searched"]["n"] == "2"
    assert rows["searched"]["kmnist acc"] == "0.9200 ± 0.0141"
    assert rows["searched"]["kmnist acc (thesis)"] == "0.9119"
    assert rows["random 2"]["mnist acc (thesis)"] == "0.9910"
    assert rows["searched"]["Splits"] == "conv2: mnist,kmnist | fashion"
    # the authors' eval_epoch: 0.1 per image × ceil(1000/256) = 4 batches / 1000 images
    assert rows["searched"]["kmnist loss, thesis scale (thesis)"] == "0.00040 (0.00130)"


def test_affinity_is_averaged_over_searched_runs_only(tmp_path: Path) -> None:
    _write(tmp_path)
    table = affinity_table(collect(tmp_path))
    rows = {row[0]: row for row in table.rows}
    assert rows["kmnist–mnist"] == ["kmnist–mnist", "2", "0.0050 ± 0.0014", "0.0050", "1.00"]
    assert rows["fashion–mnist"][2:] == ["0.0300", "0.0243", "1.23"]


def test_affinity_of_a_mean_importance_run_is_doubled_to_the_authors_scale(tmp_path: Path) -> None:
    metrics = _metrics(0, 0.9, None, 0.004)
    metrics["config"]["method_args"]["importance"] = "mean"
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "metrics.json").write_text(json.dumps(metrics))
    rows = {row[0]: row for row in affinity_table(collect(tmp_path)).rows}
    assert rows["kmnist–mnist"][2] == "0.0080"


def test_report_table1_prints_both_tables(tmp_path: Path, capsys) -> None:
    _write(tmp_path)
    assert main([str(tmp_path), "--table", "table1"]) == 0
    out = capsys.readouterr().out
    assert "Vu (2019) Table 1: searched vs random trees" in out
    assert "Vu (2019) Table 1(a): task affinity" in out
    assert (tmp_path / "report_table1.csv").is_file()
    assert (tmp_path / "report_table1_affinity.csv").is_file()


def test_runs_table_comes_with_the_adashare_policies(tmp_path: Path, capsys) -> None:
    metrics = _metrics(0, 0.9, None, 0.01)
    metrics["config"]["method"] = "adashare"
    metrics["search"] = {
        "policy": {"mnist": {"layer1_0": True, "layer1_1": False}, "fashion": {"layer1_0": True, "layer1_1": True}},
        "select_prob": {"mnist": {"layer1_0": 0.9, "layer1_1": 0.25}},
    }  # fmt: skip
    (tmp_path / "ada").mkdir()
    (tmp_path / "ada" / "metrics.json").write_text(json.dumps(metrics))
    assert main([str(tmp_path), "--table", "runs"]) == 0
    out = capsys.readouterr().out
    assert "| ada | mnist | 1/2 | layer1_1 (0.25) |" in out
    assert "| ada | fashion | 2/2 | – |" in out


def test_a_repeated_seed_counts_once_in_table1_and_the_affinity(tmp_path: Path) -> None:
    _write(tmp_path)
    again = _metrics(0, 0.99, None, 0.010)  # seed 0 of the searched tree, run again later
    (tmp_path / "z_rerun").mkdir()
    (tmp_path / "z_rerun" / "metrics.json").write_text(json.dumps(again))
    os.utime(tmp_path / "z_rerun" / "metrics.json", (2e9, 2e9))  # the newest
    table = table1(collect(tmp_path))
    rows = {row[0]: dict(zip(table.headers, row, strict=True)) for row in table.rows}
    assert rows["searched"]["n"] == "2"  # seeds 0 (the rerun) and 1
    assert rows["searched"]["kmnist acc"] == "0.9600 ± 0.0424"  # 0.99 and 0.93
    assert any("`searched_seed0` repeats seed 0 of the searched tree" in n for n in table.notes)
    affinity = {row[0]: row for row in affinity_table(collect(tmp_path)).rows}
    assert affinity["kmnist–mnist"][1:3] == ["2", "0.0080 ± 0.0028"]  # 0.010 and 0.006
