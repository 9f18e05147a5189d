"""Compatibility, stress and affinity of tree blocks (seed 001 §5.2-5.3), as pure functions.

Notation of the thesis: a block's output before BatchNorm's affine step is
Z̃ = (Z_in − μ) / sqrt(σ² + ε) (eq. 5.5), of shape (N, c, h, w); z_{n,m,k} is one position of
channel k. Every quantity here is a *divergence*: 0 for identical networks, larger when they
differ (the thesis's Table 1(a) lists kmnist–mnist 0.0050 as the closest pair). Algorithm 4 turns
the divergences into an affinity with exp(−A / max A) for spectral clustering.

The authors' code (hav4ik/Hydra ``src/applications/measures/feature_similarity.py``) reads, per
batch, one random spatial position (r, c) shared by the batch, takes the per-channel mean over
the batch of D_JS(σ(z) ‖ σ(z')) with D_KL = p·log(p/q) (eq. 5.3 without Bernoulli complement
terms), and averages over batches (``positions="random"``). ``positions="mean"`` averages over
all h·w positions instead (eq. 5.4 prints 1/(h+w)·Σ_{n,m}, which is not an average; same
expectation as the random position). ``inter_stress.py`` weights the channels by the *sum* of
both networks' normalised |γ| (weights summing to 2, ``importance="sum"``); eq. 5.8's single
importance I_k, read as the mean of both networks' (``importance="mean"``), is half of that.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

_TINY = 1e-12


def js_divergence(p: Tensor, q: Tensor) -> Tensor:
    """Elementwise D_JS(p ‖ q) of eq. 5.2 with the KL terms of eq. 5.3, for p, q in (0, 1).

    ½·p·log(p/m) + ½·q·log(q/m) with m = (p + q)/2; same shape as the inputs.
    """
    m = (p + q) / 2
    return 0.5 * (
        p * torch.log((p + _TINY) / (m + _TINY)) + q * torch.log((q + _TINY) / (m + _TINY))
    )


POSITIONS = ("random", "mean")
IMPORTANCE = ("sum", "mean")


def channel_divergence(
    z1: Tensor, z2: Tensor, positions: str = "mean", generator: torch.Generator | None = None
) -> Tensor:
    """S per channel for one batch (eq. 5.1 averaged over samples, eq. 5.3, and positions).

    ``z1``, ``z2``: BN-normalised pre-affine activations of two networks on the same inputs,
    (N, c, h, w) or (N, c). Returns (c,): the mean over samples of D_JS(σ(z1) ‖ σ(z2)), at one
    position (r, c) drawn uniformly from ``generator`` for the whole batch (``"random"``, the
    authors' ``feature_similarity``) or averaged over the h·w positions (``"mean"``).
    """
    if z1.shape != z2.shape:
        raise ValueError(f"activations differ in shape: {tuple(z1.shape)} vs {tuple(z2.shape)}")
    if positions not in POSITIONS:
        raise ValueError(f"positions should be one of {POSITIONS}, got {positions!r}")
    if positions == "random" and z1.dim() == 4:
        r = int(torch.randint(0, z1.shape[2], (), generator=generator))
        c = int(torch.randint(0, z1.shape[3], (), generator=generator))
        z1, z2 = z1[:, :, r, c], z2[:, :, r, c]
    d = js_divergence(torch.sigmoid(z1.double()), torch.sigmoid(z2.double()))
    return d.transpose(0, 1).reshape(d.shape[1], -1).mean(dim=1)


def importance(gamma: Tensor) -> Tensor:
    """I_k = |γ_k| / Σ_j |γ_j| (eq. 5.7) from a BatchNorm's scales γ (c,), trained with the L1
    penalty of eq. 5.6 (network slimming). Sums to 1; uniform when every γ is 0."""
    g = gamma.detach().abs().double()
    total = g.sum()
    if total <= 0:
        return torch.full_like(g, 1.0 / g.numel())
    return g / total


def pair_weights(gamma1: Tensor, gamma2: Tensor, form: str = "sum") -> Tensor:
    """Channel weights of C for two networks from their BN scales (c,): I(γ1) + I(γ2)
    (``"sum"``, ``inter_stress.py``: they sum to 2) or their mean (``"mean"``: sum to 1)."""
    if form not in IMPORTANCE:
        raise ValueError(f"importance should be one of {IMPORTANCE}, got {form!r}")
    total = importance(gamma1) + importance(gamma2)
    return total if form == "sum" else total / 2


def compatibility(divergence: Tensor, weights: Tensor) -> float:
    """C (eq. 5.8): Σ_k I_k · S_k, the importance-weighted channel divergence (lower = closer).

    ``divergence``: (c,) from :func:`channel_divergence`; ``weights``: (c,) from
    :func:`pair_weights` (symmetric in the two networks, so C is symmetric).
    """
    return float((weights.double() * divergence.double()).sum())


def stress(compatibilities: Mapping[str, float]) -> float:
    """S_i = Σ_{t ∈ O(i)} C(Z_i of the fine-tuned peel(F, t) ‖ Z_i of F) (Algorithm 2)."""
    return float(sum(compatibilities.values()))


def children_affinity(
    task_affinity: np.ndarray,
    tasks: Sequence[str],
    children_tasks: Sequence[Sequence[str]],
) -> np.ndarray:
    """Ã^i of Algorithm 4 from the task affinity A^i of Algorithm 3 (a divergence matrix).

    ``children_tasks[c]`` = O(c) for each child c of block i. For c1 ≠ c2:
    Â[c1, c2] = mean_{t1 ∈ O(c1)} max_{t2 ∈ O(c2)} A[t1, t2]; Ã = (Â + Âᵀ)/2 (the diagonal
    stays 0); then Ã ← exp(−Ã / max Ã), an affinity in (0, 1] (1 on the diagonal).
    Returns (n_children, n_children).
    """
    index = {t: k for k, t in enumerate(tasks)}
    n = len(children_tasks)
    hat = np.zeros((n, n))
    for a in range(n):
        for b in range(n):
            if a != b:
                rows = [index[t] for t in children_tasks[a]]
                cols = [index[t] for t in children_tasks[b]]
                hat[a, b] = task_affinity[np.ix_(rows, cols)].max(axis=1).mean()
    sym = (hat + hat.T) / 2
    top = sym.max()
    return np.exp(-sym / top) if top > 0 else np.ones_like(sym)


def spectral_split(affinity: np.ndarray, seed: int) -> list[list[int]]:
    """Two groups of children by spectral clustering (normalised cuts, Shi & Malik; the
    thesis's [76]) of an affinity matrix (n, n); trivial for n = 2. As the authors'
    ``graph_clustering._spectral_solver`` (sklearn's spectral clustering, k-means labels), with
    ``seed`` fixing k-means. Groups are lists of row indices, ordered by their first member;
    both are non-empty."""
    n = affinity.shape[0]
    if n < 2:
        raise ValueError(f"spectral_split needs >= 2 children, got {n}")
    if n == 2:
        return [[0], [1]]
    from sklearn.cluster import SpectralClustering

    labels = SpectralClustering(
        n_clusters=2, affinity="precomputed", random_state=seed, assign_labels="kmeans"
    ).fit_predict(affinity)
    groups = [[k for k in range(n) if labels[k] == c] for c in sorted(set(labels.tolist()))]
    groups = [g for g in groups if g]
    if len(groups) < 2:  # a degenerate affinity (all equal): split off the last child
        groups = [list(range(n - 1)), [n - 1]]
    return sorted(groups, key=lambda g: g[0])
