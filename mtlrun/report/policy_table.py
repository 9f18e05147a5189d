"""AdaShare's learned policies (AdaShare, Sun et al., NeurIPS 2020): which residual blocks each
task runs, per run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from mtlrun.report.collect import Record
from mtlrun.report.record import get
from mtlrun.report.table import NA, Table, deviation_mark, deviation_notes


def adashare_runs(records: Sequence[Record]) -> list[Record]:
    """The runs that hold an AdaShare policy (``search.policy``)."""
    return [r for r in records if isinstance(get(r.metrics, "search", "policy"), Mapping)]


def policy_table(records: Sequence[Record]) -> Table:
    """One row per run and task: the blocks the task skips, how many it runs, and the select
    probabilities α of the skipped ones (the chosen policy of ``search.policy``)."""
    runs = adashare_runs(records)
    rows = []
    for r in runs:
        policy = get(r.metrics, "search", "policy")
        probs = get(r.metrics, "search", "select_prob", default={}) or {}
        for task, decisions in policy.items():
            skipped = [b for b, run in decisions.items() if not run]
            alphas = [get(probs, task, b) for b in skipped]
            shown = ", ".join(
                f"{b} ({a:.2f})" if isinstance(a, int | float) else b
                for b, a in zip(skipped, alphas, strict=True)
            )
            rows.append(
                [
                    r.rel + deviation_mark([r]),
                    task,
                    f"{len(decisions) - len(skipped)}/{len(decisions)}",
                    shown or NA,
                ]
            )
    return Table(
        "policy",
        "AdaShare policies: blocks each task skips (select probability α)",
        ["Run", "Task", "Blocks run", "Skipped"],
        rows,
        deviation_notes(runs),
    )
