"""Report tables built from loaded runs: the Yeom (2022) tables with the paper's numbers beside
ours, a keep-ratio sweep, the Appendix A fit, mask statistics, and every setting's runs.

Scores are test scores in percent (2 decimals); several seeds of one setting give
``mean ± std`` (sample std, ddof=1) and their count in the ``n`` column; a seed counts once per
setting (of the runs that repeat it, the newest is used and the others are named in a footnote;
see :mod:`mtlrun.report.groups`). Rows built from a run that deviates from the paper's protocol
(``data.deviations``, a stop by a signal, a divergence) carry a ``†`` and a footnote naming the
deviations.

A diverged run (``diverged`` in metrics.json) counts in means like any other when it has test
scores from a whole best epoch (``epochs.best`` ≥ 1, scores finite): those are the weights
selected before the loss went non-finite. Without them it is no row of any table (``collect``
skips it with a warning), as is a run stopped by a signal before its first whole epoch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from mtlrun.report.collect import Record, get, primary_metric
from mtlrun.report.groups import Group, group_runs, repeat_notes, sweep_series
from mtlrun.report.paper import APPENDIX_A, CONLL_COLUMNS, TABLE_4_2, TABLE_4_3
from mtlrun.report.plots import plot_keep_ratio
from mtlrun.report.table import (
    DEVIATION_MARK,
    NA,
    Table,
    deviation_mark,
    deviation_notes,
    fmt_delta,
    fmt_k,
    fmt_number,
    fmt_stat,
    mean_std,
)

__all__ = [
    "generic_table",
    "keep_ratio_sweep",
    "masks_table",
    "plot_keep_ratio",
    "ste_fit_table",
    "table_4_2",
    "table_4_3",
]

_METRIC_SHORT = {"accuracy": "acc", "f1": "F1"}


def _paper_name(group: Group) -> str:
    """The paper's name of the method and the setting that tells the group apart."""
    name = TABLE_4_2[group.method].label if group.method in TABLE_4_2 else group.method
    return f"{name} ({group.label})" if group.label else name


def _system(group: Group) -> str:
    """``_paper_name`` and ``†`` when a run of the group deviates."""
    return f"{_paper_name(group)}{deviation_mark(group.records)}"


def _mean(group: Group, task: str, metric: str | None = None) -> float | None:
    stat = mean_std(r.test_metric(task, metric) for r in group.records)
    return None if stat is None else stat[0]


def _scores(group: Group, task: str, metric: str | None = None) -> str:
    return fmt_stat(r.test_metric(task, metric) for r in group.records)


def _conll_runs(records: Sequence[Record], methods: Sequence[str]) -> list[Record]:
    """CoNLL-2003 runs of ``methods`` that have test scores, in the order of ``methods``."""
    runs = [r for r in records if r.data_name == "conll" and r.method in methods and r.scored]
    return sorted(runs, key=lambda r: list(methods).index(r.method))


def table_4_2(records: Sequence[Record]) -> Table:
    """Yeom (2022) Table 4.2: CoNLL-2003 test POS acc / NER F1 / Chunk F1 and encoder parameters.

    Δ is against our Single row (as the thesis does), followed by the paper's own Δ. Then the
    epochs each run trained (per phase where a method has several) and the mask-search
    seconds (``time.search_s``), so that a row cut short by a budget shows as such.
    """
    groups = group_runs(_conll_runs(records, list(TABLE_4_2)))
    singles = [g for g in groups if g.method == "single"]
    reference = singles[0] if len(singles) == 1 else None
    headers = ["System", "n"]
    for _, _, name in CONLL_COLUMNS:
        short = name.split()[0]
        headers += [name, f"{short} paper", f"{short} Δ"]
    headers += ["# Params", "Params paper", "Epochs", "Search s"]
    rows = [_row_4_2(g, reference) for g in groups]
    notes = deviation_notes(r for g in groups for r in g.records)
    notes += repeat_notes(groups, _paper_name)
    if len(singles) > 1:
        notes.append("Δ omitted: the runs hold several Single settings.")
    return Table(
        "table_4_2", "Yeom (2022) Table 4.2: CoNLL-2003 test (ours vs paper)", headers, rows, notes
    )


def _row_4_2(group: Group, reference: Group | None) -> list[str]:
    paper = TABLE_4_2[group.method]
    paper_single = TABLE_4_2["single"]
    row = [_system(group), str(len(group.records))]
    for task, metric, _ in CONLL_COLUMNS:
        delta = NA
        if reference is not None and group is not reference:
            ours = fmt_delta(_mean(group, task, metric), _mean(reference, task, metric))
            delta = f"{ours} (paper {paper.score(task) - paper_single.score(task):+.2f})"
        row += [_scores(group, task, metric), f"{paper.score(task):.2f}", delta]
    used = [get(r.metrics, "params", "used") for r in group.records]
    epochs = ", ".join(dict.fromkeys(_epochs(r) for r in group.records))
    search = _stat(group.records, "time", "search_s", digits=1)
    return row + [fmt_k(used), f"{paper.params_k}k", epochs, search]


def _epochs(record: Record) -> str:
    """Epochs trained: the main phase's (``epochs.trained``), or each phase's where a method has
    several (``warmup 1 + search 3 + train 1``; sparse_imp's ``imp`` counts single-task epochs,
    rounds × tasks)."""
    phases = get(record.metrics, "epochs", "phases")
    if not isinstance(phases, Mapping) or len(phases) < 2:
        return fmt_number(get(record.metrics, "epochs", "trained"))
    return " + ".join(f"{k} {fmt_number(v)}" for k, v in phases.items())


def table_4_3(records: Sequence[Record]) -> Table:
    """Yeom (2022) Table 4.3: sparse sharing searched from scratch vs after a dense warm-up
    (``config.method_args.warmup_epochs`` 0 vs > 0), CoNLL-2003 test, paper beside."""
    methods = ["sparse_imp", "sparse_ste"]
    groups = group_runs(_conll_runs(records, methods), label_ignore={"warmup_epochs"})
    groups.sort(key=lambda g: (methods.index(g.method), _warmup(g) > 0))
    headers = ["System", "Init", "n"]
    for _, _, name in CONLL_COLUMNS:
        headers += [name, f"{name.split()[0]} paper"]
    rows = []
    for group in groups:
        paper = TABLE_4_3[(group.method, _warmup(group) > 0)]
        row = [_system(group), _init(group), str(len(group.records))]
        for task, metric, _ in CONLL_COLUMNS:
            row += [_scores(group, task, metric), f"{paper[task]:.2f}"]
        rows.append(row)
    notes = deviation_notes(r for g in groups for r in g.records)
    notes += repeat_notes(groups, lambda g: f"{_paper_name(g)}, {_init(g).lower()}")
    title = "Yeom (2022) Table 4.3: from scratch vs warm-up, CoNLL-2003 test (ours vs paper)"
    return Table("table_4_3", title, headers, rows, notes)


def _init(group: Group) -> str:
    epochs = _warmup(group)
    return "From scratch" if epochs == 0 else f"Warm-up ({epochs:g} epochs)"


def _warmup(group: Group) -> float:
    value = group.args.get("warmup_epochs", 0)
    return float(value) if isinstance(value, int | float) else 0.0


def _metric_header(task: str, records: Sequence[Record]) -> str:
    metric = primary_metric(records, task)
    return f"{task} {_METRIC_SHORT.get(metric, metric)}"


def keep_ratio_sweep(records: Sequence[Record]) -> Table:
    """Test score per task against ``config.method_args.keep_ratio`` (Yeom (2022) Figure 4.1 as a
    table), one block of rows per swept setting."""
    series = sweep_series(records)
    tasks = list(dict.fromkeys(t for s in series for t in s.tasks))
    headers = ["Method", "Data", "keep ratio", "n"] + [_metric_header(t, records) for t in tasks]
    rows = []
    for s in series:
        for ratio, group in s.points:
            scores = [_scores(group, t) for t in tasks]
            rows.append([_system(group), s.data, f"{ratio:g}", str(len(group.records)), *scores])
    notes = deviation_notes(r for s in series for _, g in s.points for r in g.records)
    notes += repeat_notes((g for s in series for _, g in s.points), _sweep_point)
    return Table(
        "keep_ratio", "Keep-ratio sweep: test score (%) by remaining ratio", headers, rows, notes
    )


def _sweep_point(group: Group) -> str:
    ratio = float(group.args["keep_ratio"])
    return f"{_paper_name(group)} at keep ratio {ratio:g} on {group.data}"


def ste_fit_table(records: Sequence[Record]) -> Table:
    """Yeom (2022) Appendix A: fitting U(0,1) probabilities with the STE, ours beside the thesis's.

    The fractions are in percent; the mean absolute error is a probability (4 decimals).
    """
    runs = [r for r in records if isinstance(r.metrics.get("ste_fit"), Mapping)]
    rows = []
    for record in runs:
        for key, (label, paper) in APPENDIX_A.items():
            ours = _ste_fit_value(
                record.metrics["ste_fit"].get(key), percent=key != "mean_abs_error"
            )
            rows.append([record.rel + deviation_mark([record]), label, ours, paper])
    title = "Yeom (2022) Appendix A: STE fit of U(0,1) probabilities (ours vs thesis)"
    return Table(
        "ste_fit", title, ["Run", "Quantity", "Ours", "Thesis"], rows, deviation_notes(runs)
    )


def _ste_fit_value(stat: object, percent: bool) -> str:
    """``{"mean": m, "std": s}`` as ``"20.26 ± 2.13%"`` (percent) or ``"0.0063 ± 0.0001"``."""
    if not isinstance(stat, Mapping) or not isinstance(stat.get("mean"), int | float):
        return NA
    scale, digits, unit = (100.0, 2, "%") if percent else (1.0, 4, "")
    text = f"{stat['mean'] * scale:.{digits}f}"
    if isinstance(stat.get("std"), int | float) and stat["std"]:
        text += f" ± {stat['std'] * scale:.{digits}f}"
    return text + unit


def generic_table(records: Sequence[Record]) -> Table:
    """The runs with test scores, seeds of one setting pooled (grouped as the paper tables are:
    data, method, ``method_args`` and the overrides that change results): method, the setting
    that tells the row apart, data, ``n``, the seeds and the epochs each trained, each task's
    primary test score (%), encoder parameters used, training and search seconds (``mean ±
    std``), and ``†`` when a run of the row deviates."""
    groups = group_runs(r for r in records if r.scored)
    tasks = list(dict.fromkeys(t for g in groups for r in g.records for t in r.tasks))
    headers = ["Method", "Setting", "Data", "n", "Seeds", "Epochs"]
    headers += [_metric_header(t, records) for t in tasks]
    headers += ["Params used", "Train s", "Search s", "Dev."]
    rows = []
    for g in groups:
        runs = g.records
        rows.append(
            [
                g.method or NA,
                g.label,
                g.data or NA,
                str(len(runs)),
                ", ".join(fmt_number(r.seed) for r in runs),
                ", ".join(fmt_number(get(r.metrics, "epochs", "trained")) for r in runs),
                *[_scores(g, t) for t in tasks],
                _stat(runs, "params", "used", digits=0),
                _stat(runs, "time", "train_s", digits=1),
                _stat(runs, "time", "search_s", digits=1),
                DEVIATION_MARK if any(r.deviations for r in runs) else "",
            ]
        )
    notes = deviation_notes(r for g in groups for r in g.records) + repeat_notes(groups)
    return Table("runs", "Runs (seeds pooled)", headers, rows, notes)


def _stat(records: Sequence[Record], *keys: str, digits: int) -> str:
    """``mean ± std`` of the number at ``keys`` in each run's metrics.json (``"–"``: none)."""
    values = [get(r.metrics, *keys) for r in records]
    return fmt_stat([v for v in values if isinstance(v, int | float)], scale=1.0, digits=digits)


def masks_table(records: Sequence[Record]) -> Table:
    """Sparse-sharing masks: density per task, pairwise IoU and the all-task overlap ratio
    (fractions of the masked encoder parameters)."""
    runs = [r for r in records if isinstance(r.metrics.get("masks"), Mapping)]
    tasks = list(dict.fromkeys(t for r in runs for t in _keys(r, "density")))
    pairs = list(dict.fromkeys(p for r in runs for p in _keys(r, "iou")))
    headers = ["Run", "Method", *[f"{t} density" for t in tasks], *[f"IoU {p}" for p in pairs]]
    headers.append("Overlap ratio")
    rows = []
    for r in runs:
        density = [fmt_number(get(r.metrics, "masks", "density", t), 3) for t in tasks]
        iou = [fmt_number(get(r.metrics, "masks", "iou", p), 3) for p in pairs]
        overlap = fmt_number(get(r.metrics, "masks", "overlap_ratio"), 3)
        rows.append([r.rel + deviation_mark([r]), r.method or NA, *density, *iou, overlap])
    return Table("masks", "Sparse-sharing masks", headers, rows, deviation_notes(runs))


def _keys(record: Record, entry: str) -> list[str]:
    """The keys of ``masks.<entry>`` (empty when it is not a mapping)."""
    value = get(record.metrics, "masks", entry)
    return list(value) if isinstance(value, Mapping) else []
