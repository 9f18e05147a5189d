"""``mtlrun-report OUTPUT_DIR``: tables (markdown on stdout, CSV files) and plots (the keep-ratio
curve, Vu (2019) Figures 3, 4 and 6) from the ``metrics.json`` files under a run or multirun
folder (and, for the balancer figures, the ``history.csv`` beside each)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mtlrun.report.balancing import compares_balancers
from mtlrun.report.collect import Found, Record, scan
from mtlrun.report.leaderboard import compares_many_balancers, leaderboard_table
from mtlrun.report.plots import plot_fig3, plot_fig4, plot_fig6, plot_keep_ratio
from mtlrun.report.policy_table import adashare_runs, policy_table
from mtlrun.report.results import ResultError, keep_run, replace_section, results_section
from mtlrun.report.solver_iterations import compares_solvers, fig3_table
from mtlrun.report.stationarity import fig4_table
from mtlrun.report.table import Table
from mtlrun.report.tables import (
    generic_table,
    keep_ratio_sweep,
    masks_table,
    ste_fit_table,
    table_4_2,
    table_4_3,
)
from mtlrun.report.tree_table import affinity_table, table1, tree_runs
from mtlrun.report.wall_time import fig6_table

# --table choice -> builder, in the order ``auto`` prints them.
BUILDERS: dict[str, Callable[[Sequence[Record]], Table]] = {
    "4.2": table_4_2,
    "4.3": table_4_3,
    "sweep": keep_ratio_sweep,
    "ste_fit": ste_fit_table,
    "masks": masks_table,
    "fig6": fig6_table,
    "fig3": fig3_table,
    "fig4": fig4_table,
    "leaderboard": leaderboard_table,
    "table1": table1,
    "table1_affinity": affinity_table,
    "policy": policy_table,
    "runs": generic_table,
}
# Tables printed with another when it is asked for by name (Table 1 and its affinity matrix).
COMPANIONS: dict[str, list[str]] = {"table1": ["table1_affinity"], "runs": ["policy"]}
# Tables that ``auto`` prints only when the runs compare what they are about.
AUTO_ONLY_IF: dict[str, Callable[[Sequence[Record]], bool]] = {
    "fig6": compares_balancers,
    "fig3": compares_solvers,
    "fig4": compares_balancers,
    "leaderboard": compares_many_balancers,
    "table1": lambda records: bool(tree_runs(records)),
    "table1_affinity": lambda records: bool(tree_runs(records)),
    "policy": lambda records: bool(adashare_runs(records)),
}
PLOT_FILE = "report_keep_ratio.png"
# --table choice -> its plot and file name; a plot is drawn when its table is printed.
PLOTS: dict[str, tuple[Callable[[Sequence[Record], Path], Path | None], str]] = {
    "sweep": (plot_keep_ratio, PLOT_FILE),
    "fig6": (plot_fig6, "report_fig6.png"),
    "fig3": (plot_fig3, "report_fig3.png"),
    "fig4": (plot_fig4, "report_fig4.png"),
}


class _StderrHandler(logging.Handler):
    """Writes to the current ``sys.stderr`` (looked up per message, so captured streams work)."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"mtlrun-report: warning: {record.getMessage()}", file=sys.stderr)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mtlrun-report",
        description="Report the metrics.json files under a run or multirun folder: markdown "
        "tables on stdout, one CSV per table, and a PNG for the keep-ratio sweep and the balancer "
        "figures of Vu (2019) (fig6, fig3, fig4: read from each run's history.csv).",
    )
    parser.add_argument("output_dir", type=Path, help="a run folder or a Hydra multirun folder")
    parser.add_argument(
        "--table",
        choices=["auto", *BUILDERS],
        default="auto",
        help="which table; auto (default): every table that applies, the runs table always, "
        "fig6/fig4 when the runs hold two or more balancers, the leaderboard when three or "
        "more, fig3 when two or more MGDA solvers "
        "or a run with balancer.compare_solvers",
    )
    parser.add_argument(
        "--csv-dir",
        type=Path,
        default=None,
        help="where CSV and PNG files go (default: OUTPUT_DIR)",
    )
    results = parser.add_argument_group(
        "results/ (the repository's kept full-protocol runs; README section Results)"
    )
    results.add_argument(
        "--results-section",
        action="store_true",
        help="print the README's Results section built from OUTPUT_DIR (a results/ folder): "
        "our numbers beside the papers', Δ against our Single row, marked gaps, provenance",
    )
    results.add_argument(
        "--write-readme",
        type=Path,
        metavar="README",
        help="with --results-section: replace the section between its markers in README",
    )
    results.add_argument(
        "--keep",
        type=Path,
        metavar="DEST",
        help="copy the finished run OUTPUT_DIR's result files (metrics.json, history.csv, "
        ".hydra/config.yaml and overrides.yaml, small JSON artefacts) into the new folder DEST",
    )
    return parser


def _results(args: argparse.Namespace) -> int:
    """``--keep`` and ``--results-section`` (with ``--write-readme``)."""
    try:
        if args.keep is not None:
            for path in keep_run(args.output_dir, args.keep):
                print(f"mtlrun-report: kept {path}", file=sys.stderr)
            return 0
        section = results_section(args.output_dir)
        if args.write_readme is None:
            print(section, end="")
            return 0
        text = args.write_readme.read_text(encoding="utf-8")
        args.write_readme.write_text(replace_section(text, section), encoding="utf-8")
        print(f"mtlrun-report: wrote the Results section of {args.write_readme}", file=sys.stderr)
        return 0
    except (ResultError, OSError) as e:
        print(f"mtlrun-report: {e}", file=sys.stderr)
        return 1


def _show_warnings() -> None:
    logger = logging.getLogger("mtlrun.report")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        logger.addHandler(_StderrHandler(logging.WARNING))


def _tables(records: list[Record], choice: str) -> dict[str, Table]:
    """The requested table, or under ``auto`` every table with rows (the runs table always;
    the balancer figures when the runs compare balancers or solvers), keyed by choice."""
    if choice != "auto":
        tables = {choice: BUILDERS[choice](records)}
        for name in COMPANIONS.get(choice, []):  # a companion only when it has rows
            companion = BUILDERS[name](records)
            if companion.rows:
                tables[name] = companion
        return tables
    tables = {
        name: build(records)
        for name, build in BUILDERS.items()
        if name not in AUTO_ONLY_IF or AUTO_ONLY_IF[name](records)
    }
    return {name: t for name, t in tables.items() if t.rows or name == "runs"}


def _summary(found: Found, root: Path) -> str:
    """The report's first lines: how many runs, files skipped, and runs superseded (by what)."""
    skipped = f"; {len(found.skipped)} metrics.json skipped (see warnings)" if found.skipped else ""
    lines = [f"{len(found.records)} runs under {root}{skipped}"]
    if found.superseded:
        pairs = ", ".join(f"`{old}` → `{new}`" for old, new in found.superseded.items())
        count = len(found.superseded)
        lines.append(
            f"{count} run(s) superseded by the run that resumed them, in no table: {pairs}"
        )
    return "\n".join(lines) + "\n"


def _failures_markdown(failures: list[dict[str, Any]]) -> str:
    lines = [
        f"## Failed jobs ({len(failures)})",
        "",
        "| job | overrides | error |",
        "|---|---|---|",
    ]
    for f in failures:
        overrides = " ".join(f.get("overrides", [])) or "(none)"
        error = str(f.get("error", "")).replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {f.get('job', '?')} | `{overrides}` | {error} |")
    return "\n".join(lines) + "\n"


def write_report(root: Path, failures: list[dict[str, Any]] | None = None) -> Path:
    """``<root>/report.md`` (every table that applies, as ``mtlrun-report`` prints them, and
    the failed jobs), with the tables' CSVs and plots beside it; returns the report's path."""
    found = scan(root)
    parts = [f"# Sweep report: {root}\n", _summary(found, root)]
    if found.records:
        tables = _tables(found.records, "auto")
        parts += [table.to_markdown() for table in tables.values()]
        _write_files(tables, found.records, root)
    if failures:
        parts.append(_failures_markdown(failures))
    path = root / "report.md"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(parts))
    tmp.replace(path)
    return path


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``mtlrun-report``; returns the exit status (1: nothing to report)."""
    parser = _parser()
    args = parser.parse_args(argv)
    _show_warnings()
    if args.write_readme is not None and not args.results_section:
        parser.error("--write-readme needs --results-section")
    if args.keep is not None or args.results_section:
        return _results(args)
    if not args.output_dir.exists():
        print(f"mtlrun-report: no such folder: {args.output_dir}", file=sys.stderr)
        return 1
    found = scan(args.output_dir)
    records = found.records
    if not records:
        what = f"no run to report ({len(found.skipped)} metrics.json skipped)"
        print(
            f"mtlrun-report: {what if found.skipped else 'no metrics.json found'} "
            f"under {args.output_dir}",
            file=sys.stderr,
        )
        return 1
    tables = _tables(records, args.table)
    if not any(t.rows for t in tables.values()):
        print(
            f"mtlrun-report: no run under {args.output_dir} fits table {args.table}",
            file=sys.stderr,
        )
        return 1
    out_dir = args.csv_dir or (
        args.output_dir if args.output_dir.is_dir() else args.output_dir.parent
    )
    print(_summary(found, args.output_dir))
    for table in tables.values():
        print(table.to_markdown())
    for path in _write_files(tables, records, out_dir):
        print(f"mtlrun-report: wrote {path}", file=sys.stderr)
    return 0


def _write_files(tables: dict[str, Table], records: list[Record], out_dir: Path) -> list[Path]:
    """Each table's CSV and, for the tables that have one, its plot, in ``out_dir``."""
    written = [table.write_csv(out_dir) for table in tables.values()]
    for name in (n for n in tables if n in PLOTS and tables[n].rows):
        draw, file_name = PLOTS[name]
        plot = draw(records, out_dir / file_name)
        if plot is not None:
            written.append(plot)
    return written
