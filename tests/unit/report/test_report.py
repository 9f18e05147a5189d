"""mtlrun.report on a generated multirun folder of fake metrics.json files.

The scores are chosen so every mean, std (ddof=1) and Δ below is computable by hand:
hard seeds POS 0.953 / 0.957 -> 95.50 ± 0.28; single POS 0.95 -> Δ +0.50 (paper +0.25).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mtlrun.report.cli import main
from mtlrun.report.collect import Record, collect
from mtlrun.report.groups import group_runs
from mtlrun.report.tables import (
    generic_table,
    keep_ratio_sweep,
    masks_table,
    plot_keep_ratio,
    ste_fit_table,
    table_4_2,
    table_4_3,
)

SWEEP = "2026-01-01/12-00-00"
KMNIST_NOTE = "kmnist: no training images; train split carved from test"
CONLL_NOTE = "conll: train limited to 3000 sentences"
STE_ARGS = {"warmup_epochs": 2, "per_layer": False, "search_epochs": 10}


def _metrics(
    method: str,
    scores: dict[str, float],
    *,
    seed: int = 0,
    data: str = "conll",
    params: int = 533930,
    args: dict[str, Any] | None = None,
    overrides: list[str] | None = None,
    deviations: list[str] | None = None,
) -> dict[str, Any]:
    """A metrics.json in the shape run.py writes; ``scores`` are the primary test metrics."""
    test = {
        t: ({"f1": v, "accuracy": 0.5} if t in ("chunk", "ner") else {"accuracy": v})
        for t, v in scores.items()
    }
    return {
        "test": test,
        "valid": test,
        "params": {"supernet": params, "used": params, "per_task": dict.fromkeys(scores, params)},
        "time": {"train_s": 430.14, "search_s": None, "epoch_s": 18.7, "eval_s": 2.1},
        "epochs": {"trained": 3, "best": 3},
        "data": {"name": data, "tasks": list(scores), "sizes": {}, "deviations": deviations or []},
        "config": {
            "name": "run",
            "data": data,
            "method": method,
            "backbone": "CNNBiLSTM",
            "balancer": "Equal",
            "method_args": args or {},
            "overrides": [f"method={method}", f"trainer.seed={seed}", *(overrides or [])],
        },
        "run": {"command": "mtlrun ...", "seed": seed, "git_commit": "abc", "device": "cpu"},
    }


def _conll(pos: float, ner: float, chunk: float) -> dict[str, float]:
    return {"pos": pos, "chunk": chunk, "ner": ner}


def _write(root: Path, name: str, metrics: dict[str, Any] | str) -> None:
    folder = root / SWEEP / name
    folder.mkdir(parents=True)
    text = metrics if isinstance(metrics, str) else json.dumps(metrics)
    (folder / "metrics.json").write_text(text)


@pytest.fixture()
def runs(tmp_path: Path) -> Path:
    """A multirun folder: single, hard ×2 seeds, a sparse_ste keep-ratio sweep with warm-up, a
    sparse_ste run from scratch, a deviating sparse_imp run, a deviating mnist3 run, an ste_fit
    run, and one malformed metrics.json."""
    root = tmp_path / "multirun"
    _write(root, "00_single", _metrics("single", _conll(0.95, 0.89, 0.90), params=1602000))
    _write(root, "01_hard_s0", _metrics("hard", _conll(0.953, 0.88, 0.91), seed=0))
    _write(root, "02_hard_s1", _metrics("hard", _conll(0.957, 0.89, 0.92), seed=1))
    for i, (ratio, pos) in enumerate([(0.1, 0.93), (0.3, 0.94), (0.5, 0.96)]):
        m = _metrics("sparse_ste", _conll(pos, 0.89, 0.91), args={**STE_ARGS, "keep_ratio": ratio})
        if ratio == 0.5:
            m["epochs"] = {"trained": 1, "best": 1}
            m["epochs"]["phases"] = {"warmup": 2, "search": 10, "train": 1}
            m["time"]["search_s"] = 76.6
            m["masks"] = {
                "density": {"pos": 0.5, "chunk": 0.5, "ner": 0.5},
                "iou": {"pos|chunk": 0.4, "pos|ner": 0.35, "chunk|ner": 0.3},
                "overlap_ratio": 0.2,
            }
        _write(root, f"1{i}_ste_kr{ratio}", m)
    scratch = {**STE_ARGS, "warmup_epochs": 0, "keep_ratio": 0.5}
    _write(root, "20_ste_scratch", _metrics("sparse_ste", _conll(0.95, 0.88, 0.90), args=scratch))
    imp = {"keep_ratio": 0.5, "warmup_epochs": 2}
    _write(
        root,
        "30_imp",
        _metrics("sparse_imp", _conll(0.955, 0.9, 0.915), args=imp, deviations=[CONLL_NOTE]),
    )
    mnist = {"mnist": 0.98, "fashion": 0.88, "kmnist": 0.9}
    _write(
        root,
        "40_mnist",
        _metrics("hard", mnist, data="mnist3", params=2616, deviations=[KMNIST_NOTE]),
    )
    ste_fit = _metrics("ste_fit", {})
    del ste_fit["test"]
    ste_fit["ste_fit"] = {
        "frac_over_0.05": {"mean": 0.0, "std": 0.0},
        "frac_over_0.01": {"mean": 0.2, "std": 0.021},
        "mean_abs_error": {"mean": 0.0063, "std": 0.0001},
    }
    _write(root, "50_ste_fit", ste_fit)
    _write(root, "60_broken", "{not json")
    return root


def _row(table: Any, first: str) -> dict[str, str]:
    rows = [r for r in table.rows if r[0] == first]
    assert len(rows) == 1, [r[0] for r in table.rows]
    return dict(zip(table.headers, rows[0], strict=True))


# ---------------------------------------------------------------------------------- collect


def test_collect_loads_every_run_and_skips_malformed_json_with_a_warning(
    runs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="mtlrun.report"):
        records = collect(runs)
    assert len(records) == 10
    assert records[0].rel == f"{SWEEP}/00_single"
    assert records[0].path == runs / SWEEP / "00_single" / "metrics.json"
    assert str(runs / SWEEP / "60_broken" / "metrics.json") in caplog.text


def test_collect_accepts_a_single_run_folder(runs: Path) -> None:
    (record,) = collect(runs / SWEEP / "01_hard_s0")
    assert record.rel == "01_hard_s0" and record.method == "hard"


def test_old_runs_class_name_and_command_fallback(tmp_path: Path) -> None:
    m = _metrics("HardSharing", _conll(0.9, 0.8, 0.85))
    del m["config"]["overrides"]
    m["run"]["command"] = "mtlrun data=conll optim.lr=0.1 trainer.seed=3"
    record = Record(tmp_path, "old", m)
    assert record.method == "hard"
    assert record.overrides == ["data=conll", "optim.lr=0.1", "trainer.seed=3"]


def test_groups_join_seeds_and_label_differing_settings(runs: Path) -> None:
    records = collect(runs)
    groups = group_runs(
        [r for r in records if r.method in ("hard", "sparse_ste") and r.data_name == "conll"]
    )
    assert [len(g.records) for g in groups] == [2, 1, 1, 1, 1]
    assert [g.label for g in groups] == [
        "",
        "keep_ratio=0.1, warmup_epochs=2",
        "keep_ratio=0.3, warmup_epochs=2",
        "keep_ratio=0.5, warmup_epochs=2",
        "keep_ratio=0.5, warmup_epochs=0",
    ]


# ----------------------------------------------------------------------------------- tables


def test_table_4_2_mean_std_delta_and_paper_beside(runs: Path) -> None:
    table = table_4_2(collect(runs))
    assert [r[0] for r in table.rows] == [
        "Single",
        "Hard",
        "Sun et al. †",
        "DML (keep_ratio=0.1, warmup_epochs=2)",
        "DML (keep_ratio=0.3, warmup_epochs=2)",
        "DML (keep_ratio=0.5, warmup_epochs=2)",
        "DML (keep_ratio=0.5, warmup_epochs=0)",
    ]
    hard = _row(table, "Hard")
    assert hard == {
        "System": "Hard",
        "n": "2",
        "POS acc": "95.50 ± 0.28",
        "POS paper": "95.34",
        "POS Δ": "+0.50 (paper +0.25)",
        "NER F1": "88.50 ± 0.71",
        "NER paper": "88.68",
        "NER Δ": "-0.50 (paper -0.68)",
        "Chunk F1": "91.50 ± 0.71",
        "Chunk paper": "90.92",
        "Chunk Δ": "+1.50 (paper +1.00)",
        "# Params": "534k",
        "Params paper": "534k",
        "Epochs": "3",
        "Search s": "–",
    }
    dml = _row(table, "DML (keep_ratio=0.5, warmup_epochs=2)")
    assert (dml["Epochs"], dml["Search s"]) == ("warmup 2 + search 10 + train 1", "76.6")
    single = _row(table, "Single")
    assert (single["POS acc"], single["POS Δ"], single["# Params"]) == ("95.00", "–", "1602k")


def test_table_4_2_without_our_single_has_no_delta(runs: Path) -> None:
    table = table_4_2([r for r in collect(runs) if r.method != "single"])
    hard = _row(table, "Hard")
    assert (hard["POS Δ"], hard["NER Δ"], hard["Chunk Δ"]) == ("–", "–", "–")


def test_deviating_rows_are_marked_and_footnoted(runs: Path) -> None:
    records = collect(runs)
    note = f"† `{SWEEP}/30_imp` deviates from the paper's protocol: {CONLL_NOTE}"
    assert table_4_2(records).notes == [note]
    assert _row(table_4_3(records), "Sun et al. †")["Init"] == "Warm-up (2 epochs)"
    runs_table = generic_table(records)
    assert _setting(runs_table, "hard", "mnist3")["Dev."] == "†"
    assert _setting(runs_table, "hard", "conll")["Dev."] == ""
    assert (
        f"† `{SWEEP}/40_mnist` deviates from the paper's protocol: {KMNIST_NOTE}"
        in runs_table.notes
    )
    assert note + "  " in table_4_2(records).to_markdown()


def test_table_4_3_splits_by_warmup(runs: Path) -> None:
    table = table_4_3(collect(runs))
    assert [(r[0], r[1]) for r in table.rows] == [
        ("Sun et al. †", "Warm-up (2 epochs)"),
        ("DML (keep_ratio=0.5)", "From scratch"),
        ("DML (keep_ratio=0.1)", "Warm-up (2 epochs)"),
        ("DML (keep_ratio=0.3)", "Warm-up (2 epochs)"),
        ("DML (keep_ratio=0.5)", "Warm-up (2 epochs)"),
    ]
    scratch = dict(zip(table.headers, table.rows[1], strict=True))
    assert scratch["POS acc"] == "95.00" and scratch["POS paper"] == "95.41"
    assert dict(zip(table.headers, table.rows[4], strict=True))["Chunk paper"] == "91.52"


def test_keep_ratio_sweep_table_and_plot(runs: Path, tmp_path: Path) -> None:
    records = collect(runs)
    table = keep_ratio_sweep(records)
    assert table.headers == ["Method", "Data", "keep ratio", "n", "pos acc", "chunk F1", "ner F1"]
    assert table.rows == [
        ["DML (warmup_epochs=2)", "conll", "0.1", "1", "93.00", "91.00", "89.00"],
        ["DML (warmup_epochs=2)", "conll", "0.3", "1", "94.00", "91.00", "89.00"],
        ["DML (warmup_epochs=2)", "conll", "0.5", "1", "96.00", "91.00", "89.00"],
    ]
    png = plot_keep_ratio(records, tmp_path / "plots" / "sweep.png")
    assert png is not None and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_keep_ratio(records[:3], tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_ste_fit_table_beside_the_thesis(runs: Path) -> None:
    table = ste_fit_table(collect(runs))
    assert table.headers == ["Run", "Quantity", "Ours", "Thesis"]
    assert [r[1:] for r in table.rows] == [
        ["Fraction with |error| > 0.05", "0.00%", "0%"],
        ["Fraction with |error| > 0.01", "20.00 ± 2.10%", "20.26 ± 2.13%"],
        ["Mean |error|", "0.0063 ± 0.0001", "0.0063 ± 0.0001"],
    ]


def _setting(table: Any, method: str, data: str, label: str = "") -> dict[str, str]:
    """The runs table's row of one setting (method, data, label)."""
    rows = [r for r in table.rows if r[:3] == [method, label, data]]
    assert len(rows) == 1, [r[:3] for r in table.rows]
    return dict(zip(table.headers, rows[0], strict=True))


def test_generic_table_pools_the_seeds_of_a_setting(runs: Path) -> None:
    table = generic_table(collect(runs))
    assert [r[:4] for r in table.rows] == [
        ["single", "", "conll", "1"],
        ["hard", "", "conll", "2"],
        ["sparse_ste", "keep_ratio=0.1, warmup_epochs=2", "conll", "1"],
        ["sparse_ste", "keep_ratio=0.3, warmup_epochs=2", "conll", "1"],
        ["sparse_ste", "keep_ratio=0.5, warmup_epochs=2", "conll", "1"],
        ["sparse_ste", "keep_ratio=0.5, warmup_epochs=0", "conll", "1"],
        ["sparse_imp", "", "conll", "1"],
        ["hard", "", "mnist3", "1"],
    ]  # the ste_fit run has no test scores: its own table reports it
    assert table.headers[6:] == [
        "pos acc", "chunk F1", "ner F1", "mnist acc", "fashion acc", "kmnist acc",
        "Params used", "Train s", "Search s", "Dev.",
    ]  # fmt: skip
    hard = _setting(table, "hard", "conll")
    assert [hard[k] for k in ("Seeds", "Epochs", "pos acc", "ner F1", "chunk F1")] == [
        "0, 1", "3, 3", "95.50 ± 0.28", "88.50 ± 0.71", "91.50 ± 0.71",
    ]  # fmt: skip
    assert [hard[k] for k in ("mnist acc", "Params used", "Train s", "Search s")] == [
        "–", "533930", "430.1", "–",
    ]  # fmt: skip
    assert _setting(table, "sparse_imp", "conll")["Dev."] == "†"


def test_masks_table(runs: Path) -> None:
    table = masks_table(collect(runs))
    assert table.headers == [
        "Run", "Method", "pos density", "chunk density", "ner density",
        "IoU pos|chunk", "IoU pos|ner", "IoU chunk|ner", "Overlap ratio",
    ]  # fmt: skip
    assert table.rows == [
        [
            f"{SWEEP}/12_ste_kr0.5",
            "sparse_ste",
            "0.500",
            "0.500",
            "0.500",
            "0.400",
            "0.350",
            "0.300",
            "0.200",
        ]
    ]
    assert "| IoU pos\\|chunk |" in table.to_markdown()


# -------------------------------------------------------------------------------------- CLI


def test_cli_prints_markdown_and_writes_csv_and_png(
    runs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(runs)]) == 0
    out, err = capsys.readouterr()
    for title in ("Table 4.2", "Table 4.3", "Keep-ratio sweep", "Appendix A", "masks", "### Runs"):
        assert title in out
    assert f"{runs / SWEEP / '60_broken' / 'metrics.json'}" in err
    names = sorted(p.name for p in runs.glob("report_*"))
    assert names == [
        "report_keep_ratio.csv",
        "report_keep_ratio.png",
        "report_masks.csv",
        "report_runs.csv",
        "report_ste_fit.csv",
        "report_table_4_2.csv",
        "report_table_4_3.csv",
    ]
    rows = list(csv.reader(io.StringIO((runs / "report_table_4_2.csv").read_text())))
    assert rows[0][:3] == ["System", "n", "POS acc"]
    assert rows[2][:5] == ["Hard", "2", "95.50 ± 0.28", "95.34", "+0.50 (paper +0.25)"]
    assert rows[-2:] == [
        [],
        [f"† `{SWEEP}/30_imp` deviates from the paper's protocol: {CONLL_NOTE}"],
    ]
    assert (runs / "report_keep_ratio.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_one_table_into_csv_dir(
    runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(runs), "--table", "ste_fit", "--csv-dir", str(tmp_path / "csv")]) == 0
    out = capsys.readouterr().out
    assert "Appendix A" in out and "Table 4.2" not in out
    assert [p.name for p in (tmp_path / "csv").iterdir()] == ["report_ste_fit.csv"]


def test_cli_empty_folder_exits_1_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(tmp_path)]) == 1
    assert capsys.readouterr().err == f"mtlrun-report: no metrics.json found under {tmp_path}\n"


def test_cli_missing_folder_exits_1_saying_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "outputs" / "no_such_sweep"
    assert main([str(missing)]) == 1
    assert capsys.readouterr().err == f"mtlrun-report: no such folder: {missing}\n"
    assert not missing.exists()


def test_cli_requested_table_without_runs_exits_1(
    runs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(runs / SWEEP / "00_single"), "--table", "masks"]) == 1
    assert "fits table masks" in capsys.readouterr().err


def test_python_m_mtlrun_report_runs_without_torch(runs: Path) -> None:
    probe = (
        "import sys, mtlrun.report.cli; "
        "assert not {'torch', 'mtlrun.training', 'mtlrun.model'} & set(sys.modules), 'training code imported'"
    )
    assert subprocess.run([sys.executable, "-c", probe], check=False).returncode == 0
    done = subprocess.run(
        [sys.executable, "-m", "mtlrun.report", str(runs), "--table", "runs"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "### Runs" in done.stdout and "| hard |  | conll | 2 | 0, 1 | 3, 3 |" in done.stdout


def test_a_run_stopped_by_a_signal_counts_as_a_deviation(tmp_path: Path) -> None:
    m = _metrics("hard", _conll(0.9, 0.8, 0.85))
    assert Record(tmp_path, "whole", m).deviations == []
    m["epochs"] = {"trained": 4, "best": 3}
    m["interrupted"] = {"signal": "SIGTERM", "note": "..."}
    assert Record(tmp_path, "cut", m).deviations == ["stopped by SIGTERM after 4 epoch(s)"]
