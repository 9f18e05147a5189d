"""A plain table (headers + rows of strings + footnotes), its markdown and CSV forms, and the
number formats shared by every report table."""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mtlrun.report.collect import Record

NA = "–"
DEVIATION_MARK = "†"


@dataclass
class Table:
    """A report table. ``name`` names the CSV file (``report_<name>.csv``)."""

    name: str
    title: str
    headers: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)

    def to_markdown(self) -> str:
        """A ``### title`` heading, a GitHub-style pipe table, then the footnotes."""
        lines = [
            f"### {self.title}",
            "",
            _md_row(self.headers),
            _md_row(["---"] * len(self.headers)),
        ]
        lines += [_md_row(row) for row in self.rows]
        if self.notes:
            lines.append("")
            lines += [f"{note}  " for note in self.notes]
        return "\n".join(lines) + "\n"

    def to_csv(self) -> str:
        """Header and rows; the footnotes follow after a blank line, one per single-cell row."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(self.headers)
        writer.writerows(self.rows)
        if self.notes:
            buffer.write("\n")
            writer.writerows([note] for note in self.notes)
        return buffer.getvalue()

    def write_csv(self, folder: Path) -> Path:
        """Write ``report_<name>.csv`` into ``folder`` (created if needed) and return its path."""
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"report_{self.name}.csv"
        path.write_text(self.to_csv(), encoding="utf-8")
        return path


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def finite(values: Iterable[float | None]) -> list[float]:
    """The values that are finite numbers (``None``, NaN and ±inf dropped)."""
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def mean_std(values: Iterable[float | None]) -> tuple[float, float | None] | None:
    """Mean and sample standard deviation (ddof=1; ``None`` for one value) of the finite
    values; ``None`` if there are none (or they overflow a float)."""
    xs = finite(values)
    if not xs:
        return None
    try:
        return statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else None
    except OverflowError:
        return None


def fmt_stat(values: Iterable[float | None], scale: float = 100.0, digits: int = 2) -> str:
    """``"95.34 ± 0.12"`` over several runs, ``"95.34"`` for one or for runs that all agree
    (a constant has no spread to show), ``"–"`` for none.

    Fractions are scaled to percent by default.
    """
    stat = mean_std(values)
    if stat is None:
        return NA
    mean, std = stat
    text = f"{mean * scale:.{digits}f}"
    return text if not std else f"{text} ± {std * scale:.{digits}f}"


def fmt_delta(ours: float | None, reference: float | None) -> str:
    """Signed difference in percent points of two fractions, e.g. ``"+0.25"``; ``"–"`` if unknown."""
    if ours is None or reference is None:
        return NA
    delta = round((ours - reference) * 100, 2)
    return f"{delta + 0.0:+.2f}"  # + 0.0 turns -0.0 into 0.0: no "-0.00"


def fmt_k(values: Iterable[float | None]) -> str:
    """A parameter count in thousands, e.g. ``"534k"`` (the mean over runs)."""
    stat = mean_std(values)
    return NA if stat is None else f"{round(stat[0] / 1000)}k"


def fmt_number(value: object, digits: int | None = None) -> str:
    """A number as text (rounded to ``digits`` when given); ``"–"`` when missing."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return NA
    return f"{value:.{digits}f}" if digits is not None else str(value)


def deviation_mark(records: Iterable[Record]) -> str:
    """``" †"`` when any of ``records`` deviates from the paper's protocol, else ``""``."""
    return f" {DEVIATION_MARK}" if any(r.deviations for r in records) else ""


def deviation_notes(records: Iterable[Record]) -> list[str]:
    """One footnote per distinct set of ``data.deviations``, naming the runs that share it."""
    runs: dict[str, list[str]] = {}
    for r in records:
        if r.deviations:
            runs.setdefault("; ".join(r.deviations), []).append(f"`{r.rel}`")
    notes = []
    for text, names in runs.items():
        verb = "deviates" if len(names) == 1 else "deviate"
        notes.append(
            f"{DEVIATION_MARK} {', '.join(names)} {verb} from the paper's protocol: {text}"
        )
    return notes
