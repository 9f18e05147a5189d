"""Group runs that differ only in their seed, so a table row can show mean ± std over seeds.

Two runs share a group when data, method, ``config.method_args`` and the overrides that change
results agree. Groups of one method that differ in a setting are labelled by that setting
(``keep_ratio=0.3``), so a sweep never averages unlike runs into one row.

A seed counts once per setting: runs of one setting and one seed (the same run repeated by
another sweep) are deterministic repeats, not independent samples. The newest finished one is
kept (``newest_per_seed``) and the others are named in a footnote (``repeat_notes``), so ``n``
is the number of distinct seeds.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass

from mtlrun.report.collect import Record, get

# Override keys that change how a run is executed or logged, not its result.
_RUN_ONLY_KEYS = {
    "trainer.device",
    "trainer.progress",
    "trainer.plots",
    "trainer.save_predictions",
    "trainer.resume",
    "trainer.resume_dir",
    "trainer.search_cache",
}


@dataclass(frozen=True)
class Repeat:
    """Runs of one setting that share ``seed``: the one ``used`` and the ``others``, left out."""

    seed: object
    used: Record
    others: tuple[Record, ...]


@dataclass(frozen=True)
class Group:
    """Runs of one setting, one per seed. ``label`` says how it differs from its method's
    others; ``repeats``: the seeds that more than one run of the setting had."""

    data: str
    method: str
    args: dict
    overrides: tuple[str, ...]
    records: tuple[Record, ...]
    label: str = ""
    repeats: tuple[Repeat, ...] = ()


def setting_overrides(record: Record) -> tuple[str, ...]:
    """The run's overrides that change its result, sorted.

    Seeds and run-only switches are left out; ``method``/``method.*`` ones are left out too,
    since ``config.method`` and ``config.method_args`` already record them.
    """
    kept = []
    for override in record.overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key.endswith("seed") or key.startswith(("hydra", "logger")) or key in _RUN_ONLY_KEYS:
            continue
        if key == "method" or key.startswith("method."):
            continue
        kept.append(override)
    return tuple(sorted(kept))


def _key(record: Record) -> tuple[str, str, str, tuple[str, ...]]:
    args = json.dumps(record.method_args, sort_keys=True, default=str)
    return record.data_name, record.method, args, setting_overrides(record)


def finished_at(record: Record) -> float:
    """When the run finished: ``run.finished_at`` (UTC, written with the result), else the
    modification time of its ``metrics.json`` (runs written before that entry; a copy's time
    is when it was copied), 0 when neither can be read."""
    stamp = get(record.metrics, "run", "finished_at")
    if isinstance(stamp, str):
        try:
            return datetime.datetime.fromisoformat(stamp).timestamp()
        except ValueError:
            pass
    try:
        return record.path.stat().st_mtime
    except OSError:
        return 0.0


def newest_per_seed(records: Sequence[Record]) -> tuple[list[Record], list[Repeat]]:
    """One run per seed of ``records`` (runs of one setting), and the seeds that had several.

    Of the runs sharing a seed, the newest (``finished_at``; ties: the last folder) of those
    that ran their course is kept, else the newest; it takes the place of the seed's first run.
    Runs without a recorded seed are all kept: nothing says they repeat one another.
    """
    by_seed: dict[object, list[Record]] = {}
    for record in records:
        key = object() if record.seed is None else json.dumps(record.seed, default=str)
        by_seed.setdefault(key, []).append(record)
    kept: list[Record] = []
    repeats: list[Repeat] = []
    for runs in by_seed.values():
        used = max(runs, key=lambda r: (not r.stop, finished_at(r), r.rel))
        kept.append(used)
        if len(runs) > 1:
            repeats.append(Repeat(used.seed, used, tuple(r for r in runs if r is not used)))
    return kept, repeats


def group_runs(records: Iterable[Record], label_ignore: Collection[str] = ()) -> list[Group]:
    """Group ``records`` by setting, in order of first appearance, one run per seed
    (``newest_per_seed``), each labelled by what differs from the other groups of its data and
    method (``label_ignore``: method_args never named)."""
    buckets: dict[tuple[str, str, str, tuple[str, ...]], list[Record]] = {}
    for record in records:
        buckets.setdefault(_key(record), []).append(record)
    groups = []
    for k, runs in buckets.items():
        kept, repeats = newest_per_seed(runs)
        args = json.loads(k[2])
        groups.append(Group(k[0], k[1], args, k[3], tuple(kept), repeats=tuple(repeats)))
    return [_labelled(g, groups, label_ignore) for g in groups]


def setting_name(group: Group) -> str:
    """The group as a report names it: ``sparse_ste (keep_ratio=0.3) on conll``."""
    label = f" ({group.label})" if group.label else ""
    return f"{group.method}{label} on {group.data}" if group.data else group.method + label


def repeat_notes(groups: Iterable[Group], name: Callable[[Group], str] = setting_name) -> list[str]:
    """One footnote per seed that several runs of a group had, naming the runs left out and the
    one used: "`a/b` and `c/d` repeat seed 0 of hard on conll; the newest, `e/f`, is used"."""
    return [describe_repeat(repeat, name(group)) for group in groups for repeat in group.repeats]


def describe_repeat(repeat: Repeat, setting: str) -> str:
    """The footnote of one repeated seed of ``setting`` (see ``repeat_notes``)."""
    others = [f"`{r.rel}`" for r in repeat.others]
    names = others[0] if len(others) == 1 else f"{', '.join(others[:-1])} and {others[-1]}"
    verb = "repeats" if len(others) == 1 else "repeat"
    seed = json.dumps(repeat.seed, default=str)
    newer = any(finished_at(r) > finished_at(repeat.used) for r in repeat.others)
    newest = "the newest that ran its course" if newer else "the newest"
    return f"{names} {verb} seed {seed} of {setting}; {newest}, `{repeat.used.rel}`, is used."


def _labelled(group: Group, groups: list[Group], label_ignore: Collection[str]) -> Group:
    peers = [g for g in groups if (g.data, g.method) == (group.data, group.method)]
    parts = []
    for name in sorted({k for g in peers for k in g.args} - set(label_ignore)):
        if len({json.dumps(g.args.get(name), default=str) for g in peers}) > 1:
            parts.append(f"{name}={_short(group.args.get(name))}")
    common = set.intersection(*(set(g.overrides) for g in peers))
    parts += [o for o in group.overrides if o not in common]
    return dataclasses.replace(group, label=", ".join(parts))


def _short(value: object) -> str:
    return json.dumps(value) if isinstance(value, list | dict) else str(value)


@dataclass(frozen=True)
class Series:
    """Groups of one data/method/setting that differ only in ``method_args.keep_ratio``."""

    data: str
    method: str
    label: str
    points: tuple[tuple[float, Group], ...]  # (keep_ratio, group), by increasing keep_ratio

    @property
    def tasks(self) -> list[str]:
        """The tasks of the series' runs, in first-seen order."""
        seen: dict[str, None] = {}
        for _, group in self.points:
            for record in group.records:
                seen.update(dict.fromkeys(record.tasks))
        return list(seen)


def sweep_series(records: Iterable[Record]) -> list[Series]:
    """Keep-ratio sweeps (Yeom (2022) Figure 4.1): runs with a test score and a
    ``method_args.keep_ratio``, of one setting, at two or more keep ratios."""
    runs = [
        r for r in records if isinstance(r.method_args.get("keep_ratio"), int | float) and r.scored
    ]
    series: dict[tuple[str, str, str], list[tuple[float, Group]]] = {}
    for group in group_runs(runs, label_ignore={"keep_ratio"}):
        key = (group.data, group.method, group.label)
        series.setdefault(key, []).append((float(group.args["keep_ratio"]), group))
    return [
        Series(data, method, label, tuple(sorted(points, key=lambda p: p[0])))
        for (data, method, label), points in series.items()
        if len({ratio for ratio, _ in points}) > 1
    ]
