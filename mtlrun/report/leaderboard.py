"""The balancer leaderboard: one row per balancer setting on one set-up (data, backbone, method
and the overrides that change results besides the balancer's), ranked by the mean over tasks of
the primary test metric.

Per row: each task's primary test score (%, ``mean ± std`` over seeds, ddof=1, count in ``n``),
the task mean (the per-seed mean over tasks, then ``mean ± std`` over seeds), Δ_m against the
``equal`` row (Maninis et al. 2019: ``100/T Σ_t (M_b,t − M_equal,t) / M_equal,t`` on the seed
means, every primary metric higher-is-better), the rank by task mean, the training seconds of a
run (``time.train_s``) and ``†`` when a run records departures of the balancer from its authors'
code (``fidelity.balancer``, listed under the table). Runs that diverged or were stopped are
listed apart and averaged nowhere; a seed counts once per setting (``groups.newest_per_seed``).
A header line states the set-up's protocol, and a budget cut by the overrides is labelled
reduced. Mixed set-ups in one folder give one leaderboard each.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from mtlrun.report.collect import Record, get, primary_metric
from mtlrun.report.groups import Repeat, describe_repeat, newest_per_seed, setting_overrides
from mtlrun.report.history import balancer_name
from mtlrun.report.table import DEVIATION_MARK, NA, Table, fmt_number, fmt_stat, mean_std

REFERENCE = "equal"
# Overrides that cut the protocol's budget: a leaderboard whose runs set one is "reduced".
BUDGET_KEYS = (
    "data.limit_train",
    "data.limit_eval",
    "data.n_train",
    "data.n_valid",
    "data.n_test",
    "trainer.max_epochs",
    "trainer.steps_per_epoch",
    "trainer.max_minutes",
)
# Switches the Pareto-stationarity monitor only: no part of a balancer setting (as in fig6).
MONITOR_KEY = "balancer.kkt_every"
_METRIC_SHORT = {"accuracy": "acc", "f1": "F1"}


@dataclass(frozen=True)
class Entry:
    """One balancer setting of a leaderboard: its finished runs (one per seed), its stopped
    runs, and the seeds several runs had."""

    label: str
    balancer: str
    setting: tuple[str, ...]
    runs: tuple[Record, ...]
    stopped: tuple[Record, ...]
    repeats: tuple[Repeat, ...]


@dataclass
class Board(Table):
    """One set-up's leaderboard; ``header``: the protocol line printed above the table."""

    header: str = ""

    def to_markdown(self) -> str:
        title, rest = super().to_markdown().split("\n", 1)
        return f"{title}\n\n{self.header}\n{rest}"


@dataclass
class Leaderboards(Table):
    """Every set-up's leaderboard: markdown one board after the other; the CSV in long form
    (set-up columns, then each board's row, tasks of all boards as columns)."""

    boards: list[Board] = field(default_factory=list)

    def to_markdown(self) -> str:
        return "\n".join(board.to_markdown() for board in self.boards)


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _is_balancer(override: str) -> bool:
    key = _key(override)
    return key == "balancer" or key.startswith("balancer.")


def _effective(record: Record) -> list[str]:
    """``setting_overrides`` with one override per key, the last given (the one Hydra applies)."""
    kept = set(setting_overrides(record))
    last = {_key(o): o for o in record.overrides if o in kept}
    return sorted(last.values())


def _setting(record: Record) -> tuple[str, ...]:
    """The run's ``balancer.*`` overrides that change its result (not ``balancer=<name>``)."""
    hidden = {"balancer", MONITOR_KEY}
    return tuple(o for o in _effective(record) if _is_balancer(o) and _key(o) not in hidden)


def _setup(record: Record) -> tuple[str, ...]:
    """What a leaderboard holds fixed: data, backbone, method, its arguments, other overrides."""
    backbone = str(get(record.metrics, "config", "backbone") or "")
    args = json.dumps(record.method_args, sort_keys=True, default=str)
    protocol = tuple(o for o in _effective(record) if not _is_balancer(o))
    return (record.data_name, backbone, record.method, args, *protocol)


def primary(record: Record, task: str) -> str:
    """The task's primary metric as the run recorded it (:meth:`Record.primary`)."""
    return record.primary(task)


def score(record: Record, task: str) -> float | None:
    """The run's primary test score of ``task``, a fraction."""
    return record.test_metric(task, primary(record, task))


def task_mean(record: Record, tasks: Sequence[str]) -> float | None:
    """The mean over ``tasks`` of the run's primary test scores; ``None`` if one is missing."""
    values = [score(record, t) for t in tasks]
    return _mean(values) if values and all(v is not None for v in values) else None


def _mean(values: Sequence[float | None]) -> float | None:
    stat = mean_std(values)
    return None if stat is None else stat[0]


def delta_m(entry: Entry, reference: Entry, tasks: Sequence[str]) -> float | None:
    """Δ_m in percent: ``100/T Σ_t (M_b,t − M_ref,t) / M_ref,t`` on the seed means of each
    task's primary score; ``None`` when a mean is missing or a reference mean is 0."""
    terms = []
    for task in tasks:
        ours = _mean([score(r, task) for r in entry.runs])
        ref = _mean([score(r, task) for r in reference.runs])
        if ours is None or ref is None or ref == 0:
            return None
        terms.append((ours - ref) / ref)
    return 100 * statistics.fmean(terms) if terms else None


def ranks(values: Sequence[float | None]) -> list[int | None]:
    """Competition ranks, highest first (ties share the best rank: 1, 2, 2, 4); ``None`` stays.
    Values equal to 9 decimals tie (the float sums of equal scores may differ in the last bit)."""
    numbers = [round(v, 9) for v in values if v is not None]
    return [None if v is None else 1 + sum(u > round(v, 9) for u in numbers) for v in values]


def _entries(records: Sequence[Record]) -> list[Entry]:
    """The balancer settings of one set-up's runs, in order of first appearance."""
    buckets: dict[tuple[str, ...], list[Record]] = {}
    for record in records:
        buckets.setdefault((balancer_name(record), *_setting(record)), []).append(record)
    entries = []
    for (name, *setting), runs in buckets.items():
        kept, repeats = newest_per_seed(runs)
        label = name + (f" ({', '.join(setting)})" if setting else "")
        finished = tuple(r for r in kept if not r.stop)
        stopped = tuple(r for r in kept if r.stop)
        entries.append(Entry(label, name, tuple(setting), finished, stopped, tuple(repeats)))
    return entries


def _departures(entry: Entry) -> list[str]:
    """The balancer's departures from its authors' code recorded by the entry's runs."""
    notes: dict[str, None] = {}
    for record in (*entry.runs, *entry.stopped):
        found = get(record.metrics, "fidelity", "balancer")
        if isinstance(found, list):
            notes.update(dict.fromkeys(str(n) for n in found))
    return list(notes)


def _header(tasks: Sequence[str], runs: Sequence[Record]) -> list[str]:
    def name(task: str) -> str:
        metric = primary_metric(runs, task)
        return f"{task} {_METRIC_SHORT.get(metric, metric)}"

    return [name(t) for t in tasks]


def _distinct(values: Sequence[object]) -> list[str]:
    """The distinct values as text, numbers in increasing order first."""
    numbers = sorted({v for v in values if isinstance(v, int | float) and not isinstance(v, bool)})
    others = sorted({fmt_number(v) for v in values if v not in numbers})
    return [fmt_number(v) for v in numbers] + others


def _protocol(setup: tuple[str, ...], records: Sequence[Record]) -> str:
    """The header line: set-up, epochs and seeds the runs had, budget (reduced or full)."""
    data, backbone, method, _args, *overrides = setup
    epochs = _distinct([get(r.metrics, "epochs", "trained") for r in records])
    seeds = _distinct([r.seed for r in records])
    budget = [o for o in overrides if _key(o) in BUDGET_KEYS]
    reduced = budget or "notes=reduced" in overrides
    text = f"Protocol: data `{data or NA}`, backbone `{backbone or NA}`, method `{method or NA}`"
    text += f"; epochs trained {', '.join(epochs)}; seeds {', '.join(seeds)}. "
    if reduced:
        cuts = ", ".join(f"`{o}`" for o in budget) or "`notes=reduced`"
        text += f"**Reduced** budget ({cuts}): not the full protocol."
    else:
        text += "Full budget (no data/epoch limit among the overrides)."
    others = [o for o in overrides if _key(o) not in BUDGET_KEYS]
    if others:
        text += " Overrides: " + ", ".join(f"`{o}`" for o in others) + "."
    monitor = sorted({o for r in records for o in r.overrides if _key(o) == MONITOR_KEY})
    if monitor:
        text += " Monitor: " + ", ".join(f"`{o}`" for o in monitor) + "."
    return text


def _row(entry: Entry, tasks: Sequence[str], delta: float | None, rank: int | None) -> list[str]:
    runs = entry.runs
    name = entry.label + (f" {DEVIATION_MARK}" if _departures(entry) else "")
    train_s = [get(r.metrics, "time", "train_s") for r in runs]
    row = [name, str(len(runs)), *[fmt_stat(score(r, t) for r in runs) for t in tasks]]
    row.append(fmt_stat(task_mean(r, tasks) for r in runs))
    row += [NA if delta is None else f"{delta + 0.0:+.2f}", fmt_number(rank)]
    return [*row, fmt_stat([v for v in train_s if isinstance(v, int | float)], 1.0, 1)]


def _notes(entries: Sequence[Entry], reference: Entry | None) -> list[str]:
    """How to read the board, then departures, runs not averaged and repeated seeds."""
    notes = [
        "Scores: primary test metric per task (%), mean ± std over seeds (ddof=1). Task mean: "
        "each seed's mean over tasks, then mean ± std over seeds; rows sorted by it, Rank by it.",
        f"Δ_m %: mean over tasks of (M_b − M_{REFERENCE}) / M_{REFERENCE} × 100 on the seed "
        f"means, against the `{REFERENCE}` row (Maninis et al. 2019); every metric here is "
        "higher-is-better. Train s: training seconds of one run (time.train_s).",
    ]
    if reference is None:
        notes.append(f"Δ_m: no `{REFERENCE}` run without balancer.* overrides on this set-up.")
    for e in (e for e in entries if e.runs and _departures(e)):
        departures = "; ".join(_departures(e))
        notes.append(f"{DEVIATION_MARK} {e.label}: departs from its authors' code: {departures}")
    stopped = [(e, r) for e in entries for r in e.stopped]
    if stopped:
        notes.append(f"Not averaged ({len(stopped)} run(s) diverged or stopped):")
        notes += [
            f"- `{r.rel}` ({e.label}, seed {fmt_number(r.seed)}): {r.stop}" for e, r in stopped
        ]
    return notes + [describe_repeat(r, e.label) for e in entries for r in e.repeats]


def _data_notes(records: Sequence[Record]) -> list[str]:
    """The runs' ``data.deviations`` (the protocol's data, as the runs record it), once each."""
    counts: dict[str, int] = {}
    for record in records:
        found = get(record.metrics, "data", "deviations")
        for note in dict.fromkeys(str(n) for n in found) if isinstance(found, list) else ():
            counts[note] = counts.get(note, 0) + 1
    return [
        f"Data: {note}" + ("" if n == len(records) else f" ({n} of {len(records)} runs)")
        for note, n in counts.items()
    ]


def _board(setup: tuple[str, ...], records: Sequence[Record], title: str) -> Board:
    """One set-up's leaderboard: rows by task mean, highest first."""
    entries = _entries(records)
    finished = [r for e in entries for r in e.runs]
    tasks = list(dict.fromkeys(t for r in finished for t in r.tasks))
    means = {e.label: _mean([task_mean(r, tasks) for r in e.runs]) for e in entries}
    entries.sort(key=lambda e: (means[e.label] is None, -round(means[e.label] or 0.0, 9)))
    rank = dict(zip(means, ranks(list(means.values())), strict=True))
    reference = next((e for e in entries if e.balancer == REFERENCE and not e.setting), None)
    headers = ["Balancer", "n", *_header(tasks, finished), "Task mean", "Δ_m %", "Rank"]
    rows = [
        _row(e, tasks, None if reference is None else delta_m(e, reference, tasks), rank[e.label])
        for e in entries
        if e.runs
    ]
    every = [*finished, *(r for e in entries for r in e.stopped)]
    notes = _notes(entries, reference) + _data_notes(every)
    header = _protocol(setup, every)
    return Board("leaderboard", title, [*headers, "Train s"], rows, notes, header=header)


def _titles(setups: Sequence[tuple[str, ...]]) -> list[str]:
    """``Balancer leaderboard: mnist3 · LeNetBN · hard``, with the overrides that tell apart
    set-ups of one data, backbone and method."""
    titles = []
    for setup in setups:
        peers = [s for s in setups if s[:3] == setup[:3]]  # method_args and overrides may differ
        common = set.intersection(*(set(s[3:]) for s in peers))
        differing = [o for o in setup[3:] if o not in common]
        title = "Balancer leaderboard: " + " · ".join(p or NA for p in setup[:3])
        titles.append(title + (f" ({', '.join(differing)})" if differing else ""))
    return titles


def leaderboards(records: Sequence[Record]) -> list[Board]:
    """One leaderboard per set-up of the scored runs, in order of first appearance."""
    setups: dict[tuple[str, ...], list[Record]] = {}
    for record in records:
        if record.scored:
            setups.setdefault(_setup(record), []).append(record)
    titles = _titles(list(setups))
    return [_board(s, runs, t) for (s, runs), t in zip(setups.items(), titles, strict=True)]


def leaderboard_table(records: Sequence[Record]) -> Leaderboards:
    """Every set-up's leaderboard (``--table leaderboard``)."""
    boards = [b for b in leaderboards(records) if b.rows]
    tasks = list(dict.fromkeys(h for b in boards for h in b.headers[2:-4]))
    headers = ["Set-up", "Balancer", "n", *tasks, *(boards[0].headers[-4:] if boards else [])]
    rows = []
    for b in boards:
        for row in b.rows:
            cells = dict(zip(b.headers, row, strict=True))
            rows.append([b.title, *(cells.get(h, NA) for h in headers[1:])])
    notes = [f"{b.title}: {line}" for b in boards for line in [b.header, *b.notes]]
    title = "Balancer leaderboard"
    return Leaderboards("leaderboard", title, headers, rows, notes, boards=boards)


def compares_many_balancers(records: Sequence[Record]) -> bool:
    """Whether the runs hold three or more balancers (``auto`` then prints the leaderboard)."""
    return len({balancer_name(r) for r in records}) >= 3
