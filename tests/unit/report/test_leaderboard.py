"""The balancer leaderboard (``--table leaderboard``) on generated run folders, and
scripts/leaderboard_balancers.sh with a stand-in mtlrun.

Every number is computed by hand (scores in %, std with ddof=1). mnist3, tasks mnist and fashion:
  equal seeds 0-2: mnist 90, 92, 94 → 92.00 ± 2.00; fashion 80, 80, 83 → 81.00 ± 1.73
    (√((1+1+4)/2) = √3); per-seed means 85, 86, 88.5 → 86.50 ± 1.80 (√((2.25+0.25+4)/2));
    train_s 10, 12, 14 → 12.0 ± 2.0.
  mgda seeds 0-1: mnist 95, 97 → 96.00 ± 1.41; fashion 85, 81 → 83.00 ± 2.83; means 90, 89 →
    89.50 ± 0.71; Δ_m = (4/92 + 2/81) / 2 · 100 = (4.3478 + 2.4691) / 2 = +3.41;
    train_s 20, 30 → 25.0 ± 7.1 (√50).
  mgda (balancer.normalize=l2) seed 0: 92, 81 → mean 86.50, Δ_m +0.00: ties equal at rank 2.
  upgrad seed 0: 80, 70 → 75.00; Δ_m = (−12/92 − 11/81) / 2 · 100 = (−13.0435 − 13.5802) / 2
    = −13.31; train_s 5 → 5.0.
CoNLL (full budget), tasks pos (accuracy), chunk and ner (F1):
  equal seeds 0-1: pos 90, 92 → 91.00 ± 1.41; chunk 80, 82 → 81.00 ± 1.41; ner 60, 64 →
    62.00 ± 2.83; means 76.667, 79.333 → 78.00 ± 1.89.
  dwa seed 0: 93, 78, 66 → 79.00; Δ_m = (2/91 − 3/81 + 4/62) / 3 · 100
    = (2.1978 − 3.7037 + 6.4516) / 3 = +1.65.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from mtlrun.report.cli import main
from mtlrun.report.collect import collect
from mtlrun.report.leaderboard import (
    compares_many_balancers,
    leaderboard_table,
    leaderboards,
    ranks,
)

REPO = Path(__file__).resolve().parents[3]
SCRIPT = REPO / "scripts" / "leaderboard_balancers.sh"
MNIST3 = ["experiment=thesis_fig6", "data.limit_train=6000", "trainer.max_epochs=3"]
NOTE = "train of mnist, fashion cut to the first 6000 images (data.limit_train)"
DEPARTURE = "the inner problem is solved by cvxpy, not scipy"


def _metrics(
    balancer: str,
    test: dict[str, float],
    seed: int,
    train_s: float,
    overrides: list[str],
    *,
    data: str = "mnist3",
    backbone: str = "LeNetBN",
    **entries: Any,
) -> dict[str, Any]:
    """A metrics.json in run.py's shape; CoNLL's chunk and ner are scored by F1."""
    limited = "data.limit_train=6000" in overrides
    primary = {t: "f1" if t in ("chunk", "ner") else "accuracy" for t in test}
    scores = {t: {"accuracy": 0.99, primary[t]: v} for t, v in test.items()}  # chunk: F1
    return {
        "test": scores,
        "primary": primary,
        "time": {"train_s": train_s, "search_s": None},
        "epochs": {"trained": 3, "best": 3},
        "data": {"name": data, "tasks": list(test), "deviations": [NOTE] if limited else []},
        "fidelity": {"backbone": ["one BiLSTM layer"]} if data == "conll" else {},
        "config": {
            "name": "run",
            "data": data,
            "method": "hard",
            "backbone": backbone,
            "balancer": balancer,
            "method_args": {},
            "overrides": [*overrides, f"balancer={balancer}", f"trainer.seed={seed}"],
        },
        "run": {"seed": seed, "finished_at": "2026-12-01T10:00:00+00:00"},
        **entries,
    }


def _write(root: Path, name: str, metrics: dict[str, Any]) -> None:
    (root / name).mkdir(parents=True)
    (root / name / "metrics.json").write_text(json.dumps(metrics))


def _mnist3_runs(root: Path) -> None:
    """The mnist3 runs of the module docstring, a diverged and a stopped run, and a repeat."""
    off = [*MNIST3, "notes=reduced", "balancer.kkt_every=0"]  # the monitor: no setting
    for seed, (mnist, fashion, sec) in enumerate([(0.90, 0.80, 10), (0.92, 0.80, 12),
                                                  (0.94, 0.83, 14)]):  # fmt: skip
        _write(root, f"a_equal_s{seed}", _metrics("equal", {"mnist": mnist, "fashion": fashion},
                                                  seed, sec, off))  # fmt: skip
    older = _metrics("equal", {"mnist": 0.10, "fashion": 0.10}, 0, 99.0, off)
    older["run"]["finished_at"] = "2026-11-01T10:00:00+00:00"
    _write(root, "a_equal_s0_old", older)  # repeats seed 0: left out
    older["data"]["deviations"] = [NOTE, "an old cut"]
    diverged = _metrics("equal", {"mnist": 0.50, "fashion": 0.50}, 3, 1.0, off)
    diverged["diverged"] = {"epoch": 2, "step": 7, "task": "mnist"}
    diverged["epochs"] = {"trained": 2, "best": 1}
    _write(root, "a_equal_s3", diverged)
    mgda = [*MNIST3, "notes=reduced"]
    fidelity = {"fidelity": {"balancer": [DEPARTURE]}}
    _write(root, "b_mgda_s0", _metrics("mgda", {"mnist": 0.95, "fashion": 0.85}, 0, 20, mgda))
    _write(root, "b_mgda_s1",
           _metrics("mgda", {"mnist": 0.97, "fashion": 0.81}, 1, 30, mgda, **fidelity))  # fmt: skip
    l2 = [*mgda, "balancer.normalize=l2"]
    _write(root, "c_mgda_l2", _metrics("mgda", {"mnist": 0.92, "fashion": 0.81}, 0, 8, l2))
    _write(root, "d_upgrad_s0", _metrics("upgrad", {"mnist": 0.80, "fashion": 0.70}, 0, 5, off))
    stopped = _metrics("upgrad", {"mnist": 0.99, "fashion": 0.99}, 1, 2.0, off)
    stopped["interrupted"] = {"signal": "SIGTERM", "reason": "signal SIGTERM"}
    stopped["epochs"] = {"trained": 1, "best": 1}
    _write(root, "d_upgrad_s1", stopped)


def _conll_runs(root: Path) -> None:
    for seed, scores in enumerate([(0.90, 0.80, 0.60), (0.92, 0.82, 0.64)]):
        test = dict(zip(("pos", "chunk", "ner"), scores, strict=True))
        _write(root, f"e_conll_equal_s{seed}",
               _metrics("equal", test, seed, 40.0, [], data="conll", backbone="CNNBiLSTM"))  # fmt: skip
    test = {"pos": 0.93, "chunk": 0.78, "ner": 0.66}
    _write(root, "f_conll_dwa", _metrics("dwa", test, 0, 50.0, [], data="conll",
                                         backbone="CNNBiLSTM"))  # fmt: skip


@pytest.fixture()
def runs(tmp_path: Path) -> Path:
    root = tmp_path / "lb"
    _mnist3_runs(root)
    _conll_runs(root)
    return root


def _rows(board: Any) -> list[dict[str, str]]:
    return [dict(zip(board.headers, row, strict=True)) for row in board.rows]


def test_mnist3_leaderboard_numbers(runs: Path) -> None:
    board = leaderboards(collect(runs))[0]
    assert board.title == "Balancer leaderboard: mnist3 · LeNetBN · hard"
    assert board.headers == ["Balancer", "n", "mnist acc", "fashion acc", "Task mean", "Δ_m %",
                             "Rank", "Train s"]  # fmt: skip
    rows = _rows(board)
    assert [r["Balancer"] for r in rows] == [
        "mgda †",
        "equal",
        "mgda (balancer.normalize=l2)",
        "upgrad",
    ]  # sorted by task mean; equal before the tied l2 row (first seen)
    mgda, equal, l2, upgrad = rows
    assert equal == {"Balancer": "equal", "n": "3", "mnist acc": "92.00 ± 2.00",
                     "fashion acc": "81.00 ± 1.73", "Task mean": "86.50 ± 1.80",
                     "Δ_m %": "+0.00", "Rank": "2", "Train s": "12.0 ± 2.0"}  # fmt: skip
    assert mgda == {"Balancer": "mgda †", "n": "2", "mnist acc": "96.00 ± 1.41",
                    "fashion acc": "83.00 ± 2.83", "Task mean": "89.50 ± 0.71",
                    "Δ_m %": "+3.41", "Rank": "1", "Train s": "25.0 ± 7.1"}  # fmt: skip
    assert (l2["n"], l2["Task mean"], l2["Δ_m %"], l2["Rank"]) == ("1", "86.50", "+0.00", "2")
    assert upgrad == {"Balancer": "upgrad", "n": "1", "mnist acc": "80.00",
                      "fashion acc": "70.00", "Task mean": "75.00", "Δ_m %": "-13.31",
                      "Rank": "4", "Train s": "5.0"}  # fmt: skip


def test_departures_stopped_runs_and_repeats_are_listed_not_averaged(runs: Path) -> None:
    board = leaderboards(collect(runs))[0]
    notes = "\n".join(board.notes)
    assert f"† mgda: departs from its authors' code: {DEPARTURE}" in board.notes
    assert "Not averaged (2 run(s) diverged or stopped):" in board.notes
    assert "- `a_equal_s3` (equal, seed 3): diverged at epoch 2 step 7 (mnist loss not finite)" in (
        board.notes
    )
    assert "- `d_upgrad_s1` (upgrad, seed 1): stopped by SIGTERM" in board.notes
    assert "`a_equal_s0_old` repeats seed 0 of equal; the newest, `a_equal_s0`, is used." in notes
    assert f"Data: {NOTE}" in board.notes  # every run's, once; the repeat's own is not counted
    assert not any("an old cut" in n for n in board.notes)
    assert "higher-is-better" in notes and "(M_b − M_equal) / M_equal × 100" in notes


def test_header_labels_a_reduced_budget_and_a_full_one(runs: Path) -> None:
    mnist3, conll = leaderboards(collect(runs))
    assert mnist3.header == (
        "Protocol: data `mnist3`, backbone `LeNetBN`, method `hard`; epochs trained 1, 2, 3; "
        "seeds 0, 1, 2, 3. **Reduced** budget (`data.limit_train=6000`, `trainer.max_epochs=3`): "
        "not the full protocol. Overrides: `experiment=thesis_fig6`, `notes=reduced`. "
        "Monitor: `balancer.kkt_every=0`."
    )  # epochs 1, 2 and seed 3: the stopped runs
    assert conll.header == (
        "Protocol: data `conll`, backbone `CNNBiLSTM`, method `hard`; epochs trained 3; "
        "seeds 0, 1. Full budget (no data/epoch limit among the overrides)."
    )


def test_one_leaderboard_per_data_set_scored_by_primary_metric(runs: Path) -> None:
    boards = leaderboards(collect(runs))
    assert len(boards) == 2
    conll = boards[1]
    assert conll.title == "Balancer leaderboard: conll · CNNBiLSTM · hard"
    assert conll.headers[2:5] == ["pos acc", "chunk F1", "ner F1"]
    dwa, equal = _rows(conll)
    assert equal == {"Balancer": "equal", "n": "2", "pos acc": "91.00 ± 1.41",
                     "chunk F1": "81.00 ± 1.41", "ner F1": "62.00 ± 2.83",
                     "Task mean": "78.00 ± 1.89", "Δ_m %": "+0.00", "Rank": "2",
                     "Train s": "40.0"}  # fmt: skip
    assert (dwa["Balancer"], dwa["Task mean"], dwa["Δ_m %"], dwa["Rank"]) == (
        "dwa",
        "79.00",
        "+1.65",
        "1",
    )  # no † for the backbone's fidelity entries: only the balancer's count


def test_protocol_overrides_split_boards_and_name_the_difference(tmp_path: Path) -> None:
    for epochs in (2, 3):
        for balancer in ("equal", "mgda"):
            metrics = _metrics(balancer, {"mnist": 0.9}, 0, 1.0, [f"trainer.max_epochs={epochs}"])
            _write(tmp_path, f"{balancer}_{epochs}", metrics)
    titles = [b.title for b in leaderboards(collect(tmp_path))]
    assert titles == [
        "Balancer leaderboard: mnist3 · LeNetBN · hard (trainer.max_epochs=2)",
        "Balancer leaderboard: mnist3 · LeNetBN · hard (trainer.max_epochs=3)",
    ]


def test_an_override_given_twice_counts_as_hydra_applies_it(tmp_path: Path) -> None:
    """The script's budget, cut further by an extra argument: the last value is the run's."""
    twice = [*MNIST3, "trainer.max_epochs=1"]
    _write(tmp_path, "equal", _metrics("equal", {"mnist": 0.9}, 0, 1.0, twice))
    once = ["experiment=thesis_fig6", "data.limit_train=6000", "trainer.max_epochs=1"]
    _write(tmp_path, "mgda", _metrics("mgda", {"mnist": 0.8}, 0, 1.0, once))
    (board,) = leaderboards(collect(tmp_path))
    assert "**Reduced** budget (`data.limit_train=6000`, `trainer.max_epochs=1`)" in board.header
    assert [r["Balancer"] for r in _rows(board)] == ["equal", "mgda"]


def test_no_equal_row_no_delta(tmp_path: Path) -> None:
    for balancer in ("mgda", "upgrad"):
        _write(tmp_path, balancer, _metrics(balancer, {"mnist": 0.9}, 0, 1.0, []))
    board = leaderboards(collect(tmp_path))[0]
    assert [r["Δ_m %"] for r in _rows(board)] == ["–", "–"]
    assert "Δ_m: no `equal` run without balancer.* overrides on this set-up." in board.notes


def test_ranks_and_delta_m_by_hand() -> None:
    assert ranks([0.5, 0.9, 0.5, None, 0.1]) == [2, 1, 2, None, 4]
    assert ranks([0.1 + 0.2, 0.3]) == [1, 1]  # equal to 9 decimals: a tie


def test_delta_m_is_none_when_the_reference_scores_zero(tmp_path: Path) -> None:
    _write(tmp_path, "equal", _metrics("equal", {"mnist": 0.0, "fashion": 0.5}, 0, 1.0, []))
    _write(tmp_path, "mgda", _metrics("mgda", {"mnist": 0.2, "fashion": 0.6}, 0, 1.0, []))
    board = leaderboards(collect(tmp_path))[0]
    assert [r["Δ_m %"] for r in _rows(board)] == ["–", "–"]


def test_cli_table_leaderboard_prints_every_board_and_writes_a_long_csv(
    runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(runs), "--table", "leaderboard", "--csv-dir", str(tmp_path / "csv")]) == 0
    out = capsys.readouterr().out
    assert "### Balancer leaderboard: mnist3 · LeNetBN · hard\n\nProtocol: data `mnist3`" in out
    assert "### Balancer leaderboard: conll · CNNBiLSTM · hard" in out
    assert "| mgda † | 2 | 96.00 ± 1.41 | 83.00 ± 2.83 | 89.50 ± 0.71 | +3.41 | 1 |" in out
    text = (tmp_path / "csv" / "report_leaderboard.csv").read_text(encoding="utf-8")
    table = list(csv.reader(io.StringIO(text.split("\n\n")[0])))
    assert table[0] == ["Set-up", "Balancer", "n", "mnist acc", "fashion acc", "pos acc",
                        "chunk F1", "ner F1", "Task mean", "Δ_m %", "Rank", "Train s"]  # fmt: skip
    assert len(table) == 1 + 4 + 2
    assert table[-1][:3] == ["Balancer leaderboard: conll · CNNBiLSTM · hard", "equal", "2"]
    assert table[-1][3:5] == ["–", "–"]  # no mnist3 task on a CoNLL row


def test_auto_prints_the_leaderboard_from_three_balancers(
    runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert compares_many_balancers(collect(runs))
    assert main([str(runs), "--csv-dir", str(tmp_path / "a")]) == 0
    assert "### Balancer leaderboard: mnist3" in capsys.readouterr().out
    two = tmp_path / "two"
    for balancer in ("equal", "mgda"):
        _write(two, balancer, _metrics(balancer, {"mnist": 0.9}, 0, 1.0, []))
    assert not compares_many_balancers(collect(two))
    assert main([str(two), "--csv-dir", str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "Balancer leaderboard" not in out and "### Runs (seeds pooled)" in out
    assert leaderboard_table(collect(two)).rows  # asked by name it is there


# ------------------------------------------------------------------------------- the script

FAKE = """#!/usr/bin/env bash
# Stand-in for mtlrun: --cfg says kkt_every except for gls; a run records its arguments; mgda_ub
# on mnist3 is refused at validation, famo crashes, dwa diverges.
args="$*"
for a in "$@"; do
  if [ "$a" = "--cfg" ]; then
    case "$args" in *balancer=gls*) echo "name: gls" ;; *) printf 'name: x\\nkkt_every: 1\\n' ;; esac
    exit 0
  fi
done
echo "$args" >> "$CALLS"
case "$args" in
  *thesis_fig6*balancer=mgda_ub*)
    printf 'mtlrun: error: invalid configuration:\\n  - needs a shared input\\n' >&2; exit 2 ;;
  *balancer=famo*) echo "Traceback" >&2; exit 1 ;;
  *balancer=dwa*) exit 3 ;;
esac
"""


def _run_script(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    fake = tmp_path / "fake_mtlrun"
    fake.write_text(FAKE)
    fake.chmod(0o755)
    report = tmp_path / "fake_report"
    report.write_text(f'#!/usr/bin/env bash\necho "$*" >> {tmp_path / "report.log"}\n')
    report.chmod(0o755)
    full = {**os.environ, "MTLRUN": str(fake), "REPORT": str(report), "OUT": str(tmp_path / "out"),
            "CALLS": str(tmp_path / "calls.log"), "MTLRUN_DATA": str(tmp_path / "no_data"), **env}  # fmt: skip
    return subprocess.run(
        ["bash", str(SCRIPT), "trainer.max_epochs=1"], env=full, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip


def test_script_parses() -> None:
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0


def test_script_runs_every_balancer_and_seed_skipping_refused_ones(tmp_path: Path) -> None:
    done = _run_script(tmp_path, SEEDS="0 1")
    assert done.returncode == 0, done.stderr
    yamls = sorted(p.stem for p in (REPO / "conf" / "balancer").glob("*.yaml"))
    calls = (tmp_path / "calls.log").read_text().splitlines()
    ran = {(c.split()[1].split("=")[1], c.split()[-2], c.split()[-1]) for c in calls}
    expected = {(e, f"balancer={b}", f"trainer.seed={s}") for e in ("thesis_fig6", "conll_hard")
                for b in yamls for s in (0, 1)} - {("thesis_fig6", "balancer=mgda_ub", "trainer.seed=1")}  # fmt: skip
    assert ran == expected and len(calls) == len(expected)  # famo's and dwa's failures go on
    out = tmp_path / "out"
    first = calls[0].split()
    assert first[0] == f"hydra.run.dir={out}/mnist3/{yamls[0]}/seed0"
    assert first[1:6] == ["experiment=thesis_fig6", "data.limit_train=6000",
                          "data.limit_eval=1000", "trainer.max_epochs=3",
                          "data.missing_train=split_test"]  # fmt: skip
    assert first.index("trainer.max_epochs=1") > first.index("trainer.max_epochs=3")  # extra wins
    conll = next(c.split() for c in calls if "conll_hard" in c)
    assert conll[1:5] == ["experiment=conll_hard", "data.limit_train=3000",
                          "data.limit_eval=1000", "trainer.max_epochs=3"]  # fmt: skip
    for call in calls:
        assert ("balancer.kkt_every=0" in call) == ("balancer=gls " not in call), call
        assert "notes=reduced" in call and "trainer.patience=null" in call
    assert "-- skipped balancer=mgda_ub on mnist3: the set-up refuses it" in done.stdout
    assert "   - needs a shared input" in done.stdout
    assert "-- mnist3: skipped (refused by the set-up): mgda_ub" in done.stdout
    assert "!! balancer=famo seed 0 failed (exit 1)" in done.stdout
    assert "!! balancer=dwa seed 0 diverged" in done.stdout
    assert (tmp_path / "report.log").read_text().splitlines() == [
        f"{out}/mnist3 --table leaderboard",
        f"{out}/conll --table leaderboard",
    ]


def test_script_balancers_data_and_a_wrong_data(tmp_path: Path) -> None:
    done = _run_script(tmp_path, BALANCERS="equal upgrad", SEEDS="4", DATA="conll")
    assert done.returncode == 0, done.stderr
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert [c.split()[-2:] for c in calls] == [["balancer=equal", "trainer.seed=4"],
                                               ["balancer=upgrad", "trainer.seed=4"]]  # fmt: skip
    assert all("experiment=conll_hard" in c for c in calls)
    wrong = _run_script(tmp_path, DATA="cifar")
    assert wrong.returncode == 2
    assert "DATA should be mnist3, conll or both. Found DATA=cifar" in wrong.stderr


def test_script_runs_compose_and_mgda_ub_is_refused_on_mnist3(tmp_path: Path) -> None:
    """The script's runs, composed and validated as mtlrun does: what the stand-in refuses
    (mgda_ub on mnist3) is what mtlrun refuses."""
    from mtlrun.config.source import compose_config
    from mtlrun.config.validate import validate
    from mtlrun.errors import ConfigError

    done = _run_script(tmp_path, BALANCERS="equal upgrad mgda_ub", SEEDS="0")
    assert done.returncode == 0, done.stderr
    for call in (tmp_path / "calls.log").read_text().splitlines():
        overrides = [a for a in call.split() if not a.startswith("hydra.")]
        cfg = compose_config(overrides)
        if "thesis_fig6" in call and "balancer=mgda_ub" in call:
            with pytest.raises(ConfigError, match="invalid configuration|shared block outputs"):
                validate(cfg)
        else:
            validate(cfg)
