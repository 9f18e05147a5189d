"""AdaShare's schedules and policy losses (authors' train.py and envs/blockdrop_env.py; paper
arXiv 1911.12423 §3, "Loss Functions"). Logits: shape (L, K, 2), blocks × tasks × (select, skip)."""

from __future__ import annotations

import torch
from torch import Tensor

from mtlrun.model.policy import SELECT

SKIP = 1 - SELECT


def temperature(tau0: float, decay: float, epoch: int) -> float:
    """τ of policy epoch ``epoch`` (1-based): τ0 · decay^(e−1). The authors start at
    ``init_temp`` and multiply by ``decay_temp`` after every policy pass (train.py)."""
    return tau0 * decay ** (epoch - 1)


def curriculum(n_blocks: int, epoch: int, speed: int = 1) -> int:
    """How many of the last blocks are searched in policy epoch ``epoch`` (1-based):
    min(L, ⌊(e−1)/speed⌋ + 1), the authors' ``p_epoch // curriculum_speed + 1`` (train.py)."""
    return min(n_blocks, (epoch - 1) // speed + 1)


def sparsity_loss(logits: Tensor, n_open: int) -> Tensor:
    """Σ_k mean_{l in the last ``n_open``} −log p_{l,k}(skip): logits (L, K, 2), column 0 =
    select. The authors' ``get_sparsity_loss2`` (cross-entropy towards skip, averaged over the
    searched blocks, summed over the tasks); minimising it makes blocks likelier to be skipped."""
    rows = logits[logits.shape[0] - n_open :]
    return -torch.log_softmax(rows, dim=-1)[..., SKIP].mean(dim=0).sum()


def sparsity_loss_paper(logits: Tensor, n_open: int) -> Tensor:
    """Σ_{l,k} log α_{l,k} over the last ``n_open`` blocks, α = p(select) (paper §3,
    "Loss Functions", L_sparsity)."""
    rows = logits[logits.shape[0] - n_open :]
    return torch.log_softmax(rows, dim=-1)[..., SELECT].sum()


def _pairs_gap(values: Tensor, weights: Tensor) -> Tensor:
    """Σ_{k1<k2} Σ_l w_l |v_{l,k1} − v_{l,k2}| for values (L, K)."""
    gaps = (values.unsqueeze(2) - values.unsqueeze(1)).abs()  # (L, K, K)
    upper = torch.triu(torch.ones_like(gaps[0]), diagonal=1)  # the pairs k1 < k2
    return (weights[:, None, None] * gaps * upper).sum()


def sharing_loss(logits: Tensor) -> Tensor:
    """Σ_{k1<k2} Σ_l (l+1)/L · |z_{l,k1} − z_{l,k2}|, l = 0..L−1, z = the select logit: logits
    (L, K, 2). The authors' ``get_hamming_loss`` with ``diff_sparsity_weights: True`` (every
    block, later blocks weigh more)."""
    n = logits.shape[0]
    weights = torch.arange(1, n + 1, dtype=logits.dtype, device=logits.device) / n
    return _pairs_gap(logits[..., SELECT], weights)


def sharing_loss_paper(logits: Tensor) -> Tensor:
    """Σ_{k1<k2} Σ_l (L − l)/L · |α_{l,k1} − α_{l,k2}|, l = 1..L, α = p(select) (paper §3, "Loss Functions",
    L_sharing): early blocks weigh more, so tasks share the early blocks."""
    n = logits.shape[0]
    weights = torch.arange(n - 1, -1, -1, dtype=logits.dtype, device=logits.device) / n
    return _pairs_gap(torch.softmax(logits, dim=-1)[..., SELECT], weights)


SPARSITY = {"code": sparsity_loss, "paper": sparsity_loss_paper}
SHARING = {"code": sharing_loss, "paper": sharing_loss_paper}
