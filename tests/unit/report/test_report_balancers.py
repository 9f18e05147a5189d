"""The Vu (2019) balancer tables (fig6, fig3, fig4) on generated run folders.

Every number below is computable by hand from the histories written here (three epochs, tasks
mnist and fashion). E.g. equal seeds end at total training loss 0.5+1.0=1.5 and 0.7+1.1=1.8,
so 1.65 ± 0.2121 (ddof=1); MGDA's solver iterations 2, 3, 4 (projection) against 40, 60, 80
(Frank-Wolfe) give means 3 and 60, a ratio of 20. A run with ``balancer.compare_solvers=true``
logs both solvers on the same problems: 30, 50, 70 against 2, 3, 7, means 50 and 4, 12.5x.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import io
import json
import logging
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mtlrun.report.balancing import compares_balancers
from mtlrun.report.cli import main
from mtlrun.report.collect import collect
from mtlrun.report.history import balancer_name, balancer_setting, history
from mtlrun.report.plots import plot_fig4
from mtlrun.report.solver_iterations import compares_solvers, fig3_table, iteration_curves
from mtlrun.report.stationarity import fig4_table, kkt_ratio_curves, kkt_tolerances
from mtlrun.report.tables import generic_table
from mtlrun.report.wall_time import fig6_table

REPO = Path(__file__).resolve().parents[3]
BENCH = REPO / "scripts" / "bench_balancers.py"
COMMON = ["experiment=thesis_fig6", "data.limit_train=6000"]
NOTE = "train of mnist, fashion cut to the first 6000 images (data.limit_train)"


def _metrics(
    balancer: str,
    test: dict[str, float],
    overrides: list[str],
    seed: int = 0,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A metrics.json in the shape run.py writes."""
    return {
        "test": {t: {"accuracy": v} for t, v in test.items()},
        "time": {"train_s": 1.0, "search_s": None},
        "data": {"name": "mnist3", "tasks": list(test), "deviations": [NOTE]},
        "config": {
            "name": "thesis_fig6",
            "data": "mnist3",
            "method": "hard",
            "backbone": "LeNetBN",
            "balancer": balancer,
            "method_args": {},
            "overrides": [*COMMON, f"trainer.seed={seed}", *overrides],
        },
        "run": {"seed": seed},
        **(extra or {}),
    }


def _history(columns: dict[str, list[Any]]) -> str:
    """history.csv text: phase and epoch columns, then ``columns`` (None -> empty cell)."""
    n = len(next(iter(columns.values())))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["phase", "epoch", *columns])
    for k in range(n):
        cells = ["" if v[k] is None else v[k] for v in columns.values()]
        writer.writerow(["train", k + 1, *cells])
    return buffer.getvalue()


def _losses(mnist: list[float], fashion: list[float], train_s: float) -> dict[str, list[Any]]:
    return {
        "train/loss/mnist": mnist,
        "train/loss/fashion": fashion,
        "time/train_s": [train_s] * len(mnist),
    }


def _write(root: Path, name: str, metrics: dict[str, Any], columns: dict | None, solver=None):
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    if columns is not None:
        (folder / "history.csv").write_text(_history(columns))
    if solver is not None:  # the solver only in the resolved config, as with a default
        (folder / ".hydra").mkdir()
        (folder / ".hydra" / "config.yaml").write_text(
            f"balancer:\n  _target_: mtlrun.balancers.mgda.MGDA\n  name: mgda\n  solver: {solver}\n"
        )


@pytest.fixture()
def runs(tmp_path: Path) -> Path:
    """equal (2 seeds), mgda projection, mgda frank_wolfe, hybrid (2 seeds), one old run."""
    root = tmp_path / "fig6"
    acc = {"mnist": 0.9, "fashion": 0.8}
    for seed, (mnist, fashion, sec, bal, acc_mnist) in enumerate(
        [
            ([2.0, 1.0, 0.5], [2.0, 1.5, 1.0], 10.0, 2.0, 0.90),
            ([2.0, 1.2, 0.7], [2.0, 1.4, 1.1], 12.0, 3.0, 0.92),
        ]
    ):
        columns = {**_losses(mnist, fashion, sec), "time/balancer_s": [bal] * 3}
        overrides = ["balancer=equal", "balancer.kkt_every=0"]  # monitor off: same setting
        metrics = _metrics("equal", {**acc, "mnist": acc_mnist}, overrides, seed)
        _write(root, f"equal_s{seed}", metrics, columns)
    # frank_wolfe: a run from before kkt/ratio was logged
    for solver, its, kkt, ratio, extra in [
        ("projection", [2, 3, 4], [0.0, 0.25, 0.5], [0.5, 0.3, 0.2], []),
        ("frank_wolfe", [40, 60, 80], [0.0, 0.5, 1.0], None, ["balancer.solver=frank_wolfe"]),
    ]:
        columns = {
            **_losses([1.9, 0.9, 0.4], [1.9, 1.2, 0.8], 20.0),
            "time/balancer_s": [10.0] * 3,
            "mgda/iterations": its,
            "kkt/stationary": kkt,
            **({"kkt/ratio": ratio} if ratio else {}),
        }
        metrics = _metrics("mgda", acc, ["balancer=mgda", *extra])
        _write(root, f"mgda_{solver}", metrics, columns, solver="projection")
    for seed, (mnist, fashion, phases, ratio) in enumerate(
        [
            ([1.8, 0.8, 0.3], [1.8, 1.0, 0.6], [0, 0, 1], [None, None, 0.04]),
            ([1.8, 0.8, 0.4], [1.8, 1.0, 0.7], [0, 1, 1], [None, 0.1, 0.06]),
        ]
    ):
        columns = {
            **_losses(mnist, fashion, 15.0),
            "hybrid/phase": phases,
            "mgda/iterations": [None if p == 0 else 5 for p in phases],
            "kkt/stationary": [None if p == 0 else 1.0 for p in phases],
            "kkt/ratio": ratio,
        }
        # seed 0 records its switch in metrics.json; seed 1 only in history.csv (hybrid/phase)
        extra = {"balancer": {"name": "hybrid", "switch_epoch": 3}} if seed == 0 else {}
        metrics = _metrics("hybrid", acc, ["balancer=hybrid"], seed, extra)
        _write(root, f"hybrid_s{seed}", metrics, columns)
    _write(root, "old_run", _metrics("Equal", acc, []), None)  # no history.csv
    return root


def _write_compare_run(root: Path) -> None:
    """mgda with balancer.compare_solvers=true: projection (the default) updates, and both
    solvers' iterations on the same problems are logged besides."""
    columns = {
        **_losses([1.9, 0.9, 0.4], [1.9, 1.2, 0.8], 20.0),
        "mgda/iterations": [2, 3, 7],
        "mgda/iterations/frank_wolfe": [30, 50, 70],
        "mgda/iterations/projection": [2, 3, 7],
        "kkt/stationary": [0.0, 0.0, 0.0],
        "kkt/ratio": [0.4, 0.2, 0.1],
    }
    overrides = ["balancer=mgda", "balancer.compare_solvers=true"]
    metrics = _metrics("mgda", {"mnist": 0.9, "fashion": 0.8}, overrides)
    _write(root, "mgda_compare", metrics, columns, solver="projection")


@pytest.fixture()
def compare_run(tmp_path: Path) -> Path:
    """One mgda run with balancer.compare_solvers=true (reproduce_fig3.sh's main run)."""
    root = tmp_path / "fig3"
    _write_compare_run(root)
    return root


def _rows(table) -> dict[str, list[str]]:
    return {row[0]: row for row in table.rows}


def test_balancer_name_and_settings_from_every_source(runs: Path) -> None:
    records = {r.rel: r for r in collect(runs)}
    assert balancer_name(records["old_run"]) == "equal"  # class name of older runs
    assert balancer_name(records["hybrid_s0"]) == "hybrid"
    assert balancer_setting(records["mgda_frank_wolfe"], "solver") == "frank_wolfe"  # override
    assert balancer_setting(records["mgda_projection"], "solver") == "projection"  # .hydra
    assert balancer_setting(records["equal_s0"], "solver") is None
    hist = history(records["hybrid_s0"])
    assert hist is not None and hist.column("mgda/iterations") == [None, None, 5.0]
    assert hist.total_train_loss(["mnist", "fashion"]) == pytest.approx([3.6, 1.8, 0.9])


def test_fig6_table_by_hand(runs: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="mtlrun.report"):
        table = fig6_table(collect(runs))
    assert "old_run" in caplog.text and "no history.csv" in caplog.text
    assert table.headers == [
        "Balancer",
        "Data",
        "n",
        "Epochs",
        "Final train loss",
        "Train s",
        "s / epoch",
        "Balancer time %",
        "mnist acc",
        "fashion acc",
        "Switch epoch",
    ]
    rows = _rows(table)
    assert list(rows) == [
        "equal †",
        "hybrid †",
        "mgda (balancer.solver=frank_wolfe) †",
        "mgda †",
    ]
    assert rows["equal †"][1:] == [
        "mnist3",
        "2",
        "3",
        "1.6500 ± 0.2121",
        "33.0 ± 4.2",
        "11.00 ± 1.41",
        "22.5 ± 3.5",
        "91.00 ± 1.41",
        "80.00",
        "–",
    ]
    assert rows["mgda †"][4:8] == ["1.2000", "60.0", "20.00", "50.0"]
    hybrid = rows["hybrid †"]
    assert hybrid[4:8] == ["1.0000 ± 0.1414", "45.0", "15.00", "–"]
    assert hybrid[-1] == "3, 2"  # metrics.json, then the first epoch with hybrid/phase 1
    assert any(NOTE in note for note in table.notes)


def test_a_seed_repeated_by_another_sweep_counts_once_in_the_balancer_figures(runs: Path) -> None:
    """equal seed 1 again (another sweep, newer): n stays 2 and the newer run's numbers are used."""
    columns = {**_losses([2.0, 1.0, 0.1], [2.0, 1.0, 0.1], 30.0), "time/balancer_s": [2.0] * 3}
    overrides = ["balancer=equal", "balancer.kkt_every=0"]
    metrics = _metrics("equal", {"mnist": 0.98, "fashion": 0.8}, overrides, seed=1)
    _write(runs, "zz_equal_s1_again", metrics, columns)
    os.utime(runs / "zz_equal_s1_again" / "metrics.json", (2e9, 2e9))
    table = fig6_table(collect(runs))
    equal = _rows(table)["equal †"]
    assert equal[2] == "2"
    assert equal[8] == "94.00 ± 5.66"  # mnist: seed 0 0.90 and the newer seed 1 0.98
    assert any("`equal_s1` repeats seed 1 of equal" in n for n in table.notes)


def test_fig3_table_by_hand(runs: Path) -> None:
    table = fig3_table(collect(runs))
    assert table.headers[:5] == ["Balancer", "Solver", "Data", "n", "Epochs"]
    by_solver = {(row[0], row[1]): row[4:] for row in table.rows}
    assert by_solver == {
        ("mgda †", "projection"): ["3", "2.0", "3.0", "4.0", "3.0"],
        ("mgda †", "frank_wolfe"): ["3", "40.0", "60.0", "80.0", "60.0"],
        # the hybrid's MGDA epochs only: seed 0 solved in epoch 3, seed 1 in epochs 2 and 3
        ("hybrid †", "–"): ["3", "5.0", "5.0", "5.0", "5.0"],
    }
    assert "frank_wolfe needs 20.0x the iterations of projection (means over epochs)." in (
        table.notes
    )


def test_fig4_table_by_hand(runs: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="mtlrun.report"):
        table = fig4_table(collect(runs))
    assert "equal_s0 for fig4: its history.csv has no kkt/stationary values" in caplog.text
    assert table.headers[4:] == [
        "First %",
        "Middle %",
        "Last %",
        "Mean %",
        "Ratio first",
        "Ratio middle",
        "Ratio last",
        "Ratio mean",
    ]
    rows = {name: row[1:] for name, row in _rows(table).items()}
    assert rows == {
        # kkt/ratio of the MGDA epochs: seed 0 0.04; seed 1 0.1, 0.06 (middle ⌈2/2⌉ = 1st,
        # mean 0.08): first 0.07 ± 0.0424, last 0.05 ± 0.0141, mean 0.06 ± 0.0283
        "hybrid †": ["mnist3", "2", "3", *["100.0"] * 4]
        + ["0.070 ± 0.042", "0.070 ± 0.042", "0.050 ± 0.014", "0.060 ± 0.028"],
        # an older run without kkt/ratio
        "mgda (balancer.solver=frank_wolfe) †": ["mnist3", "1", "3", "0.0", "50.0", "100.0"]
        + ["50.0", "–", "–", "–", "–"],
        "mgda †": ["mnist3", "1", "3", "0.0", "25.0", "50.0", "25.0"]
        + ["0.500", "0.300", "0.200", "0.333"],
    }
    assert any(note.startswith("Ratio (kkt/ratio)") for note in table.notes)


def test_fig4_table_without_ratio_keeps_its_columns(runs: Path) -> None:
    records = [r for r in collect(runs) if r.rel == "mgda_frank_wolfe"]
    table = fig4_table(records)
    assert table.headers[4:] == ["First %", "Middle %", "Last %", "Mean %"]
    assert table.rows[0][4:] == ["0.0", "50.0", "100.0", "50.0"]
    assert not any("kkt/ratio" in note for note in table.notes)


def _png_size(path: Path) -> tuple[int, int]:
    width, height = struct.unpack(">II", path.read_bytes()[16:24])  # the IHDR chunk
    return width, height


def test_fig4_ratio_curves_and_plot(runs: Path, tmp_path: Path) -> None:
    records = collect(runs)
    curves = {c.label: c.values for c in kkt_ratio_curves(records)}
    assert curves["mgda †"] == pytest.approx([0.5, 0.3, 0.2])
    assert curves["mgda (balancer.solver=frank_wolfe) †"] == [None, None, None]
    # epoch 2: only seed 1 had switched; epoch 3: mean of 0.04 and 0.06
    assert curves["hybrid †"] == [None, pytest.approx(0.1), pytest.approx(0.05)]
    assert kkt_tolerances(records) == [0.05]  # no run records it: the default
    # a second panel (kkt/ratio) when a run logged it: 11 in wide at 120 dpi, else 6 in
    two = plot_fig4(records, tmp_path / "two.png")
    old = [r for r in records if r.rel == "mgda_frank_wolfe"]
    one = plot_fig4(old, tmp_path / "one.png")
    assert two is not None and _png_size(two) == (1320, 504)
    assert one is not None and _png_size(one) == (720, 504)


def test_fig3_table_same_gradients(compare_run: Path) -> None:
    records = collect(compare_run)
    assert compares_solvers(records)  # one run, but it ran both solvers: auto shows fig3
    table = fig3_table(records)
    assert [row[:2] + row[4:] for row in table.rows] == [
        ["mgda (same gradients) †", "frank_wolfe", "3", "30.0", "50.0", "70.0", "50.0"],
        ["mgda (same gradients) †", "projection", "3", "2.0", "3.0", "7.0", "4.0"],
    ]
    assert (
        "frank_wolfe needs 12.5x the iterations of projection on the same min-norm problems "
        "(means over epochs)." in table.notes
    )
    assert any(note.startswith("Same gradients") for note in table.notes)
    assert sum("mgda_compare" in note for note in table.notes) == 1  # one deviation note
    labels = [c.label for c in iteration_curves(records)]
    assert labels == ["mgda (same gradients): frank_wolfe †", "mgda (same gradients): projection †"]


def test_fig3_table_same_gradients_beside_separate_runs(runs: Path) -> None:
    _write_compare_run(runs)  # as reproduce_fig3.sh with SEPARATE=1
    records = collect(runs)
    table = fig3_table(records)
    by_solver = {(row[0], row[1]): row[4:] for row in table.rows}
    assert by_solver == {
        ("mgda †", "projection"): ["3", "2.0", "3.0", "4.0", "3.0"],
        ("mgda †", "frank_wolfe"): ["3", "40.0", "60.0", "80.0", "60.0"],
        ("mgda (same gradients) †", "frank_wolfe"): ["3", "30.0", "50.0", "70.0", "50.0"],
        ("mgda (same gradients) †", "projection"): ["3", "2.0", "3.0", "7.0", "4.0"],
        ("hybrid †", "–"): ["3", "5.0", "5.0", "5.0", "5.0"],
    }
    # the footnote's multiple comes from the same-gradient columns (50 / 4), not 60 / 3
    assert any("12.5x" in note for note in table.notes)
    assert not any("20.0x" in note for note in table.notes)
    curves = {c.label: c.values for c in iteration_curves(records)}
    assert curves["mgda: projection †"] == [2.0, 3.0, 4.0]
    assert curves["mgda (same gradients): frank_wolfe †"] == [30.0, 50.0, 70.0]
    assert curves["hybrid †"] == [None, 5.0, 5.0]


def test_auto_prints_the_balancer_figures_only_when_they_compare(runs: Path) -> None:
    records = collect(runs)
    assert compares_balancers(records) and compares_solvers(records)
    equal_only = [r for r in records if balancer_name(r) == "equal"]
    assert not compares_balancers(equal_only) and not compares_solvers(equal_only)
    one_solver = [r for r in records if r.rel == "mgda_projection"]
    assert not compares_solvers(one_solver)  # no compare columns, one solver
    lr_sweep = [dataclasses.replace(r, rel=f"{r.rel}_lr") for r in equal_only]
    for k, record in enumerate(lr_sweep):  # an optimiser sweep with one balancer compares none
        record.metrics["config"]["overrides"].append(f"optim.lr=0.{k + 1}")
    assert not compares_balancers(lr_sweep)
    assert generic_table(equal_only).rows  # the runs table is unaffected


def test_cli_writes_tables_and_pngs(runs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(runs)]) == 0
    out = capsys.readouterr().out
    for title in ("Figure 6", "Figure 3", "Figure 4", "### Runs"):
        assert title in out
    for name in ("fig6", "fig3", "fig4"):
        assert (runs / f"report_{name}.csv").is_file()
        assert (runs / f"report_{name}.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_one_balancer_table(runs: Path, tmp_path: Path) -> None:
    out = tmp_path / "csv"
    assert main([str(runs / "mgda_projection"), "--table", "fig3", "--csv-dir", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["report_fig3.csv", "report_fig3.png"]


def test_cli_balancer_table_without_history_exits_1(
    runs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(runs / "old_run"), "--table", "fig6"]) == 1
    assert "fits table fig6" in capsys.readouterr().err


# ---------------------------------------------------------------------------- the benchmark


def _bench_module():
    spec = importlib.util.spec_from_file_location("bench_balancers", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_bench_skips_a_balancer_missing_from_the_tree() -> None:
    bench = _bench_module()
    row = bench.Row("nope", ("balancer=nope",))
    sec, why, cfg = bench.bench(["data=toy"], row, None, None)
    assert sec is None and cfg is None and why.startswith("not in this tree")


def test_bench_runs_two_steps_on_generated_data() -> None:
    env = {k: v for k, v in os.environ.items() if k != "MTLRUN_DATA"}
    env["OMP_NUM_THREADS"] = "1"  # small steps: threads only contend with the other tests
    done = subprocess.run(
        [sys.executable, str(BENCH), "--steps", "2", "--warmup", "1", "--repeats", "1"]
        + ["--device", "cpu", "--balancers", "equal,mgda_ub,upgrad"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert "| data | backbone | balancer | s/step | × equal | goal | met? |" in lines
    assert any(line.startswith("| mnist3 | lenet_bn | equal | ") for line in lines)
    assert any(line.startswith("| toy | cnn_bilstm | mgda_ub | ") for line in lines)
    assert any("| mnist3 | lenet_bn | mgda_ub | skipped [" in line for line in lines)
    assert any(line.startswith("| toy | cnn_bilstm | upgrad | ") for line in lines)
    assert not any("| pcgrad |" in line for line in lines)  # --balancers: those rows only
