"""scripts/reproduce_*.sh with PARALLEL=N: N rows at once, each with its share of the cores,
every row run, the report only after the last row (a stand-in mtlrun records what it is given)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[3] / "scripts"

FAKE = """#!/usr/bin/env bash
# Stand-in for mtlrun: note start, arguments and end; take a moment like a training would.
echo "start $(date +%s.%N) $*" >> "$LOG"
sleep 0.4
echo "end $(date +%s.%N)" >> "$LOG"
"""


def run_script(tmp_path: Path, parallel: int) -> list[str]:
    fake = tmp_path / "fake_mtlrun"
    fake.write_text(FAKE)
    fake.chmod(0o755)
    log = tmp_path / "calls.log"
    report = tmp_path / "report.log"
    fake_report = tmp_path / "fake_report"
    fake_report.write_text(f'#!/usr/bin/env bash\necho "report $(date +%s.%N)" >> {report}\n')
    fake_report.chmod(0o755)
    env = {
        **os.environ,
        "MTLRUN": str(fake),
        "REPORT": str(fake_report),
        "LOG": str(log),
        "OUT": str(tmp_path / "out"),
        "PARALLEL": str(parallel),
    }
    done = subprocess.run(
        ["bash", str(SCRIPTS / "reproduce_table4_2.sh"), "trainer.seed=3"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = log.read_text().splitlines()
    last_end = max(float(x.split()[1]) for x in lines if x.startswith("end"))
    first_report = min(float(x.split()[1]) for x in report.read_text().splitlines())
    assert first_report >= last_end  # the report waits for every row
    return lines


@pytest.mark.parametrize("parallel", [1, 3])
def test_every_row_runs_and_parallel_rows_overlap(tmp_path: Path, parallel: int) -> None:
    lines = run_script(tmp_path, parallel)
    starts = [x for x in lines if x.startswith("start")]
    rows = sorted(x.split("experiment=")[1].split()[0] for x in starts)
    assert rows == sorted(
        f"dml_t42_{r}"
        for r in ("sparse_ste", "hard", "single", "sparse_imp", "soft", "hierarchical",
                  "single_subnet")
    )  # fmt: skip
    assert all("trainer.seed=3" in x for x in starts)
    # the most rows running at one time
    events = sorted((float(x.split()[1]), 1 if x.startswith("start") else -1) for x in lines)
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    assert peak == parallel
    if parallel > 1:
        threads = max(1, len(os.sched_getaffinity(0)) // parallel)
        assert all(f"trainer.threads={threads}" in x for x in starts)
        assert len(list((tmp_path / "out").glob("*.log"))) == 7  # one log per row
    else:
        assert not any("trainer.threads" in x for x in starts)


def test_keep_puts_finished_rows_in_results_and_leaves_kept_ones(tmp_path: Path) -> None:
    """KEEP=results/table4_2: a finished row is kept with mtlrun-report --keep, a row whose
    result is already kept is left, an unfinished row is not kept."""
    out, keep = tmp_path / "out", tmp_path / "results" / "table4_2"
    for row in ("hard", "soft"):
        (out / row).mkdir(parents=True)
        (out / row / "metrics.json").write_text("{}")
    (keep / "soft").mkdir(parents=True)
    (keep / "soft" / "metrics.json").write_text("{}")
    fake = tmp_path / "fake"
    fake.write_text("#!/usr/bin/env bash\n")  # rows 'run' and finish nothing new
    fake.chmod(0o755)
    calls = tmp_path / "report.log"
    report = tmp_path / "report"
    report.write_text(f'#!/usr/bin/env bash\necho "$*" >> {calls}\n')
    report.chmod(0o755)
    env = {**os.environ, "MTLRUN": str(fake), "REPORT": str(report), "OUT": str(out)}
    env["KEEP"] = str(keep)
    done = subprocess.run(
        ["bash", str(SCRIPTS / "reproduce_table4_2.sh")], env=env, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    kept = [line for line in calls.read_text().splitlines() if "--keep" in line]
    assert kept == [f"{out}/hard --keep {keep}/hard"]
    assert "results/table4_2/soft already holds a result" in done.stdout
    reduced = subprocess.run(
        ["bash", str(SCRIPTS / "reproduce_table4_2.sh")], env={**env, "REDUCED": "1"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "KEEP ignored" in reduced.stdout
