"""What the sparse-sharing methods share: the masked supernet, discretisation, mask artefacts."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mtlrun.backbones.base import Backbone
from mtlrun.data.base import Task
from mtlrun.errors import ConfigError
from mtlrun.methods.base import SearchContext, shared_trunk
from mtlrun.model.masked import MaskedModel
from mtlrun.model.masks import MaskSet, mask_stats, maskable_parameters

log = logging.getLogger(__name__)


def check_ratio(key: str, value: float) -> None:
    if not 0 < value <= 1:
        raise ConfigError(f"`{key}` should be in (0, 1]. Found `{key} = {value}`.")


def masked_supernet(backbone: Backbone, tasks: Sequence[Task], weights_only: bool) -> MaskedModel:
    """Hard-sharing paths over one supernet whose counted encoder parameters can be masked."""
    blocks, paths = shared_trunk(backbone, tasks)
    maskable = maskable_parameters(blocks, backbone.block_names, weights_only=weights_only)
    return MaskedModel(blocks, paths, maskable)


def warm_up(ctx: SearchContext, epochs: int) -> MaskedModel:
    """The masked supernet of ``ctx``, trained dense for ``epochs`` first (seed 000 Table 4.3)."""
    model = ctx.model
    if not isinstance(model, MaskedModel):
        raise TypeError("sparse sharing needs the MaskedModel its method built")
    if epochs:
        model.mode = "dense"
        ctx.fit("warmup", epochs)
    return model


def save_masks(
    run_dir: Path, masks: MaskSet, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Write ``masks.pt`` (bool tensors per task and parameter), ``masks.json`` (statistics)
    and ``masks.png`` (density per parameter and task, pairwise IoU); return the statistics."""
    stats = {**mask_stats(masks), **(extra or {})}
    (run_dir / "masks.json").write_text(json.dumps(stats, indent=2) + "\n")
    torch.save(
        {t: {k: m.bool().cpu() for k, m in per.items()} for t, per in masks.items()},
        run_dir / "masks.pt",
    )
    try:
        _plot(run_dir / "masks.png", stats)
    except Exception as e:  # noqa: BLE001 - a plot must never lose the search result
        log.warning("could not draw masks.png: %s", e)
    return stats


def _plot(path: Path, stats: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    per_layer = stats["density_per_layer"]
    tasks = list(per_layer)
    keys = list(next(iter(per_layer.values())))
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5), gridspec_kw={"width_ratios": [2, 1]})
    width = 0.8 / len(tasks)
    for i, t in enumerate(tasks):
        axes[0].bar(
            np.arange(len(keys)) + i * width, [per_layer[t][k] for k in keys], width, label=t
        )
    axes[0].set_xticks(
        np.arange(len(keys)) + 0.4 - width / 2, keys, rotation=60, ha="right", fontsize=7
    )
    axes[0].set(ylabel="density (kept fraction)", title="mask density per parameter", ylim=(0, 1))
    axes[0].legend()
    iou = np.eye(len(tasks))
    for pair, v in stats["iou"].items():
        a, b = pair.split("|")
        iou[tasks.index(a), tasks.index(b)] = iou[tasks.index(b), tasks.index(a)] = v
    im = axes[1].imshow(iou, vmin=0, vmax=1, cmap="viridis")
    axes[1].set_xticks(range(len(tasks)), tasks)
    axes[1].set_yticks(range(len(tasks)), tasks)
    for i in range(len(tasks)):
        for j in range(len(tasks)):
            axes[1].text(j, i, f"{iou[i, j]:.2f}", ha="center", va="center", color="w")
    axes[1].set_title(f"mask IoU (all-task overlap {stats['overlap_ratio']:.2f})")
    fig.colorbar(im, ax=axes[1])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
