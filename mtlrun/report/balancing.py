"""What the Vu (2019) §4 balancer tables share (Figures 6, 3 and 4, built by ``wall_time``,
``solver_iterations`` and ``stationarity``): runs with their ``history.csv`` grouped by balancer
setting, labels, per-epoch picks and the mean curves their plots draw.

Runs are grouped by data, method, balancer and the overrides that change results; seeds of one
setting are pooled (``mean ± std``, ddof=1, count in ``n``). A group is named by its balancer and
whatever tells it apart from the other groups of the table (``mgda (balancer.normalize=l2)``).
Epochs are counted over all rows of ``history.csv`` in file order (every phase of a run).
"""

from __future__ import annotations

import json
import logging
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import accumulate

from mtlrun.report.collect import Record, get
from mtlrun.report.groups import Repeat, describe_repeat, newest_per_seed, setting_overrides
from mtlrun.report.history import History, balancer_name, balancer_setting, history
from mtlrun.report.table import deviation_mark, mean_std

log = logging.getLogger(__name__)

HYBRID_PHASE = "hybrid/phase"
TRAIN_S = "time/train_s"


@dataclass(frozen=True)
class Run:
    """A run's metrics.json record and its history.csv."""

    record: Record
    history: History


@dataclass(frozen=True)
class BalancerGroup:
    """Runs of one balancer setting (seeds of it). ``solver``: set when grouped by solver."""

    label: str
    balancer: str
    data: str
    solver: str | None
    runs: tuple[Run, ...]
    repeats: tuple[Repeat, ...] = ()  # seeds several runs had (the newest is in ``runs``)

    @property
    def records(self) -> list[Record]:
        return [run.record for run in self.runs]

    @property
    def name(self) -> str:
        """``label`` with ``†`` when a run deviates from the paper's protocol."""
        return self.label + deviation_mark(self.records)


@dataclass(frozen=True)
class Curve:
    """A group's mean curve over seeds, epoch by epoch (as many epochs as its shortest run).

    ``seconds``: cumulative training seconds at each epoch's end (``None`` when not logged);
    ``marks``: epochs to mark on the curve (the hybrid's switch to MGDA).
    """

    label: str
    epochs: list[int]
    values: list[float | None]
    seconds: list[float | None]
    marks: list[int]


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def solver_of(record: Record) -> str | None:
    """The min-norm solver of a run (``balancer.solver``), as text; ``None`` when unknown."""
    value = balancer_setting(record, "solver")
    return None if value is None else str(value)


def compares_balancers(records: Sequence[Record]) -> bool:
    """Whether the runs hold two or more balancers or ``balancer.*`` settings (``auto`` then
    prints fig6 and fig4); sweeps of anything else with one balancer do not count."""
    return len({(balancer_name(r), _balancer_overrides(r)) for r in records}) > 1


def _balancer_overrides(record: Record) -> tuple[str, ...]:
    return tuple(
        o
        for o in setting_overrides(record)
        if _override_key(o).startswith("balancer.") and _override_key(o) not in _MONITOR_ONLY
    )


# Overrides that only switch the Pareto-stationarity monitor on or off.
_MONITOR_ONLY = {"balancer.kkt_every"}
# Hidden from fig3's grouping and labels: its Solver column and "(same gradients)" tell them.
_BY_SOLVER = {"balancer.solver", "balancer.compare_solvers"}


def _settings(record: Record, by_solver: bool) -> tuple[str, ...]:
    """What tells a run's setting apart, besides data, balancer name and seed."""
    hidden = {"balancer", *_MONITOR_ONLY, *(_BY_SOLVER if by_solver else ())}
    kept = [o for o in setting_overrides(record) if _override_key(o) not in hidden]
    return (f"method={record.method}", *kept)


def balancer_groups(
    records: Sequence[Record],
    usable: Callable[[Record, History], bool],
    by_solver: bool = False,
) -> list[BalancerGroup]:
    """Group the runs whose history.csv is ``usable``, in order of first appearance."""
    buckets: dict[tuple[str, ...], list[Run]] = {}
    settings: dict[tuple[str, ...], tuple[str, ...]] = {}
    solvers: dict[tuple[str, ...], str | None] = {}
    for record in records:
        hist = history(record)
        if hist is None or not usable(record, hist):
            continue
        solver = solver_of(record) if by_solver else None
        args = json.dumps(record.method_args, sort_keys=True, default=str)
        own = _settings(record, by_solver)
        key = (record.data_name, balancer_name(record), solver or "", args, *own)
        buckets.setdefault(key, []).append(Run(record, hist))
        settings[key], solvers[key] = own, solver
    common = set.intersection(*(set(s) for s in settings.values())) if settings else set()
    groups = []
    for key, runs in buckets.items():
        differing = [s for s in settings[key] if s not in common]
        label = key[1] + (f" ({', '.join(differing)})" if differing else "")
        kept, repeats = _once_per_seed([run.record for run in runs])
        used = [run for run in runs if any(run.record is r for r in kept)]
        groups.append(
            BalancerGroup(label, key[1], key[0], solvers[key], tuple(used), tuple(repeats))
        )
    return groups


def _once_per_seed(records: list[Record]) -> tuple[list[Record], list[Repeat]]:
    """A seed counts once per setting (``newest_per_seed``); runs a group pools but whose
    overrides differ (e.g. ``balancer.compare_solvers``, split off later) are not repeats."""
    by_setting: dict[tuple[str, ...], list[Record]] = {}
    for record in records:
        by_setting.setdefault(setting_overrides(record), []).append(record)
    kept: list[Record] = []
    repeats: list[Repeat] = []
    for same in by_setting.values():
        k, r = newest_per_seed(same)
        kept += k
        repeats += r
    return kept, repeats


def balancer_repeat_notes(groups: Sequence[BalancerGroup]) -> list[str]:
    """A footnote per seed that several runs of a group had (the newest is used)."""
    return [describe_repeat(r, f"{g.label} on {g.data}") for g in groups for r in g.repeats]


def numbers_in(values: Sequence[float | None]) -> list[float]:
    """The numbers among ``values`` (``None`` dropped), in order."""
    return [v for v in values if v is not None]


Usable = Callable[[Record, History], bool]


def never(record: Record) -> bool:
    """A ``warn`` test of ``with_column`` that never warns."""
    return False


def _always(record: Record) -> bool:
    return True


def with_column(column: str, table: str, warn: Callable[[Record], bool] = _always) -> Usable:
    """A ``usable`` test: the history holds numbers in ``column``; else a warning if ``warn``."""

    def usable(record: Record, hist: History) -> bool:
        if hist.has(column):
            return True
        if warn(record):
            log.warning(
                "skipping %s for %s: its history.csv has no %s values", record.rel, table, column
            )
        return False

    return usable


# ---------------------------------------------------------------------------- per-run values


def train_seconds(run: Run) -> list[float | None]:
    """Cumulative training seconds at the end of each epoch (``None`` when not logged)."""
    per_epoch = run.history.column(TRAIN_S)
    if not numbers_in(per_epoch):
        return [None] * len(per_epoch)
    return list(accumulate(v or 0.0 for v in per_epoch))


UNKNOWN = object()


def switch_epoch(run: Run) -> object:
    """The hybrid's switch epoch: an int, ``None`` (never switched) or ``UNKNOWN``.

    ``balancer.switch_epoch`` of metrics.json, else the first epoch whose ``hybrid/phase`` is 1.
    """
    entry = get(run.record.metrics, "balancer", default=None)
    if isinstance(entry, dict) and "switch_epoch" in entry:
        value = entry["switch_epoch"]
        return int(value) if isinstance(value, int | float) else None
    phases = run.history.column(HYBRID_PHASE)
    if not numbers_in(phases):
        return UNKNOWN
    epochs = run.history.column("epoch")
    for k, phase in enumerate(phases):
        if phase is not None and phase >= 1:
            epoch = epochs[k]
            return int(epoch) if epoch is not None else k + 1
    return None


def epochs_text(group: BalancerGroup) -> str:
    """The distinct epoch counts of the group's runs, sorted (``"3"``, ``"2, 3"``)."""
    counts = sorted({len(run.history) for run in group.runs})
    return ", ".join(str(c) for c in counts)


def first_middle_last_mean(values: Sequence[float | None]) -> list[float | None]:
    """The first, middle (⌈n/2⌉-th), last and mean of the numbers among ``values``."""
    xs = numbers_in(values)
    if not xs:
        return [None] * 4
    return [xs[0], xs[(len(xs) + 1) // 2 - 1], xs[-1], statistics.fmean(xs)]


# ---------------------------------------------------------------------------------- curves


def _mean_curve(series: Sequence[Sequence[float | None]]) -> list[float | None]:
    """Epoch-wise mean over runs (as long as the shortest run); ``None`` where none has a number."""
    length = min((len(s) for s in series), default=0)
    out: list[float | None] = []
    for k in range(length):
        stat = mean_std(s[k] for s in series)
        out.append(None if stat is None else stat[0])
    return out


def group_curve(group: BalancerGroup, values: Callable[[Run], Sequence[float | None]]) -> Curve:
    """The group's mean curve of ``values`` per run, with its training seconds and switch marks."""
    ys = _mean_curve([values(run) for run in group.runs])
    seconds = _mean_curve([train_seconds(run) for run in group.runs])
    marks = sorted({v for v in (switch_epoch(run) for run in group.runs) if isinstance(v, int)})
    return Curve(group.name, list(range(1, len(ys) + 1)), ys, seconds, marks)


def history_column(name: str) -> Callable[[Run], list[float | None]]:
    """A ``values`` function of ``group_curve``: the run's ``history.csv`` column ``name``."""
    return lambda run: run.history.column(name)
