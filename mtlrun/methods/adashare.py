"""AdaShare (Sun et al., NeurIPS 2020; seed 002): learn which residual blocks each task runs.

Every task k has a select-or-skip policy u_{l,k} over the residual blocks l = 1..L, learned by
straight-through Gumbel-softmax sampling jointly with the weights (seed 002 §3, "Learning a
Task-Specific Policy"). Loss of a policy update (seed 002, "Loss Functions"):

    Σ_k ℓ_k + λ_sparsity · Σ_{l,k} log α_{l,k} + λ_sharing · Σ_{k1<k2} Σ_l (L − l)/L · |α_{l,k1} − α_{l,k2}|

with α_{l,k} = p(select). Training strategy (seed 002): a hard-sharing warm-up; a curriculum
(in policy epoch e only the last min(L, e) blocks are searched, earlier ones run) with the
temperature τ0·decay^e, alternating weight updates (on the weights' part of the training set)
and policy updates (on the held-out ``policy_split``); then ``n_samples`` policies drawn from
the learned distribution and the most likely one are scored on validation, and the best one is
retrained from scratch, as a fresh network, on the whole training set (the main phase).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mtlrun.backbones.base import Backbone
from mtlrun.data.base import Task
from mtlrun.errors import ArgumentErrors, ConfigError
from mtlrun.methods.base import PolicyStep, SearchContext, SharingMethod, shared_trunk
from mtlrun.model.paths import MultiTaskModel
from mtlrun.model.policy import SELECT, Policy, PolicyModel

log = logging.getLogger(__name__)

ALLOWED_BACKBONES = ("resnet",)
RETRAIN_SEED_OFFSET = 104_729  # the retrained network's init: seeded, yet not the searched one's


# ------------------------------------------------------------------------ schedules and losses


def temperature(tau0: float, decay: float, epoch: int) -> float:
    """τ of policy epoch ``epoch`` (1-based): τ0 · decay^epoch."""
    return tau0 * decay**epoch


def curriculum(n_blocks: int, epoch: int) -> int:
    """How many of the last blocks are searched in policy epoch ``epoch`` (1-based): min(L, e)."""
    return min(n_blocks, epoch)


def sparsity_loss(logits: Tensor) -> Tensor:
    """Σ_{l,k} log p_{l,k}(select): logits (L, K, 2), column 0 = select. Minimising it makes
    blocks less likely to be selected, i.e. the network compact (seed 002, L_sparsity)."""
    return torch.log_softmax(logits, dim=-1)[..., SELECT].sum()


def sharing_loss(alpha: Tensor) -> Tensor:
    """Σ_{k1<k2} Σ_l (L − l)/L · |α_{l,k1} − α_{l,k2}| with l = 1..L: alpha (L, K) select
    probabilities. Early blocks weigh more, so tasks share the early blocks and keep their own
    decisions in the late ones (seed 002, L_sharing)."""
    n = alpha.shape[0]
    weights = torch.arange(n - 1, -1, -1, dtype=alpha.dtype, device=alpha.device) / n
    gaps = (alpha.unsqueeze(2) - alpha.unsqueeze(1)).abs()  # (L, K, K): |α_{l,k1} − α_{l,k2}|
    upper = torch.triu(torch.ones_like(gaps[0]), diagonal=1)  # the pairs k1 < k2
    return (weights[:, None, None] * gaps * upper).sum()


# ------------------------------------------------------------------------ policies


def argmax_policy(alpha: Tensor, blocks: Sequence[str], tasks: Sequence[str]) -> Policy:
    """The most likely decisions: select where α ≥ 0.5; alpha (L, K)."""
    return {
        t: {b: bool(alpha[i, k] >= 0.5) for i, b in enumerate(blocks)} for k, t in enumerate(tasks)
    }


def sample_policy(
    alpha: Tensor,
    blocks: Sequence[str],
    tasks: Sequence[str],
    searched: range,
    generator: torch.Generator,
) -> Policy:
    """u_{l,k} ~ Bernoulli(α_{l,k}) for the ``searched`` rows; the other blocks always run."""
    draw = torch.rand(alpha.shape, generator=generator) < alpha.cpu()
    return {
        t: {b: bool(draw[i, k]) if i in searched else True for i, b in enumerate(blocks)}
        for k, t in enumerate(tasks)
    }


def skipped(policy: Policy) -> dict[str, list[str]]:
    """The blocks each task skips (a compact view of a policy)."""
    return {t: [b for b, run in per.items() if not run] for t, per in policy.items()}


def mean_score(metrics: dict[str, dict[str, float]], tasks: Sequence[Task]) -> float:
    """Mean of the tasks' primary validation metrics (the run's model-selection score)."""
    return sum(metrics[t.name][t.metric] for t in tasks) / len(tasks)


# ------------------------------------------------------------------------ the method


class AdaShare(SharingMethod):
    """Adaptive sharing by task-specific select-or-skip policies (``method=adashare``)."""

    searches = True

    def __init__(
        self,
        tau0: float = 5.0,
        tau_decay: float = 0.965,
        lambda_sparsity: float = 0.05,
        lambda_sharing: float = 0.05,
        warmup_epochs: int = 4,
        policy_epochs: int = 8,
        policy_lr: float = 0.01,
        policy_split: float = 0.2,
        n_samples: int = 8,
        init_select: float = 0.5,
        name: str = "adashare",
    ) -> None:
        errors = ArgumentErrors("method")
        errors.require(tau0 > 0 and math.isfinite(tau0), "tau0", "> 0", tau0)
        errors.require(0 < tau_decay <= 1, "tau_decay", "in (0, 1]", tau_decay)
        errors.require(lambda_sparsity >= 0, "lambda_sparsity", ">= 0", lambda_sparsity)
        errors.require(lambda_sharing >= 0, "lambda_sharing", ">= 0", lambda_sharing)
        errors.require(warmup_epochs >= 0, "warmup_epochs", "an integer >= 0", warmup_epochs)
        errors.require(policy_epochs >= 1, "policy_epochs", "an integer >= 1", policy_epochs)
        errors.require(policy_lr > 0 and math.isfinite(policy_lr), "policy_lr", "> 0", policy_lr)
        errors.require(0 < policy_split < 1, "policy_split", "in (0, 1)", policy_split)
        errors.require(n_samples >= 0, "n_samples", "an integer >= 0", n_samples)
        errors.require(0 < init_select < 1, "init_select", "in (0, 1)", init_select)
        errors.raise_if_any()
        self.name, self.tau0, self.tau_decay = name, tau0, tau_decay
        self.lambda_sparsity, self.lambda_sharing = lambda_sparsity, lambda_sharing
        self.warmup_epochs, self.policy_epochs, self.policy_lr = (
            warmup_epochs,
            policy_epochs,
            policy_lr,
        )
        self.policy_split, self.n_samples, self.init_select = policy_split, n_samples, init_select
        self._backbone: Backbone | None = None
        self._tasks: list[Task] = []
        self._seed = 0

    def build(self, backbone: Backbone, tasks: Sequence[Task]) -> PolicyModel:
        """Hard-sharing paths over the backbone; every residual block (with ``skip``) skippable."""
        blocks, paths = shared_trunk(backbone, tasks)
        skippable = [b for b in backbone.block_names if callable(getattr(blocks[b], "skip", None))]
        if not skippable:
            found = type(backbone).__module__.rsplit(".", 1)[-1]
            raise ConfigError(
                "`method=adashare` needs a backbone of residual blocks (allowed: "
                f"{', '.join(ALLOWED_BACKBONES)}); found backbone={found}"
            )
        self._backbone, self._tasks = backbone, list(tasks)
        return PolicyModel(blocks, paths, skippable, self.init_select)

    # ------------------------------------------------------------------ search

    def search(self, ctx: SearchContext) -> dict[str, Any]:
        model = ctx.model
        if not isinstance(model, PolicyModel):
            raise TypeError("AdaShare searches the PolicyModel its build() made")
        self._seed = ctx.seed
        start = time.perf_counter()
        weights_data = ctx.data.train_subset(self.policy_split, ctx.seed, "rest")
        policy_data = ctx.data.train_subset(self.policy_split, ctx.seed, "held_out")
        model.search_mode()
        if self.warmup_epochs:
            model.n_learnable = 0  # hard sharing: every block runs, the logits stay as built
            ctx.fit("warmup", self.warmup_epochs, data=weights_data)
        self._learn_policy(ctx, model, weights_data, policy_data)
        samples, best = self._pick(ctx, model)
        search_s = time.perf_counter() - start
        alpha = model.select_prob().detach().cpu()
        policy = samples[best]["policy"]
        write_policy(ctx.run_dir, model.skippable, model.tasks, alpha, policy, samples, best)
        log.info("adashare: search %.1fs; chosen %s; skipped %s", search_s, best, skipped(policy))
        return {
            "search_s": search_s,
            "policy": policy,
            "select_prob": {
                t: {b: round(float(alpha[i, k]), 6) for i, b in enumerate(model.skippable)}
                for k, t in enumerate(model.tasks)
            },
            "chosen": best,
            "samples": [
                {"name": n, "score": s["score"], "skipped": skipped(s["policy"])}
                for n, s in samples.items()
            ],
        }

    def _learn_policy(
        self, ctx: SearchContext, model: PolicyModel, weights_data: Any, policy_data: Any
    ) -> None:
        """The curriculum phase: alternating weight and policy updates (seed 002)."""
        n_blocks = len(model.skippable)
        optimizer = torch.optim.Adam([model.logits], lr=self.policy_lr)

        def on_epoch_start(epoch: int) -> None:
            model.tau = temperature(self.tau0, self.tau_decay, epoch + 1)
            model.n_learnable = curriculum(n_blocks, epoch + 1)

        def before_policy_batch() -> None:  # runs after each weight update, before the policy's
            model.policy_grad = True

        def step(losses: dict[str, Tensor]) -> dict[str, float]:
            if not model.policy_grad:  # the losses were computed with detached draws
                raise RuntimeError("the trainer should call after_step before each policy batch")
            total, logs = self.policy_loss(model, losses)
            (grad,) = torch.autograd.grad(total, [model.logits])
            frozen = torch.ones(n_blocks, dtype=torch.bool, device=grad.device)
            frozen[list(model.learnable_rows())] = False
            optimizer.zero_grad(set_to_none=True)
            model.logits.grad = grad.masked_fill(frozen[:, None, None], 0.0)
            optimizer.step()
            model.policy_grad = False
            return {**logs, "policy/tau": model.tau, "policy/searched": float(model.n_learnable)}

        ctx.fit(
            "policy",
            self.policy_epochs,
            extra_optimizers=[optimizer],
            after_step=before_policy_batch,
            on_epoch_start=on_epoch_start,
            policy=PolicyStep(policy_data, step),
            data=weights_data,
            restore_best=False,  # the curriculum opens the last blocks last: keep the final policy
        )
        model.n_learnable = curriculum(n_blocks, self.policy_epochs)
        model.policy_grad = False

    def policy_loss(
        self, model: PolicyModel, losses: dict[str, Tensor]
    ) -> tuple[Tensor, dict[str, float]]:
        """Σ task losses + λ_sparsity·L_sparsity + λ_sharing·L_sharing, and its terms for the log."""
        task = sum(losses.values(), torch.zeros((), device=model.logits.device))
        sparse = sparsity_loss(model.logits)
        share = sharing_loss(model.select_prob())
        total = task + self.lambda_sparsity * sparse + self.lambda_sharing * share
        logs = {
            "policy/loss": float(total.detach()),
            "policy/sparsity": float(sparse.detach()),
            "policy/sharing": float(share.detach()),
        }
        return total, logs

    def _pick(
        self, ctx: SearchContext, model: PolicyModel
    ) -> tuple[dict[str, dict[str, Any]], str]:
        """Score the most likely policy and ``n_samples`` drawn ones on validation; the best name."""
        alpha = model.select_prob().detach().cpu()
        blocks, tasks = model.skippable, model.tasks
        generator = torch.Generator().manual_seed(ctx.seed * 7_919 + 17)
        candidates = {"argmax": argmax_policy(alpha, blocks, tasks)}
        rows = model.learnable_rows()
        for i in range(self.n_samples):
            candidates[f"sample{i + 1}"] = sample_policy(alpha, blocks, tasks, rows, generator)
        scored: dict[str, dict[str, Any]] = {}
        seen: dict[str, float] = {}
        for name, policy in candidates.items():
            key = json.dumps(policy, sort_keys=True)
            if key not in seen:
                model.set_policy(policy)
                seen[key] = mean_score(ctx.evaluate("valid"), ctx.tasks)
            scored[name] = {"policy": policy, "score": seen[key]}
        model.search_mode()
        best = max(scored, key=lambda n: scored[n]["score"])  # ties: the first (argmax)
        return scored, best

    # ------------------------------------------------------------------ after the search

    def after_search(self, model: MultiTaskModel, search: dict[str, Any]) -> PolicyModel:
        """A fresh network (new random weights, seeded by the run's seed) with the policy fixed."""
        if self._backbone is None:
            raise RuntimeError("AdaShare.after_search needs build() first")
        with torch.random.fork_rng(devices=[]):
            # not the run's seed itself: that one drew the searched network's initial weights
            torch.manual_seed(self._seed + RETRAIN_SEED_OFFSET)
            fresh = self.build(self._backbone, self._tasks)
        fresh.set_policy(search["policy"])
        return fresh

    def rebuild(self, model: MultiTaskModel, search: dict[str, Any]) -> PolicyModel:
        """The saved policy on a freshly built model (resuming the main phase)."""
        if not isinstance(model, PolicyModel):
            raise TypeError("AdaShare rebuilds the PolicyModel its build() made")
        model.set_policy(search["policy"])
        return model


# ------------------------------------------------------------------------ artefacts


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
