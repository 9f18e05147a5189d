"""Group runs that differ only in their seed, so a table row can show mean ± std over seeds.

Two runs share a group when data, method, ``config.method_args`` and the overrides that change
results agree. Groups of one method that differ in a setting are labelled by that setting
(``keep_ratio=0.3``), so a sweep never averages unlike runs into one row.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from mtlrun.report.collect import Record

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
class Group:
    """Runs of one setting (seeds of it). ``label`` says how it differs from its method's others."""

    data: str
    method: str
    args: dict
    overrides: tuple[str, ...]
    records: tuple[Record, ...]
    label: str = ""


def setting_overrides(record: Record) -> tuple[str, ...]:
    """The run's overrides that change its result, sorted.

    Seeds and run-only switches are left out; ``method``/``method.*`` ones are left out too,
    since ``config.method`` and ``config.method_args`` already record them.
    """
    kept = []
    for override in record.overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key.endswith("seed") or key.startswith("hydra") or key in _RUN_ONLY_KEYS:
            continue
        if key == "method" or key.startswith("method."):
            continue
        kept.append(override)
    return tuple(sorted(kept))


def _key(record: Record) -> tuple[str, str, str, tuple[str, ...]]:
    args = json.dumps(record.method_args, sort_keys=True, default=str)
    return record.data_name, record.method, args, setting_overrides(record)


def group_runs(records: Iterable[Record], label_ignore: Collection[str] = ()) -> list[Group]:
    """Group ``records`` by setting, in order of first appearance, each labelled by what differs
    from the other groups of its data and method (``label_ignore``: method_args never named)."""
    buckets: dict[tuple[str, str, str, tuple[str, ...]], list[Record]] = {}
    for record in records:
        buckets.setdefault(_key(record), []).append(record)
    groups = [
        Group(data=k[0], method=k[1], args=json.loads(k[2]), overrides=k[3], records=tuple(rs))
        for k, rs in buckets.items()
    ]
    return [_labelled(g, groups, label_ignore) for g in groups]


def _labelled(group: Group, groups: list[Group], label_ignore: Collection[str]) -> Group:
    peers = [g for g in groups if (g.data, g.method) == (group.data, group.method)]
    parts = []
    for name in sorted({k for g in peers for k in g.args} - set(label_ignore)):
        if len({json.dumps(g.args.get(name), default=str) for g in peers}) > 1:
            parts.append(f"{name}={_short(group.args.get(name))}")
    common = set.intersection(*(set(g.overrides) for g in peers))
    parts += [o for o in group.overrides if o not in common]
    return Group(
        group.data, group.method, group.args, group.overrides, group.records, ", ".join(parts)
    )


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
    """Keep-ratio sweeps (seed 000 Figure 4.1): runs with a test score and a
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
