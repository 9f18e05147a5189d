"""Per-task weight masks over a multi-task network (sparse sharing, METHODS §4).

A mask set maps ``task -> key -> {0,1} tensor`` where ``key = "<block>.<param name>"`` names a
counted encoder parameter of ``model.blocks``. A task's effective weights are ``θ ⊙ M_task``;
weights outside every mask are unused. The statistics here (density, IoU, overlap) are those
reported by seed 000 and Sun et al. (2020).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

from mtlrun.backbones.accounting import counted_parameters

MaskSet = dict[str, dict[str, Tensor]]


def maskable_parameters(
    blocks: Mapping[str, nn.Module], names: Iterable[str], weights_only: bool = False
) -> dict[str, nn.Parameter]:
    """Counted parameters of the given blocks keyed ``"<block>.<param>"``.

    ``weights_only`` keeps weight matrices and convolution kernels (ndim ≥ 2) and leaves
    biases out, as Sun et al. prune ("biases kept").
    """
    out: dict[str, nn.Parameter] = {}
    for b in names:
        for pname, p in counted_parameters(blocks[b]):
            if not weights_only or p.ndim >= 2:
                out[f"{b}.{pname}"] = p
    return out


def topk_mask(
    scores: Mapping[str, Tensor], keep_ratio: float, per_layer: bool = False
) -> dict[str, Tensor]:
    """Keep exactly ``round(keep_ratio · n)`` entries with the highest scores.

    Global top-k over all tensors by default (seed 000: "the order of probability"); with
    ``per_layer`` each tensor keeps ``round(keep_ratio · numel)`` of its own entries.
    Ties are broken by position, so the count is exact.
    """
    if not 0 < keep_ratio <= 1:
        raise ValueError(f"keep_ratio should be in (0, 1]; found {keep_ratio}")
    if per_layer:
        return {
            k: _topk_flat(s.detach().flatten(), round(keep_ratio * s.numel())).view_as(s)
            for k, s in scores.items()
        }
    flat = torch.cat([s.detach().flatten().float() for s in scores.values()])
    keep = _topk_flat(flat, round(keep_ratio * flat.numel()))
    out, start = {}, 0
    for k, s in scores.items():
        out[k] = keep[start : start + s.numel()].view_as(s)
        start += s.numel()
    return out


def _topk_flat(values: Tensor, k: int) -> Tensor:
    mask = torch.zeros_like(values, dtype=torch.float32)
    if k > 0:
        mask[torch.topk(values.float(), k, sorted=False).indices] = 1.0
    return mask


def magnitude_prune(
    weights: Mapping[str, Tensor], mask: Mapping[str, Tensor], density: float
) -> dict[str, Tensor]:
    """One IMP round: keep the ``density`` fraction (of all entries) with the largest |θ| among
    those still kept; pruned entries never come back (Sun et al. 2020, global pruning)."""
    total = sum(m.numel() for m in mask.values())
    k = round(density * total)
    scores = {
        key: torch.where(
            mask[key] > 0, weights[key].detach().abs().float(), torch.full_like(mask[key], -1.0)
        )
        for key in mask
    }
    flat = torch.cat([s.flatten() for s in scores.values()])
    keep = _topk_flat(flat, min(k, int(sum(int(m.sum()) for m in mask.values()))))
    out, start = {}, 0
    for key, m in mask.items():
        out[key] = keep[start : start + m.numel()].view_as(m)
        start += m.numel()
    return out


def prune_fraction(
    weights: Mapping[str, Tensor], mask: Mapping[str, Tensor], rate: float, per_layer: bool = False
) -> dict[str, Tensor]:
    """One IMP round as Sun et al.'s code prunes (src/prune.py): drop ``rate`` of the still-kept
    entries by magnitude; pruned entries never come back.

    Global (their ``prune_global``, the default): sort the kept |θ| of all tensors together,
    take the cutoff at index ``round(rate · n_kept)`` and drop the kept entries strictly below
    it (ties with the cutoff stay). ``per_layer`` (their unused ``prune``): the same per tensor,
    but entries equal to the cutoff are dropped too (``<=`` there). Masks are {0,1} floats.
    """
    if not 0 <= rate < 1:
        raise ValueError(f"rate should be in [0, 1); found {rate}")
    kept = {k: mask[k] > 0 for k in mask}
    mags = {k: weights[k].detach().abs().float() for k in mask}
    if per_layer:
        out = {}
        for k, m in kept.items():
            cutoff = _cutoff(mags[k][m], rate)
            out[k] = (m & (mags[k] > cutoff)).float() if cutoff is not None else m.float()
        return out
    cutoff = _cutoff(torch.cat([mags[k][m] for k, m in kept.items()]), rate)
    if cutoff is None:
        return {k: m.float() for k, m in kept.items()}
    return {k: (m & (mags[k] >= cutoff)).float() for k, m in kept.items()}


def _cutoff(kept_magnitudes: Tensor, rate: float) -> float | None:
    """The magnitude at index round(rate · n) of the sorted kept magnitudes (None: none kept).
    Python's round, like NumPy's, rounds halves to even; past the end everything goes."""
    n = kept_magnitudes.numel()
    if n == 0:
        return None
    index = round(rate * n)
    if index >= n:
        return float("inf")
    return float(torch.sort(kept_magnitudes).values[index])


def mask_stats(masks: MaskSet) -> dict[str, object]:
    """Density per task and per (task, parameter), pairwise IoU and the all-task overlap
    |∩M| / |∪M| over the masked entries.

    Tasks may mask different parameters (e.g. one private encoder copy each): a task's density
    is relative to its own parameters, and IoU / overlap treat another task's parameters as
    not kept.
    """
    tasks = list(masks)
    shapes: dict[str, torch.Size] = {}
    for per in masks.values():
        for k, m in per.items():
            shapes.setdefault(k, m.shape)
    keys = list(shapes)

    def flat(t: str) -> Tensor:
        # On the CPU piece by piece: a task without a key gets CPU zeros, its masks may be on a GPU.
        return torch.cat(
            [
                (masks[t][k] > 0).flatten().cpu()
                if k in masks[t]
                else torch.zeros(shapes[k].numel(), dtype=torch.bool)
                for k in keys
            ]
        )

    flats = {t: flat(t) for t in tasks}
    kept = {t: int(flats[t].sum()) for t in tasks}
    density = {t: kept[t] / sum(m.numel() for m in masks[t].values()) for t in tasks}
    per_layer = {t: {k: float(m.float().mean()) for k, m in masks[t].items()} for t in tasks}
    iou = {}
    for a, b in itertools.combinations(tasks, 2):
        union = int((flats[a] | flats[b]).sum())
        iou[f"{a}|{b}"] = int((flats[a] & flats[b]).sum()) / union if union else 1.0
    stacked = torch.stack(list(flats.values()))
    inter, union = int(stacked.all(0).sum()), int(stacked.any(0).sum())
    return {
        "density": density,
        "density_per_layer": per_layer,
        "iou": iou,
        "overlap_ratio": inter / union if union else 1.0,
        "kept": kept,
        "union": union,
    }
