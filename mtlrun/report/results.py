"""The repository's ``results/`` folder: finished full-protocol runs kept by table, and the README
section that shows them beside the papers (``mtlrun-report results --results-section``).

``keep_run`` copies what a result is made of (``metrics.json``, ``history.csv``,
``.hydra/config.yaml`` and ``overrides.yaml``, and the run's small JSON artefacts: mask
statistics, policy, tree), never checkpoints, predictions or data, and never over another
result. ``results_section`` builds the markdown: per table, our test scores beside the paper's,
Δ against our Single row beside the paper's Δ (a cell more than ``MARK_GAP`` points from the
paper's Δ is marked ‡ with its likely cause from ``results/causes.yaml``), encoder parameters,
then where each number comes from (seeds, protocol, epochs per phase, search time, device, wall
time, commit), and the rows not run yet.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mtlrun.report.collect import Record, get, scan
from mtlrun.report.groups import Group, describe_repeat, group_runs
from mtlrun.report.paper import CONLL_COLUMNS, TABLE_4_2, TABLE_4_3
from mtlrun.report.table import NA, fmt_k, fmt_number, fmt_stat, mean_std

BEGIN = "<!-- results:begin -->"
END = "<!-- results:end -->"
MARK_GAP = 0.5  # percent points between our Δ and the paper's that a footnote must explain
MARK = "‡"
KEPT_FILES = ("metrics.json", "history.csv", ".hydra/config.yaml", ".hydra/overrides.yaml")
MAX_ARTEFACT_BYTES = 1_000_000  # a top-level JSON artefact larger than this is not kept
CAUSES_FILE = "causes.yaml"
NOT_ANALYSED = "cause not analysed yet"


class ResultError(Exception):
    """A run cannot be kept as a result (unfinished, or its place is taken)."""


def keep_run(run_dir: Path, dest: Path) -> list[Path]:
    """Copy a finished run's result files into ``dest`` (a new folder); returns what was copied.

    Refuses a run without test scores or stopped early, and a ``dest`` that already holds a
    result: a kept result is never overwritten.
    """
    found = scan(run_dir)
    records = [r for r in found.records if r.path.parent.resolve() == run_dir.resolve()]
    if not records:
        raise ResultError(f"{run_dir} holds no finished run (no readable metrics.json)")
    record = records[0]
    if not record.scored or record.stop:
        why = record.unscored or record.stop
        raise ResultError(f"{run_dir} is not a finished run ({why}); resume it first")
    if (dest / "metrics.json").exists():
        raise ResultError(f"{dest} already holds a result; keep this run under another name")
    names = [n for n in KEPT_FILES if (run_dir / n).is_file()]
    names += sorted(
        p.name
        for p in run_dir.glob("*.json")
        if p.name != "metrics.json" and p.stat().st_size <= MAX_ARTEFACT_BYTES
    )
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for name in names:
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(run_dir / name, tmp / name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(dest)
    return [dest / n for n in names]


# ------------------------------------------------------------------ the section


@dataclass(frozen=True)
class ResultTable:
    """One paper table of the section: which ``results/`` folders feed it and its rows."""

    key: str  # causes.yaml section and anchor, e.g. table4_2
    title: str
    folders: tuple[str, ...]
    rows: tuple[tuple[str, int | None], ...]  # (method, warm-up epochs or None) expected


TABLES = (
    ResultTable(
        "table4_2",
        "Yeom (2022) Table 4.2: CoNLL-2003 test, seed 0",
        ("table4_2",),
        tuple((m, None) for m in TABLE_4_2),
    ),
    ResultTable(
        "table4_3",
        "Yeom (2022) Table 4.3: from scratch vs warm-up, CoNLL-2003 test, seed 0",
        ("table4_2", "table4_3"),
        (("sparse_imp", 0), ("sparse_imp", 10), ("sparse_ste", 0), ("sparse_ste", 10)),
    ),
)


def load_causes(root: Path) -> dict[str, Any]:
    """``results/causes.yaml``: ``{table: {row: {task: cause}}}`` (empty when absent)."""
    path = root / CAUSES_FILE
    if not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def results_section(root: Path) -> str:
    """The README's *Results* block (between ``BEGIN`` and ``END``) for ``root`` (results/)."""
    causes = load_causes(root)
    parts = [BEGIN, ""]
    singles = _groups(root, ("table4_2",), "single")
    for table in TABLES:
        parts.append(_table(root, table, singles, causes.get(table.key) or {}))
    parts.append(END)
    return "\n".join(parts) + "\n"


def replace_section(readme: str, section: str) -> str:
    """``readme`` with the text between the markers replaced by ``section``."""
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END) + r"\n?", re.S)
    if not pattern.search(readme):
        raise ResultError(f"the README has no {BEGIN} … {END} block to replace")
    return pattern.sub(lambda _: section, readme, count=1)


def _records(root: Path, folders: Sequence[str]) -> list[Record]:
    records: list[Record] = []
    for folder in folders:
        if (root / folder).is_dir():
            records += [r for r in scan(root / folder).records if r.scored and not r.stop]
    return records


def _groups(root: Path, folders: Sequence[str], method: str) -> list[Group]:
    runs = [r for r in _records(root, folders) if r.method == method and r.data_name == "conll"]
    return group_runs(runs)


def _warmup(group: Group) -> int:
    value = group.args.get("warmup_epochs", 0)
    return int(value) if isinstance(value, int | float) else 0


def _mean(group: Group, task: str, metric: str) -> float | None:
    stat = mean_std(r.test_metric(task, metric) for r in group.records)
    return None if stat is None else stat[0] * 100


def _paper(method: str, warmup: int | None) -> dict[str, float]:
    if warmup is None:
        row = TABLE_4_2[method]
        return {t: row.score(t) for t, _, _ in CONLL_COLUMNS}
    return dict(TABLE_4_3[(method, warmup > 0)])


def _table(root: Path, table: ResultTable, singles: list[Group], causes: Mapping[str, Any]) -> str:
    records = _records(root, table.folders)
    reference = singles[0] if len(singles) == 1 else None
    paper_single = {t: TABLE_4_2["single"].score(t) for t, _, _ in CONLL_COLUMNS}
    headers = ["System"]
    for _, _, name in CONLL_COLUMNS:
        short = name.split()[0]
        headers += [name, "paper", f"{short} Δ", "paper Δ"]
    headers += ["# Params", "paper"]
    rows: list[list[str]] = []
    provenance: list[list[str]] = []
    notes: list[str] = []
    missing: list[str] = []
    repeats: list[str] = []  # a seed several kept runs had: the newest is used
    for method, warmup in table.rows:
        group = _find(records, method, warmup)
        label = TABLE_4_2[method].label + ("" if warmup is None else _init(warmup))
        if group is None:
            missing.append(label)
            continue
        paper = _paper(method, warmup)
        row = [label]
        for task, metric, name in CONLL_COLUMNS:
            ours = _mean(group, task, metric)
            delta_cell, paper_delta = NA, paper[task] - paper_single[task]
            is_reference = group is reference or (method == "single" and warmup is None)
            if reference is not None and not is_reference:
                base = _mean(reference, task, metric)
                if ours is not None and base is not None:
                    delta = ours - base
                    delta_cell = f"{delta:+.2f}"
                    if abs(delta - paper_delta) > MARK_GAP:
                        notes.append(_note(len(notes) + 1, label, name, delta, paper_delta,
                                           _cause(causes, method, warmup, task)))  # fmt: skip
                        delta_cell += f" {MARK}{len(notes)}"
            row += [
                fmt_stat(r.test_metric(task, metric) for r in group.records),
                f"{paper[task]:.2f}",
                delta_cell,
                NA if method == "single" and warmup is None else f"{paper_delta:+.2f}",
            ]
        used = [get(r.metrics, "params", "used") for r in group.records]
        row += [fmt_k(used), f"{TABLE_4_2[method].params_k}k" if warmup is None else NA]
        rows.append(row)
        provenance.append(_provenance(label, group, root))
        repeats += [describe_repeat(r, label) for r in group.repeats]
    lines = [f"### {table.title}", ""]
    if rows:
        lines += [_md(headers), _md(["---"] * len(headers)), *map(_md, rows), ""]
        lines += [f"{n}  " for n in notes]
        if notes:
            lines.append("")
        heads = ["System", "Seeds", "Protocol", "Epochs per phase", "Search s", "Device",
                 "Wall time", "Commit", "Folder"]  # fmt: skip
        lines += [_md(heads), _md(["---"] * len(heads)), *map(_md, provenance), ""]
        lines += [f"{n}  " for n in repeats] + ([""] if repeats else [])
    if missing:
        lines += [f"Not run at the full protocol yet: {', '.join(missing)}.", ""]
    return "\n".join(lines)


def _init(warmup: int) -> str:
    return " (from scratch)" if warmup == 0 else f" (warm-up {warmup} epochs)"


def _find(records: Sequence[Record], method: str, warmup: int | None) -> Group | None:
    runs = [r for r in records if r.method == method and r.data_name == "conll"]
    groups = group_runs(runs, label_ignore={"warmup_epochs"})
    if warmup is not None:
        groups = [g for g in groups if (_warmup(g) > 0) == (warmup > 0)]
    return groups[0] if groups else None


def _cause(causes: Mapping[str, Any], method: str, warmup: int | None, task: str) -> str:
    row = method if warmup is None else f"{method}_{'warmup' if warmup else 'scratch'}"
    entry = causes.get(row)
    cause = entry.get(task) if isinstance(entry, Mapping) else None
    return str(cause).strip() if cause else NOT_ANALYSED


def _note(n: int, label: str, column: str, ours: float, paper: float, cause: str) -> str:
    return f"{MARK}{n} {label}, {column}: Δ {ours:+.2f} against the paper's {paper:+.2f}. {cause}"


def _provenance(label: str, group: Group, root: Path) -> list[str]:
    runs = group.records
    seeds = ", ".join(fmt_number(r.seed) for r in runs)
    protocol = "; ".join(dict.fromkeys(_protocol(r) for r in runs))
    epochs = "; ".join(dict.fromkeys(_epochs(r) for r in runs))
    search = fmt_stat([get(r.metrics, "time", "search_s") for r in runs], scale=1.0, digits=0)
    devices = ", ".join(dict.fromkeys(str(get(r.metrics, "run", "device") or NA) for r in runs))
    wall = fmt_stat([_wall_s(r) for r in runs], scale=1 / 60, digits=0)
    commits = ", ".join(
        dict.fromkeys(str(get(r.metrics, "run", "git_commit") or NA)[:7] for r in runs)
    )
    folders = ", ".join(f"`{r.path.parent.relative_to(root).as_posix()}`" for r in runs)
    return [label, seeds, protocol, epochs, search, devices, f"{wall} min", commits, folders]


def _protocol(record: Record) -> str:
    deviations = get(record.metrics, "data", "deviations")
    notes = get(record.metrics, "config", "notes") or get(record.metrics, "notes")
    if deviations or notes == "reduced":
        return "reduced: " + "; ".join(str(d) for d in deviations or ["notes=reduced"])
    return "full" + (" (resumed)" if get(record.metrics, "run", "resumed_from_dir") else "")


def _epochs(record: Record) -> str:
    phases = get(record.metrics, "epochs", "phases")
    if isinstance(phases, Mapping) and phases:
        return " + ".join(f"{k} {fmt_number(v)}" for k, v in phases.items())
    return fmt_number(get(record.metrics, "epochs", "trained"))


def _wall_s(record: Record) -> float | None:
    """Seconds of every epoch of every phase (history.csv, so a resumed run counts its whole
    chain) plus the final evaluation."""
    phases = get(record.metrics, "time", "phases")
    if not isinstance(phases, Mapping):
        return None
    seconds = [v for v in phases.values() if isinstance(v, int | float)]
    evaluation = get(record.metrics, "time", "eval_s")
    return sum(seconds) + (evaluation if isinstance(evaluation, int | float) else 0.0)


def _md(cells: Sequence[str]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"
