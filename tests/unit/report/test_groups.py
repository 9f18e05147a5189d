"""A seed counts once per setting: runs that repeat a (setting, seed) in another sweep are one
sample, the newest run's, and the others are named in each grouping table's footnotes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mtlrun.report.collect import collect
from mtlrun.report.groups import group_runs
from mtlrun.report.tables import generic_table, keep_ratio_sweep, table_4_2, table_4_3
from tests.unit.report.test_report import _conll, _metrics

STE = {"warmup_epochs": 2, "keep_ratio": 0.3}


def _write(root: Path, rel: str, metrics: dict[str, Any], mtime: float) -> None:
    folder = root / rel
    folder.mkdir(parents=True)
    path = folder / "metrics.json"
    path.write_text(json.dumps(metrics))
    os.utime(path, (mtime, mtime))


def _hard(pos: float, seed: int) -> dict[str, Any]:
    return _metrics("hard", _conll(pos, 0.88, 0.91), seed=seed)


def _sweeps(root: Path) -> Path:
    """Three sweeps of hard on conll (seeds 0, 1; 0, 1; 0), the newest seed 0 scoring 0.96 and
    the newest seed 1 0.95; and a keep-ratio sweep point run twice with seed 0."""
    _write(root, "a/0", _hard(0.90, seed=0), mtime=1_000)
    _write(root, "a/1", _hard(0.91, seed=1), mtime=1_001)
    _write(root, "b/0", _hard(0.92, seed=0), mtime=2_000)
    _write(root, "b/1", _hard(0.95, seed=1), mtime=2_001)
    _write(root, "c/0", _hard(0.96, seed=0), mtime=3_000)
    for ratio in (0.1, 0.3):
        ste = _metrics("sparse_ste", _conll(0.93, 0.88, 0.91), args={**STE, "keep_ratio": ratio})
        _write(root, f"a/ste_{ratio}", ste, mtime=1_002)
    newer = _metrics("sparse_ste", _conll(0.94, 0.88, 0.91), args=STE)
    _write(root, "b/ste_0.3", newer, mtime=2_002)
    return root


HARD_NOTE = "`a/0` and `b/0` repeat seed 0 of {name}; the newest, `c/0`, is used."
HARD_SEED_1 = "`a/1` repeats seed 1 of {name}; the newest, `b/1`, is used."


def test_a_seed_repeated_by_other_sweeps_counts_once_the_newest_run(tmp_path: Path) -> None:
    records = collect(_sweeps(tmp_path))
    (hard,) = [g for g in group_runs(records) if g.method == "hard"]
    assert [r.rel for r in hard.records] == ["c/0", "b/1"]
    assert [(r.seed, r.used.rel, [o.rel for o in r.others]) for r in hard.repeats] == [
        (0, "c/0", ["a/0", "b/0"]),
        (1, "b/1", ["a/1"]),
    ]
    runs = generic_table(records)
    row = dict(zip(runs.headers, runs.rows[0], strict=True))
    assert (row["Method"], row["n"], row["Seeds"]) == ("hard", "2", "0, 1")
    assert row["pos acc"] == "95.50 ± 0.71"  # 0.96 and 0.95; every run pooled: 92.80 ± 2.59
    name = "hard on conll"
    assert runs.notes[:2] == [HARD_NOTE.format(name=name), HARD_SEED_1.format(name=name)]


def test_every_table_that_groups_runs_counts_a_seed_once(tmp_path: Path) -> None:
    records = collect(_sweeps(tmp_path))
    t42 = table_4_2(records)
    assert [r[:3] for r in t42.rows[:1]] == [["Hard", "2", "95.50 ± 0.71"]]
    assert HARD_NOTE.format(name="Hard") in t42.notes
    ste_row = dict(zip(t42.headers, t42.rows[2], strict=True))
    assert (ste_row["System"], ste_row["n"]) == ("DML (keep_ratio=0.3)", "1")
    ste_note = "`a/ste_0.3` repeats seed 0 of {name}; the newest, `b/ste_0.3`, is used."
    assert ste_note.format(name="DML (keep_ratio=0.3)") in t42.notes
    t43 = table_4_3(records)
    assert ste_note.format(name="DML (keep_ratio=0.3), warm-up (2 epochs)") in t43.notes
    sweep = keep_ratio_sweep(records)
    assert [r[2:5] for r in sweep.rows] == [["0.1", "1", "93.00"], ["0.3", "1", "94.00"]]
    assert sweep.notes == [ste_note.format(name="DML at keep ratio 0.3 on conll")]


def test_a_newer_stopped_run_does_not_replace_a_finished_one(tmp_path: Path) -> None:
    _write(tmp_path, "a/0", _hard(0.90, seed=0), mtime=1_000)
    stopped = _hard(0.80, seed=0)
    stopped["interrupted"] = {"signal": "SIGTERM"}
    stopped["epochs"] = {"trained": 2, "best": 2}
    _write(tmp_path, "b/0", stopped, mtime=2_000)
    (group,) = group_runs(collect(tmp_path))
    assert [r.rel for r in group.records] == ["a/0"]
    assert generic_table(collect(tmp_path)).notes[-1] == (
        "`b/0` repeats seed 0 of hard on conll; the newest that ran its course, `a/0`, is used."
    )


def test_runs_without_a_recorded_seed_are_all_kept(tmp_path: Path) -> None:
    for k in range(2):
        m = _hard(0.9, seed=0)
        del m["run"]["seed"]
        _write(tmp_path, f"old/{k}", m, mtime=1_000 + k)
    (group,) = group_runs(collect(tmp_path))
    assert len(group.records) == 2 and group.repeats == ()


def test_the_recorded_finish_time_wins_over_the_file_time(tmp_path: Path) -> None:
    """A result copied later (keep, cp) has a newer file time; run.finished_at says which run
    really finished last."""
    early, late = _hard(0.90, seed=0), _hard(0.96, seed=0)
    early["run"]["finished_at"] = "2026-01-01T00:00:00+00:00"
    late["run"]["finished_at"] = "2026-06-01T00:00:00+00:00"
    _write(tmp_path, "late", late, mtime=1_000)
    _write(tmp_path, "copied_early", early, mtime=9_000)  # copied after the fact
    (hard,) = group_runs(collect(tmp_path))
    assert [r.rel for r in hard.records] == ["late"]


def test_a_constant_over_runs_prints_no_spread() -> None:
    from mtlrun.report.table import fmt_stat

    assert fmt_stat([0.5, 0.5, 0.5]) == "50.00"  # three seeds that agree: no "± 0.00"
    assert fmt_stat([1200, 1200], scale=1.0, digits=0) == "1200"
    assert fmt_stat([0.5, 0.7]) == "60.00 ± 14.14"  # sample std (ddof=1): 0.1·√2
    assert fmt_stat([0.5]) == "50.00"
