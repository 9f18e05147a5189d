"""results/: runs kept by table, and the README's Results section generated from them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mtlrun.report.cli import main
from mtlrun.report.results import (
    BEGIN,
    END,
    ResultError,
    keep_run,
    replace_section,
    results_section,
)

REPO = Path(__file__).resolve().parents[3]


def metrics(method: str, pos: float, ner: float, chunk: float, **extra: object) -> dict:
    """A finished CoNLL run's metrics.json with the given test scores (fractions)."""
    return {
        "test": {"pos": {"accuracy": pos}, "ner": {"f1": ner}, "chunk": {"f1": chunk}},
        "params": {"used": 533930},
        "epochs": {"trained": 20, "best": 15, "phases": {"train": 20}},
        "time": {"train_s": 1200.0, "search_s": None, "eval_s": 30.0, "phases": {"train": 1170.0}},
        "data": {"name": "conll", "tasks": ["pos", "chunk", "ner"], "deviations": []},
        "config": {"method": method, "data": "conll", "method_args": extra, "overrides": []},
        "run": {"seed": 0, "device": "cpu", "git_commit": "0123456789abcdef"},
    }


def write_run(folder: Path, content: dict) -> Path:
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(content))
    return folder


def test_the_committed_readme_section_is_what_the_report_prints() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert readme.count(BEGIN) == 1 and readme.count(END) == 1
    committed = readme[readme.index(BEGIN) : readme.index(END) + len(END) + 1]
    assert committed == results_section(REPO / "results"), (
        "README Results is stale: run "
        "`mtlrun-report results --results-section --write-readme README.md`"
    )


def test_delta_against_our_single_is_marked_beyond_half_a_point_with_its_cause(
    tmp_path: Path,
) -> None:
    root = tmp_path / "results"
    write_run(root / "table4_2" / "single", metrics("single", 0.9500, 0.8900, 0.9000))
    # Hard: POS +0.30 (paper +0.25: fine), NER -1.50 (paper -0.68: marked), chunk +1.00 (+1.00)
    write_run(root / "table4_2" / "hard", metrics("hard", 0.9530, 0.8750, 0.9100))
    (root / "causes.yaml").write_text("table4_2:\n  hard:\n    ner: Random word vectors.\n")
    section = results_section(root)
    hard = next(line for line in section.splitlines() if line.startswith("| Hard |"))
    cells = [c.strip() for c in hard.strip("|").split("|")]
    # System | POS, paper, Δ, paper Δ | NER, paper, Δ, paper Δ | Chunk ... | params, paper
    assert cells[1:5] == ["95.30", "95.34", "+0.30", "+0.25"]
    assert cells[5:9] == ["87.50", "88.68", "-1.50 ‡1", "-0.68"]
    assert cells[9:13] == ["91.00", "90.92", "+1.00", "+1.00"]
    assert cells[13:] == ["534k", "534k"]
    assert "‡1 Hard, NER F1: Δ -1.50 against the paper's -0.68. Random word vectors." in section
    assert "Not run at the full protocol yet: Single (subnet), Soft, Hierarchical" in section
    # provenance: seeds, protocol, epochs, device, wall minutes ((1170 + 30) s), commit
    single = [line for line in section.splitlines() if line.startswith("| Single |")][1]
    assert "| 0 | full | train 20 | – | cpu | 20 min | 0123456 | `table4_2/single` |" in single


def test_a_gap_without_a_recorded_cause_says_so(tmp_path: Path) -> None:
    root = tmp_path / "results"
    write_run(root / "table4_2" / "single", metrics("single", 0.95, 0.89, 0.90))
    write_run(root / "table4_2" / "soft", metrics("soft", 0.90, 0.89, 0.90))
    section = results_section(root)
    assert "‡1 Soft, POS acc: Δ -5.00 against the paper's +0.07. cause not analysed yet" in section


def test_table_4_3_takes_the_warm_up_rows_of_table_4_2(tmp_path: Path) -> None:
    root = tmp_path / "results"
    write_run(root / "table4_2" / "single", metrics("single", 0.95, 0.89, 0.90))
    warm = metrics("sparse_ste", 0.955, 0.895, 0.915, warmup_epochs=10, keep_ratio=0.5)
    write_run(root / "table4_2" / "sparse_ste", warm)
    cold = metrics("sparse_ste", 0.954, 0.894, 0.910, warmup_epochs=0, keep_ratio=0.5)
    write_run(root / "table4_3" / "sparse_ste_warmup0", cold)
    section = results_section(root)
    table = section[section.index("Table 4.3") :]
    assert "| DML (warm-up 10 epochs) | 95.50 | 95.46 | +0.50 | +0.37 |" in table
    assert "| DML (from scratch) | 95.40 | 95.41 | +0.40 | +0.32 |" in table
    assert "Sun et al. (from scratch), Sun et al. (warm-up 10 epochs)" in table


def test_replace_section_swaps_only_the_block() -> None:
    text = f"# A\n\n{BEGIN}\nold\n{END}\n\n## B\n"
    assert (
        replace_section(text, f"{BEGIN}\nnew\n{END}\n") == f"# A\n\n{BEGIN}\nnew\n{END}\n\n## B\n"
    )
    with pytest.raises(ResultError, match="no .* block"):
        replace_section("# A\n", "x")


def test_keep_copies_the_result_files_only_and_never_over_a_result(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", metrics("hard", 0.95, 0.89, 0.90))
    (run / ".hydra").mkdir()
    for name in (".hydra/config.yaml", ".hydra/overrides.yaml", "history.csv", "masks.json"):
        (run / name).write_text("x")
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.pt").write_bytes(b"0" * 10)
    (run / "masks.pt").write_bytes(b"0")
    (run / "predictions").mkdir()
    (run / "big.json").write_bytes(b"0" * 1_000_001)
    dest = tmp_path / "results" / "table4_2" / "hard"
    kept = keep_run(run, dest)
    assert sorted(p.relative_to(dest).as_posix() for p in kept) == [
        ".hydra/config.yaml",
        ".hydra/overrides.yaml",
        "history.csv",
        "masks.json",
        "metrics.json",
    ]
    assert sorted(p.name for p in dest.iterdir()) == [
        ".hydra", "history.csv", "masks.json", "metrics.json",
    ]  # fmt: skip
    with pytest.raises(ResultError, match="already holds a result"):
        keep_run(run, dest)


def test_keep_refuses_an_unfinished_run(tmp_path: Path) -> None:
    stopped = metrics("hard", 0.95, 0.89, 0.90)
    stopped["interrupted"] = {"signal": "SIGTERM"}
    run = write_run(tmp_path / "run", stopped)
    with pytest.raises(ResultError, match="not a finished run"):
        keep_run(run, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_cli_writes_the_readme_section_and_keeps_a_run(tmp_path: Path, capsys) -> None:
    root = tmp_path / "results"
    write_run(root / "table4_2" / "single", metrics("single", 0.95, 0.89, 0.90))
    readme = tmp_path / "README.md"
    readme.write_text(f"# X\n\n{BEGIN}\n{END}\n")
    assert main([str(root), "--results-section", "--write-readme", str(readme)]) == 0
    assert readme.read_text() == "# X\n\n" + results_section(root)
    run = write_run(tmp_path / "hard_run", metrics("hard", 0.95, 0.89, 0.90))
    assert main([str(run), "--keep", str(root / "table4_2" / "hard")]) == 0
    assert main([str(run), "--keep", str(root / "table4_2" / "hard")]) == 1
    assert "already holds a result" in capsys.readouterr().err


def test_a_seed_kept_twice_counts_once_and_is_named(tmp_path: Path) -> None:
    root = tmp_path / "results"
    write_run(root / "table4_2" / "single", metrics("single", 0.95, 0.89, 0.90))
    old, new = metrics("hard", 0.90, 0.88, 0.90), metrics("hard", 0.96, 0.88, 0.90)
    old["run"]["finished_at"], new["run"]["finished_at"] = (
        "2026-01-01T00:00:00",
        "2026-02-01T00:00:00",
    )
    write_run(root / "table4_2" / "hard_old", old)
    write_run(root / "table4_2" / "hard", new)
    section = results_section(root)
    assert "| Hard | 96.00 | 95.34 | +1.00 ‡1 |" in section  # the newer run alone, not 93.00 ± 4.24
    assert "`hard_old` repeats seed 0 of Hard; the newest, `hard`, is used." in section
