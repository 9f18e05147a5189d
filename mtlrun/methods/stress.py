"""Compatibility, stress and affinity of tree blocks (seed 001 §5.2-5.3), as pure functions.

Notation of the thesis: a block's output before BatchNorm's affine step is
Z̃ = (Z_in − μ) / sqrt(σ² + ε) (eq. 5.5), of shape (N, c, h, w); z_{n,m,k} is one position of
channel k. Every quantity here is a *divergence*: 0 for identical networks, larger when they
differ (the thesis's Table 1(a) lists kmnist–mnist 0.0050 as the closest pair). Algorithm 4 turns
the divergences into an affinity with exp(−A / max A) for spectral clustering.

Two readings of the thesis, stated where they are used: eq. 5.4 and 5.8 print the position
average as 1/(h+w)·Σ_{n,m}; we average over the h·w positions (the thesis calls the score
normalised, which 1/(h+w) over h·w terms is not). Eq. 5.3 is used as printed:
D_KL(z ‖ z') = (1/N) Σ_x z(x) log(z(x)/z'(x)) on the sigmoid values, without Bernoulli
complement terms; its Jensen–Shannon form (eq. 5.2) is still ≥ 0, symmetric, and 0 iff equal.
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


def channel_divergence(z1: Tensor, z2: Tensor) -> Tensor:
    """S per channel (eq. 5.1 averaged over samples, eq. 5.3, and positions, eq. 5.4).

    ``z1``, ``z2``: BN-normalised pre-affine activations of two networks on the same inputs,
    (N, c, h, w) or (N, c). Returns (c,): the mean over samples and positions of
    D_JS(σ(z1) ‖ σ(z2)).
    """
    if z1.shape != z2.shape:
        raise ValueError(f"activations differ in shape: {tuple(z1.shape)} vs {tuple(z2.shape)}")
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


def compatibility(divergence: Tensor, weights: Tensor) -> float:
    """C (eq. 5.8): Σ_k I_k · S_k, the importance-weighted channel divergence (lower = closer).

    ``divergence``: (c,) from :func:`channel_divergence`; ``weights``: (c,) importances summing
    to 1 (the method uses the mean of both networks' :func:`importance`, so C is symmetric).
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
    thesis's [76]) of an affinity matrix (n, n); trivial for n = 2. Groups are lists of row
    indices, ordered by their first member; both are non-empty."""
    n = affinity.shape[0]
    if n < 2:
        raise ValueError(f"spectral_split needs >= 2 children, got {n}")
    if n == 2:
        return [[0], [1]]
    from sklearn.cluster import SpectralClustering

    labels = SpectralClustering(
        n_clusters=2, affinity="precomputed", random_state=seed, assign_labels="discretize"
    ).fit_predict(affinity)
    groups = [[k for k in range(n) if labels[k] == c] for c in sorted(set(labels.tolist()))]
    groups = [g for g in groups if g]
    if len(groups) < 2:  # a degenerate affinity (all equal): split off the last child
        groups = [list(range(n - 1)), [n - 1]]
    return sorted(groups, key=lambda g: g[0])
