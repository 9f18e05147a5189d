"""Reading Z̃ at the blocks of tree networks and the per-channel divergences between them
(seed 001 §5.2, Algorithms 2-3), as the authors' ``src/applications/measures/`` did.

Which images each comparison uses (hav4ik/Hydra ``stress_points.py`` + ``feature_similarity.py``):
a peel of task t against the joint network (stress, Alg. 2) on task t's images only; two peels
against each other (task affinity, Alg. 3) on the images of *every* task of the network, the
per-task means (over batches) added up. Both read the training images there (``unzip`` is called
with the training loaders).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from mtlrun.methods import stress as S
from mtlrun.model.paths import MultiTaskModel

PROBE_BATCH = 256  # images per probe batch: the batch_size of the authors' configs/trinist/*.yaml


def last_bn(block: nn.Module) -> _BatchNorm:
    """The BatchNorm that ends the block's main branch (a residual shortcut's BN excluded)."""
    found = [
        m
        for name, m in block.named_modules()
        if isinstance(m, _BatchNorm) and "downsample" not in name.split(".")
    ]
    if not found:
        raise ValueError(f"block {type(block).__name__} has no BatchNorm layer")
    return found[-1]


@torch.no_grad()
def capture(model: MultiTaskModel, blocks: Sequence[str], inputs: Any) -> dict[str, Tensor]:
    """Z̃_i = (Z_in − running mean) / sqrt(running var + ε) (eq. 5.5) at each block's last BN,
    in eval mode, for one input batch: {block: (N, c, h, w)} (the authors'
    ``BatchNormPillow.rep`` in eval mode)."""
    out: dict[str, Tensor] = {}
    handles = []
    for b in blocks:
        bn = last_bn(model.blocks[b])

        def hook(
            _m: nn.Module, args: tuple[Tensor, ...], _y: Tensor, b: str = b, bn: _BatchNorm = bn
        ) -> None:
            x = args[0]
            assert bn.running_mean is not None and bn.running_var is not None
            shape = [1, -1] + [1] * (x.dim() - 2)
            mean, var = bn.running_mean.view(shape), bn.running_var.view(shape)
            out[b] = (x - mean) / torch.sqrt(var + bn.eps)

        handles.append(bn.register_forward_hook(hook))
    tasks = [t for t in model.tasks if any(b in model.paths[t] for b in blocks)]
    was_training = model.training
    model.eval()
    try:
        model(inputs, tasks=tasks)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return out


def probe_batches(
    data: Any, task: str, n: int | None, split: str = "train", batch: int = PROBE_BATCH
) -> list[Any]:
    """The inputs of the first ``n`` (None: all) batches of ``task``'s images in ``split``."""
    out = []
    for inputs, targets in data.eval_groups(split, batch):
        if task in targets:
            out.append(inputs)
            if n is not None and len(out) >= n:
                break
    return out


def block_divergences(
    joint: MultiTaskModel,
    peels: Mapping[str, MultiTaskModel],
    blocks: Sequence[str],
    probes: Mapping[str, Sequence[Any]],
    positions: str = "random",
    generator: torch.Generator | None = None,
    device: torch.device | None = None,
) -> tuple[dict[str, dict[str, Tensor]], dict[str, dict[tuple[str, str], Tensor]]]:
    """Per-channel divergences (c,) at each of ``blocks``.

    ``probes[u]``: input batches of task u. Returns ``(inner, pairs)``:
    ``inner[b][t]``: peel t against ``joint``, mean over task t's batches only (Alg. 2);
    ``pairs[b][(t1, t2)]`` (t1 before t2 in O(b)): peel t1 against peel t2, summed over every
    task u in ``probes`` of the mean over u's batches (Alg. 3; ``feature_similarity``).
    """
    inner: dict[str, dict[str, Tensor]] = {b: {} for b in blocks}
    pairs: dict[str, dict[tuple[str, str], Tensor]] = {b: {} for b in blocks}
    users = {b: [t for t in joint.tasks if b in joint.paths[t]] for b in blocks}
    for u, batches in probes.items():
        if not batches:
            raise ValueError(f"no probe images for task {u!r}")
        own: dict[str, dict[str, Tensor]] = {b: {} for b in blocks}
        cross: dict[str, dict[tuple[str, str], Tensor]] = {b: {} for b in blocks}
        for inputs in batches:
            x = inputs.to(device) if isinstance(inputs, Tensor) and device else inputs
            z_joint = capture(joint, blocks, x)
            z = {t: capture(p, [b for b in blocks if b in p.blocks], x) for t, p in peels.items()}
            for b in blocks:
                ts = users[b]
                if u in ts:  # stress: peel u against the joint network on u's images only
                    d = S.channel_divergence(z[u][b], z_joint[b], positions, generator)
                    own[b][u] = own[b].get(u, 0) + d
                for i, t1 in enumerate(ts):
                    for t2 in ts[i + 1 :]:
                        d = S.channel_divergence(z[t1][b], z[t2][b], positions, generator)
                        cross[b][t1, t2] = cross[b].get((t1, t2), 0) + d
        n = len(batches)
        for b in blocks:
            for t, v in own[b].items():
                inner[b][t] = v / n
            for k, v in cross[b].items():
                pairs[b][k] = pairs[b].get(k, 0) + v / n
    return inner, pairs
