"""``mtlrun-report OUTPUT_DIR``: tables (markdown on stdout, CSV files) and the keep-ratio plot
from the ``metrics.json`` files under a run or multirun folder."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from mtlrun.report.collect import Record, collect
from mtlrun.report.plots import plot_keep_ratio
from mtlrun.report.table import Table
from mtlrun.report.tables import (
    generic_table,
    keep_ratio_sweep,
    masks_table,
    ste_fit_table,
    table_4_2,
    table_4_3,
)

# --table choice -> builder, in the order ``auto`` prints them.
BUILDERS: dict[str, Callable[[Sequence[Record]], Table]] = {
    "4.2": table_4_2,
    "4.3": table_4_3,
    "sweep": keep_ratio_sweep,
    "ste_fit": ste_fit_table,
    "masks": masks_table,
    "runs": generic_table,
}
PLOT_FILE = "report_keep_ratio.png"


class _StderrHandler(logging.Handler):
    """Writes to the current ``sys.stderr`` (looked up per message, so captured streams work)."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"mtlrun-report: warning: {record.getMessage()}", file=sys.stderr)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mtlrun-report",
        description="Report the metrics.json files under a run or multirun folder: markdown "
        "tables on stdout, one CSV per table, and the keep-ratio plot when a sweep is found.",
    )
    parser.add_argument("output_dir", type=Path, help="a run folder or a Hydra multirun folder")
    parser.add_argument(
        "--table",
        choices=["auto", *BUILDERS],
        default="auto",
        help="which table; auto (default): every table that applies, the per-run table always",
    )
    parser.add_argument(
        "--csv-dir",
        type=Path,
        default=None,
        help="where CSV and PNG files go (default: OUTPUT_DIR)",
    )
    return parser


def _show_warnings() -> None:
    logger = logging.getLogger("mtlrun.report")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        logger.addHandler(_StderrHandler(logging.WARNING))


def _tables(records: list[Record], choice: str) -> list[Table]:
    """The requested table, or under ``auto`` every table with rows (the per-run one always)."""
    if choice != "auto":
        return [BUILDERS[choice](records)]
    tables = [build(records) for build in BUILDERS.values()]
    return [t for t in tables if t.rows or t.name == "runs"]


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``mtlrun-report``; returns the exit status (1: nothing to report)."""
    args = _parser().parse_args(argv)
    _show_warnings()
    records = collect(args.output_dir)
    if not records:
        print(f"mtlrun-report: no metrics.json found under {args.output_dir}", file=sys.stderr)
        return 1
    tables = _tables(records, args.table)
    if not any(t.rows for t in tables):
        print(
            f"mtlrun-report: no run under {args.output_dir} fits table {args.table}",
            file=sys.stderr,
        )
        return 1
    out_dir = args.csv_dir or (
        args.output_dir if args.output_dir.is_dir() else args.output_dir.parent
    )
    print(f"{len(records)} runs under {args.output_dir}\n")
    for table in tables:
        print(table.to_markdown())
        print(f"mtlrun-report: wrote {table.write_csv(out_dir)}", file=sys.stderr)
    if args.table in ("auto", "sweep"):
        plot = plot_keep_ratio(records, out_dir / PLOT_FILE)
        if plot is not None:
            print(f"mtlrun-report: wrote {plot}", file=sys.stderr)
    return 0
