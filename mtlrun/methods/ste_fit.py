"""Seed 000, Appendix A ("How accurately does STE approximate?", Table A.1).

A target p* ∈ [0, 1]^dim is drawn from U(0, 1); a data set of ``n_samples`` rows x ~ Bernoulli(p*)
is generated; a vector π (its own U(0, 1) draw) is fitted by Adam with the straight-through
estimator (STE, Bengio et al. 2013, the thesis's ref. [25]) for ``epochs`` epochs. Each mini-batch
samples one mask per row, M ~ Bernoulli(π), forms M̃ = M + π − stopgrad(π) (value M, gradient
∂L/∂π := ∂L/∂M, the thesis's Fig. 3.1 and Algorithm 1 line 8) and minimises L = mean((M̃ − x)²);
Adam steps and π is clipped to [0, 1]. Since E[∂L/∂M] ∝ E[M − x] = π − x̄, the fit is pulled to
the data mean p̂ = x̄, not to p* itself. Table A.1 reports, over 3 repeats, the share of entries
with |π − p*| > 0.05 (0%), > 0.01 (20.26 ± 2.13%) and the mean |π − p*| (0.0063 ± 0.0001).

Choice of defaults (the appendix gives neither the data-set size, the batch size nor the lr). The
final error has two sources:

* sampling noise of p̂: std sqrt(p(1 − p)/n). Over p ~ U(0, 1), E|p̂ − p*| ≈ 0.31/sqrt(n), i.e.
  0.0099 for n = 1000 rows: a floor that no fit to those rows beats on average. The thesis's
  0.0063 is below it, so its data set cannot have had 1000 rows: it needs n ≳ 2500;
* Adam's jitter around p̂: Adam's steps have size ≈ lr whatever the gradient's scale, so π keeps
  wandering around p̂ with a spread that grows with lr and shrinks with the batch size B (the
  noise of each mini-batch gradient ∝ 1/sqrt(B)), roughly independent of p.

Table A.1's pair (mean 0.0063, 20% above 0.01) is what a near-Gaussian error of std ≈ 0.008
gives; either source can produce it. Measured here, 500 epochs (mean |π − p*|, share above
0.01, the p̂ floor in brackets; n = 1000 rows: mean of seeds 0-2, the others: seed 0):

    n = 1000,   B = 100,  lr 1e-2:  0.0140, 54%  (0.0101)   <- the schema's defaults
    n = 1000,   B = 100,  lr 1e-3:  0.0106, 44%  (0.0101)
    n = 2500,   B = 100,  lr 3e-4:  0.0065, 23%  (0.0063)   sampling noise dominates
    n = 10000,  B = 100,  lr 3e-3:  0.0068, 25%  (0.0031)   Table 4.1's Adam lr
    n = 10000,  B = 1000, lr 1e-2:  0.0061, 20%  (0.0031)   Adam's jitter dominates

We keep the schema's lr 1e-2 and its 10 steps per epoch and only scale the data set (and so the
batch) by 10: n = 10,000, B = 1000, lr 1e-2, a round data-set size whose sampling floor
(0.0031) leaves the larger part of the error to STE + Adam, the thing the appendix probes. These live in ``conf/experiment/ste_fit.yaml``;
``method=ste_fit`` alone keeps the schema's cheaper n = 1000 defaults, whose error (≈ 0.014) is
above the thesis's. No lr schedule and no weight decay: the appendix names plain Adam.
"""

from __future__ import annotations

import csv
import logging
import math
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from mtlrun.errors import ConfigError
from mtlrun.methods.base import SharingMethod

log = logging.getLogger(__name__)

METRICS = ("frac_over_0.05", "frac_over_0.01", "mean_abs_error")
# Table A.1 of seed 000, as fractions.
PAPER = {
    "frac_over_0.05": 0.0,
    "frac_over_0.01": 0.2026,
    "frac_over_0.01_std": 0.0213,
    "mean_abs_error": 0.0063,
    "mean_abs_error_std": 0.0001,
}


def bernoulli(probs: Tensor, rows: int, generator: torch.Generator) -> Tensor:
    """``rows`` independent draws M ~ Bernoulli(probs): shape (rows, dim), values 0./1.

    Drawn as U < probs (exactly Bernoulli; cheaper than ``torch.bernoulli`` on CPU).
    """
    return (torch.rand(rows, probs.numel(), generator=generator) < probs.detach()).to(probs.dtype)


def straight_through(mask: Tensor, probs: Tensor) -> Tensor:
    """M̃ = M + π − stopgrad(π): the value of M, the gradient ∂L/∂π := ∂L/∂M (seed 000 Fig. 3.1)."""
    return mask + probs - probs.detach()


def ste_loss(mask: Tensor, probs: Tensor, x: Tensor) -> Tensor:
    """L = mean((M̃ − x)²) over a batch; mask and x (B, dim), probs (dim,)."""
    return (straight_through(mask, probs) - x).pow(2).mean()


def errors(pi: Tensor, target: Tensor) -> dict[str, float]:
    """Table A.1's columns: shares of |π − p*| above 0.05 and 0.01 (fractions) and its mean."""
    diff = (pi - target).abs()
    return {
        "frac_over_0.05": (diff > 0.05).float().mean().item(),
        "frac_over_0.01": (diff > 0.01).float().mean().item(),
        "mean_abs_error": diff.mean().item(),
    }


def fit_vector(
    dim: int, n_samples: int, epochs: int, batch_size: int, lr: float, seed: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Run the Appendix A fit once; returns (fitted π, target p*, data mean p̂), each (dim,).

    Every draw (p*, data, π's init, shuffles, masks) comes from one ``torch.Generator`` seeded by
    ``seed``: deterministic, and the global RNG is left alone.
    """
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(dim, generator=g)
    data = bernoulli(target, n_samples, g)
    pi = torch.rand(dim, generator=g).requires_grad_(True)
    optimizer = torch.optim.Adam([pi], lr=lr)
    for _ in tqdm(
        range(epochs), desc=f"ste_fit seed {seed}", leave=False, disable=not sys.stderr.isatty()
    ):
        shuffled = data[torch.randperm(n_samples, generator=g)]
        for batch in shuffled.split(batch_size):
            loss = ste_loss(bernoulli(pi, len(batch), g), pi, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                pi.clamp_(0.0, 1.0)
    return pi.detach(), target, data.mean(0)


def fit_once(
    dim: int, n_samples: int, epochs: int, batch_size: int, lr: float, seed: int
) -> dict[str, float]:
    """Table A.1's three figures for one repeat (see :func:`fit_vector`)."""
    pi, target, _ = fit_vector(dim, n_samples, epochs, batch_size, lr, seed)
    return errors(pi, target)


def aggregate(values: Sequence[float]) -> dict[str, float | None]:
    """Mean and sample std (ddof = 1) over repeats; std is None for a single repeat."""
    std = statistics.stdev(values) if len(values) > 1 else None
    return {"mean": statistics.fmean(values), "std": std}


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """One row per seed."""
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def plot_fit(path: Path, pi: Tensor, target: Tensor, seed: int) -> None:
    """Fitted π against p* (with y = x) and the histogram of |π − p*|, for one seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    diff = (pi - target).abs().numpy()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    left.scatter(target.numpy(), pi.numpy(), s=3, alpha=0.5)
    left.plot([0, 1], [0, 1], color="black", linewidth=0.8, label="y = x")
    left.set(xlabel="true p*", ylabel="fitted π", title=f"Adam + STE fit (seed {seed})")
    left.legend(loc="upper left")
    right.hist(diff, bins=50)
    for cut in (0.01, 0.05):
        right.axvline(cut, color="red", linestyle="--", linewidth=0.8)
    right.set(xlabel="|π − p*|", ylabel="entries", title=f"mean |π − p*| = {diff.mean():.4f}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _check(key: str, value: object, ok: bool, should: str) -> None:
    if not ok:
        raise ConfigError(f"`method.{key}` should be {should}. Found `method.{key} = {value}`.")


class STEFit(SharingMethod):
    """Seed 000 Appendix A as a standalone run (``mtlrun experiment=ste_fit``); no MTL model."""

    def __init__(
        self,
        name: str = "ste_fit",
        dim: int = 1000,
        n_samples: int = 1000,
        epochs: int = 500,
        batch_size: int = 100,
        lr: float = 1e-2,
        seeds: Sequence[int] = (0, 1, 2),
    ) -> None:
        for key, value in (
            ("dim", dim),
            ("n_samples", n_samples),
            ("epochs", epochs),
            ("batch_size", batch_size),
        ):
            _check(key, value, value >= 1, "an integer >= 1")
        _check("lr", lr, lr > 0 and math.isfinite(lr), "> 0")
        _check("seeds", list(seeds), len(seeds) >= 1, "a non-empty list of integers")
        self.name, self.dim, self.n_samples, self.epochs = name, dim, n_samples, epochs
        self.batch_size, self.lr, self.seeds = batch_size, lr, [int(s) for s in seeds]

    def standalone(self, run_dir: Path) -> dict[str, Any]:
        """Fit once per seed; write ste_fit.png and ste_fit.csv; return the metrics.json block."""
        rows: list[dict[str, Any]] = []
        for seed in self.seeds:
            start = time.perf_counter()
            pi, target, p_hat = fit_vector(
                self.dim, self.n_samples, self.epochs, self.batch_size, self.lr, seed
            )
            row = {
                "seed": seed,
                **errors(pi, target),
                "sampling_floor_mae": (p_hat - target).abs().mean().item(),
                "train_s": round(time.perf_counter() - start, 3),
            }
            rows.append(row)
            log.info(
                "ste_fit seed %d: |π−p*| > 0.05: %.2f%%, > 0.01: %.2f%%, mean %.5f "
                "(p̂ floor %.5f) in %.1fs",
                seed,
                100 * row["frac_over_0.05"],
                100 * row["frac_over_0.01"],
                row["mean_abs_error"],
                row["sampling_floor_mae"],
                row["train_s"],
            )
            if seed == self.seeds[0]:
                plot_fit(run_dir / "ste_fit.png", pi, target, seed)
        write_csv(run_dir / "ste_fit.csv", rows)
        summary = {k: aggregate([r[k] for r in rows]) for k in METRICS}
        return {"ste_fit": {**summary, "per_seed": rows, "paper": dict(PAPER)}}
