"""AdaShare's artefacts: ``policy.json`` and ``policy.png`` (the learned select probabilities,
the chosen decisions and every candidate's validation score)."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from mtlrun.model.policy import Policy

log = logging.getLogger(__name__)


def skipped(policy: Policy) -> dict[str, list[str]]:
    """The blocks each task skips (a compact view of a policy)."""
    return {t: [b for b, run in per.items() if not run] for t, per in policy.items()}


def write_policy(
    run_dir: Path,
    blocks: Sequence[str],
    tasks: Sequence[str],
    alpha: Tensor,
    policy: Policy,
    samples: dict[str, dict[str, Any]],
    chosen: str,
) -> None:
    """``policy.json`` (blocks × tasks: select probabilities and chosen decisions, and every
    candidate's validation score) and ``policy.png`` (a heatmap of α with the decisions)."""
    payload = {
        "blocks": list(blocks),
        "tasks": list(tasks),
        "select_prob": [
            [round(float(alpha[i, k]), 6) for k in range(len(tasks))] for i in range(len(blocks))
        ],
        "decision": [[policy[t][b] for t in tasks] for b in blocks],
        "chosen": chosen,
        "samples": {
            n: {"score": s["score"], "skipped": skipped(s["policy"])} for n, s in samples.items()
        },
    }
    (run_dir / "policy.json").write_text(json.dumps(payload, indent=2) + "\n")
    try:
        _plot(run_dir / "policy.png", payload)
    except Exception as e:  # noqa: BLE001 - a plot must never lose the search result
        log.warning("could not draw policy.png: %s", e)


def _plot(path: Path, payload: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    blocks, tasks = payload["blocks"], payload["tasks"]
    fig, ax = plt.subplots(figsize=(1.6 + 1.2 * len(tasks), 1.2 + 0.45 * len(blocks)))
    image = ax.imshow(payload["select_prob"], vmin=0, vmax=1, cmap="viridis", aspect="auto")
    for i in range(len(blocks)):
        for k in range(len(tasks)):
            run = payload["decision"][i][k]
            ax.text(
                k,
                i,
                "run" if run else "skip",
                ha="center",
                va="center",
                color="black" if payload["select_prob"][i][k] > 0.6 else "white",
                fontsize=8,
            )
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set_yticks(range(len(blocks)), blocks)
    ax.set_title(f"AdaShare p(select); chosen: {payload['chosen']}", fontsize=9)
    fig.colorbar(image, ax=ax, label="p(select)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
