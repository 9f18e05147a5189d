"""AdaShare (Sun et al., NeurIPS 2020, arXiv 1911.12423): learn which residual blocks each task runs.

Every task k has a select-or-skip policy u_{l,k} over the residual blocks l = 1..L, learned by
Gumbel-softmax sampling jointly with the weights (paper §3). Defaults follow the authors' code
(github.com/sunxm2357/AdaShare: train.py, re-train.py, envs/blockdrop_env.py,
yamls/adashare/nyu_v2_2task.yml); the paper's forms are options where they differ:

* policy loss (``BlockDropEnv.backward_policy``): Σ_k ℓ_k + λ_sparsity · L_sparsity +
  λ_sharing · L_sharing, with the authors' ``get_sparsity_loss2`` (mean cross-entropy towards
  *skip* over the searched blocks, summed over tasks) and ``get_hamming_loss`` (|Δ select
  logit| weighted (l+1)/L, l = 0..L−1); the paper's "Loss Functions" (§3: Σ log α, weights
  (L−l)/L on probabilities) via ``sparsity_form=paper`` / ``sharing_form=paper``;
* phases (train.py): a hard-sharing warm-up on the whole training set (Adam β=(0.5, 0.999),
  wd 1e-4); then the policy phase: epoch e (1-based) is one pass of weight updates (SGD,
  momentum 0.9, wd 1e-4) on the weights' part of the training set, then one pass of policy
  updates (Adam, lr 0.01, wd 5e-4) on the held-out ``policy_split``; τ = τ0·decay^(e−1) and the
  last ⌊(e−1)/curriculum_speed⌋ + 1 blocks are searched; the best epoch on validation, counted
  only once every block has been open for a whole curriculum round (e > L·curriculum_speed), is
  restored (weights and policy);
* the final policy: the most likely one and ``n_samples`` drawn ones ranked by the search
  network on validation (cheap; default), or ``retrain_samples`` drawn policies each retrained
  and ranked on validation (re-train.py; the paper retrains 8 samples); the chosen one is retrained from the
  search network's initial weights (re-train.py ``load_snapshot(init_state)``) as the main phase.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from mtlrun.backbones.base import Backbone
from mtlrun.data.base import MultiTaskData, Task, TooSmallToSplit
from mtlrun.errors import ArgumentErrors, ConfigError
from mtlrun.methods.adashare_artefacts import skipped, write_policy
from mtlrun.methods.adashare_losses import (
    SHARING,
    SPARSITY,
    curriculum,
    sharing_loss,
    sharing_loss_paper,
    sparsity_loss,
    sparsity_loss_paper,
    temperature,
)
from mtlrun.methods.base import PolicyStep, SearchContext, SharingMethod, shared_trunk
from mtlrun.model.paths import MultiTaskModel
from mtlrun.model.policy import Policy, PolicyModel

log = logging.getLogger(__name__)

ALLOWED_BACKBONES = ("resnet",)
__all__ = [
    "AdaShare",
    "curriculum",
    "sharing_loss",
    "sharing_loss_paper",
    "sparsity_loss",
    "sparsity_loss_paper",
    "temperature",
    "write_policy",
]
Optimizer = Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]


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


def mean_score(metrics: dict[str, dict[str, float]], tasks: Sequence[Task]) -> float:
    """Mean of the tasks' primary validation metrics (the run's model-selection score)."""
    return sum(metrics[t.name][t.metric] for t in tasks) / len(tasks)


def policy_parts(
    data: MultiTaskData, policy_split: float, seed: int
) -> tuple[MultiTaskData, MultiTaskData]:
    """The training set's part for the weights and its held-out ``policy_split`` for the policy."""
    try:
        return (
            data.train_subset(policy_split, seed, "rest"),
            data.train_subset(policy_split, seed, "held_out"),
        )
    except TooSmallToSplit as e:
        raise ConfigError(
            f"`method.policy_split` ({policy_split}) holds part of the training set out for the "
            f"policy, and both parts need at least one example, but the training set has {e.n}. "
            "Raise `data.limit_train` to 2 or more (or set it to null), or use a method without "
            "a policy split (e.g. method=hard)."
        ) from None


def run_lr(ctx: SearchContext, model: MultiTaskModel) -> float:
    """The learning rate of the run's θ optimiser (``optim.lr``)."""
    return float(ctx.make_optimizer(model.weight_parameters()).param_groups[0]["lr"])


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
        sparsity_form: str = "code",
        sharing_form: str = "code",
        warmup_epochs: int = 4,
        policy_epochs: int = 32,
        curriculum_speed: int = 3,
        alternate: str = "pass",
        hard_sampling: bool = False,
        search_eval: str = "sample",
        authors_optimizers: bool = True,
        policy_lr: float = 0.01,
        policy_weight_decay: float = 5e-4,
        policy_split: float = 0.2,
        n_samples: int = 8,
        retrain_samples: int = 0,
        init_select: float = 0.5,
        name: str = "adashare",
    ) -> None:
        errors = ArgumentErrors("method")
        errors.require(tau0 > 0 and math.isfinite(tau0), "tau0", "> 0", tau0)
        errors.require(0 < tau_decay <= 1, "tau_decay", "in (0, 1]", tau_decay)
        errors.require(lambda_sparsity >= 0, "lambda_sparsity", ">= 0", lambda_sparsity)
        errors.require(lambda_sharing >= 0, "lambda_sharing", ">= 0", lambda_sharing)
        errors.choice("sparsity_form", sparsity_form, tuple(SPARSITY))
        errors.choice("sharing_form", sharing_form, tuple(SHARING))
        errors.require(warmup_epochs >= 0, "warmup_epochs", "an integer >= 0", warmup_epochs)
        errors.require(policy_epochs >= 1, "policy_epochs", "an integer >= 1", policy_epochs)
        speed_ok = curriculum_speed >= 1
        errors.require(speed_ok, "curriculum_speed", "an integer >= 1", curriculum_speed)
        errors.choice("alternate", alternate, ("pass", "step"))
        errors.choice("search_eval", search_eval, ("sample", "argmax"))
        errors.require(policy_lr > 0 and math.isfinite(policy_lr), "policy_lr", "> 0", policy_lr)
        wd_ok = policy_weight_decay >= 0
        errors.require(wd_ok, "policy_weight_decay", ">= 0", policy_weight_decay)
        errors.require(0 < policy_split < 1, "policy_split", "in (0, 1)", policy_split)
        errors.require(n_samples >= 0, "n_samples", "an integer >= 0", n_samples)
        errors.require(retrain_samples >= 0, "retrain_samples", "an integer >= 0", retrain_samples)
        errors.require(0 < init_select < 1, "init_select", "in (0, 1)", init_select)
        errors.raise_if_any()
        self.name, self.tau0, self.tau_decay = name, tau0, tau_decay
        self.lambda_sparsity, self.lambda_sharing = lambda_sparsity, lambda_sharing
        self.sparsity_form, self.sharing_form = sparsity_form, sharing_form
        self.warmup_epochs, self.policy_epochs = warmup_epochs, policy_epochs
        self.curriculum_speed, self.alternate = curriculum_speed, alternate
        self.hard_sampling, self.search_eval = hard_sampling, search_eval
        self.authors_optimizers = authors_optimizers
        self.policy_lr, self.policy_weight_decay = policy_lr, policy_weight_decay
        self.policy_split, self.n_samples = policy_split, n_samples
        self.retrain_samples, self.init_select = retrain_samples, init_select
        self.deviations = self._deviations()
        self._backbone: Backbone | None = None
        self._tasks: list[Task] = []
        self._init_weights: dict[str, Tensor] = {}
        self._trainer_epochs = 0
        self._seed = 0

    def _deviations(self) -> list[str]:
        """Every departure from the authors' code under these options (metrics.json fidelity)."""
        out = [
            "policy epochs chosen on validation, not on the test split (authors' train.py)",
            "validation once per policy epoch after its policy pass (authors: after the weight "
            "pass)",
            "task losses enter the policy loss unweighted (authors: the yml's `lambdas`)",
            f"weights/policy split of the training set is ours (policy_split={self.policy_split});"
            " the authors' train1/train2 lists are not published",
            "retraining (main phase) uses the run's optimiser and schedule (optim.*, trainer.*;"
            " experiment=adashare_mnist3: the authors' Adam β=(0.5, 0.999), wd 1e-4) without"
            " their StepLR",
        ]
        if self.retrain_samples == 0:
            out.append(
                "final policy ranked by the search network on validation (most likely + "
                f"{self.n_samples} drawn), retrained once; the authors retrain every sampled "
                "policy (re-train.py, method.retrain_samples)"
            )
        else:
            out.append(
                "retrained candidates all start from the search network's initial weights and "
                "the chosen one is retrained again as the main phase (authors: one seed each)"
            )
        if self.sparsity_form == "paper":
            out.append(
                "sparsity loss in the paper's form Σ log p(select), not the authors' mean CE"
            )
        if self.sharing_form == "paper":
            out.append("sharing loss in the paper's form ((L−l)/L on p(select)), not the code's")
        if self.alternate == "step":
            out.append("one policy step after every weight step (authors: whole passes)")
        if self.hard_sampling:
            out.append("straight-through hard Gumbel samples (authors: soft, hard_sampling False)")
        if self.search_eval == "argmax":
            out.append("search validated with the most likely policy (authors: a drawn one)")
        if not self.authors_optimizers:
            out.append(
                "warm-up and policy-phase weights use the run's optimiser (authors: Adam "
                "β=(0.5, 0.999) wd 1e-4; SGD momentum 0.9 wd 1e-4)"
            )
        if self.init_select != 0.5:
            out.append(f"initial p(select) {self.init_select} (authors: init_method equal, 0.5)")
        return out

    def build(self, backbone: Backbone, tasks: Sequence[Task]) -> PolicyModel:
        """Hard-sharing paths over the backbone; every residual block (with ``skip``) skippable.

        Keeps the initial weights: the chosen policy is retrained from them (re-train.py)."""
        model = self._make(backbone, tasks)
        n_blocks = len(model.skippable)
        if self.policy_epochs <= n_blocks * self.curriculum_speed:
            raise ConfigError(
                f"`method.policy_epochs` should be > {n_blocks * self.curriculum_speed} "
                f"({n_blocks} skippable blocks × `method.curriculum_speed` "
                f"{self.curriculum_speed}): the policy is chosen once every block has been "
                f"searched (authors' train.py). Found `method.policy_epochs = "
                f"{self.policy_epochs}`."
            )
        self._backbone, self._tasks = backbone, list(tasks)
        self._init_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return model

    def _make(self, backbone: Backbone, tasks: Sequence[Task]) -> PolicyModel:
        blocks, paths = shared_trunk(backbone, tasks)
        skippable = [b for b in backbone.block_names if callable(getattr(blocks[b], "skip", None))]
        if not skippable:
            found = type(backbone).__module__.rsplit(".", 1)[-1]
            raise ConfigError(
                "`method=adashare` needs a backbone of residual blocks (allowed: "
                f"{', '.join(ALLOWED_BACKBONES)}); found backbone={found}"
            )
        return PolicyModel(blocks, paths, skippable, self.init_select)

    def main_epochs(self, trainer_epochs: int) -> int:
        self._trainer_epochs = trainer_epochs  # the retrained candidates' budget
        return trainer_epochs

    # ------------------------------------------------------------------ search

    def search(self, ctx: SearchContext) -> dict[str, Any]:
        model = ctx.model
        if not isinstance(model, PolicyModel):
            raise TypeError("AdaShare searches the PolicyModel its build() made")
        self._seed = ctx.seed
        start = time.perf_counter()
        model.search_mode()
        model.hard, model.eval_sample = self.hard_sampling, self.search_eval == "sample"
        if self.warmup_epochs:
            model.n_learnable = 0  # hard sharing: every block runs, the logits stay as built
            ctx.fit("warmup", self.warmup_epochs, make_optimizer=self._warmup_optimizer(ctx))
        self._learn_policy(ctx, model)
        if self.retrain_samples:
            samples, best = self._retrain(ctx, model)
        else:
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

    def _warmup_optimizer(self, ctx: SearchContext) -> Optimizer | None:
        """Adam β=(0.5, 0.999), wd 1e-4 at ``optim.lr`` (``define_optimizer(False)``)."""
        if not self.authors_optimizers:
            return None
        lr = run_lr(ctx, ctx.model)
        return lambda ps: torch.optim.Adam(ps, lr=lr, betas=(0.5, 0.999), weight_decay=1e-4)

    def _policy_phase_optimizer(self, ctx: SearchContext) -> Optimizer | None:
        """SGD momentum 0.9, wd 1e-4 at ``optim.lr`` (``define_optimizer(policy_learning=True)``)."""
        if not self.authors_optimizers:
            return None
        lr = run_lr(ctx, ctx.model)
        return lambda ps: torch.optim.SGD(ps, lr=lr, momentum=0.9, weight_decay=1e-4)

    def _learn_policy(self, ctx: SearchContext, model: PolicyModel) -> None:
        """The policy phase: alternating weight and policy passes under the curriculum."""
        n_blocks = len(model.skippable)
        weights_data, policy_data = policy_parts(ctx.data, self.policy_split, ctx.seed)
        optimizer = torch.optim.Adam(
            [model.logits], lr=self.policy_lr, weight_decay=self.policy_weight_decay
        )

        def on_epoch_start(epoch: int) -> None:
            model.tau = temperature(self.tau0, self.tau_decay, epoch + 1)
            model.n_learnable = curriculum(n_blocks, epoch + 1, self.curriculum_speed)

        def before() -> None:  # the policy batch's draws carry gradients to the logits
            model.policy_grad = True

        def step(losses: dict[str, Tensor]) -> dict[str, float]:
            if not model.policy_grad:  # the losses were computed with detached draws
                raise RuntimeError("the trainer should call PolicyStep.before first")
            total, logs = self.policy_loss(model, losses)
            (grad,) = torch.autograd.grad(total, [model.logits])
            optimizer.zero_grad(set_to_none=True)
            model.logits.grad = grad
            optimizer.step()
            model.policy_grad = False
            return {**logs, "policy/tau": model.tau, "policy/searched": float(model.n_learnable)}

        ctx.fit(
            "policy",
            self.policy_epochs,
            extra_optimizers=[optimizer],
            on_epoch_start=on_epoch_start,
            policy=PolicyStep(policy_data, step, self.alternate, before),
            data=weights_data,
            select_from=n_blocks * self.curriculum_speed + 1,
            make_optimizer=self._policy_phase_optimizer(ctx),
        )
        model.n_learnable = n_blocks  # the restored best epoch searched every block
        model.policy_grad = False

    def policy_loss(
        self, model: PolicyModel, losses: dict[str, Tensor]
    ) -> tuple[Tensor, dict[str, float]]:
        """Σ task losses + λ_sparsity·L_sparsity + λ_sharing·L_sharing (``backward_policy``)."""
        task = sum(losses.values(), torch.zeros((), device=model.logits.device))
        n_open = len(model.learnable_rows())
        sparse = SPARSITY[self.sparsity_form](model.logits, n_open)
        share = SHARING[self.sharing_form](model.logits)
        total = task + self.lambda_sparsity * sparse + self.lambda_sharing * share
        logs = {
            "policy/loss": float(total.detach()),
            "policy/sparsity": float(sparse.detach()),
            "policy/sharing": float(share.detach()),
        }
        return total, logs

    def _candidates(self, ctx: SearchContext, model: PolicyModel, n: int) -> dict[str, Policy]:
        alpha = model.select_prob().detach().cpu()
        blocks, tasks = model.skippable, model.tasks
        generator = torch.Generator().manual_seed(ctx.seed * 7_919 + 17)
        rows = model.learnable_rows()
        return {
            f"sample{i + 1}": sample_policy(alpha, blocks, tasks, rows, generator) for i in range(n)
        }

    def _pick(
        self, ctx: SearchContext, model: PolicyModel
    ) -> tuple[dict[str, dict[str, Any]], str]:
        """Score the most likely policy and ``n_samples`` drawn ones on validation with the
        search network's weights; the best name."""
        alpha = model.select_prob().detach().cpu()
        candidates = {"argmax": argmax_policy(alpha, model.skippable, model.tasks)}
        candidates.update(self._candidates(ctx, model, self.n_samples))
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

    def _retrain(
        self, ctx: SearchContext, model: PolicyModel
    ) -> tuple[dict[str, dict[str, Any]], str]:
        """Retrain ``retrain_samples`` drawn policies (trainer.max_epochs each, from the search
        network's initial weights) and rank them by their best validation score (re-train.py)."""
        scored: dict[str, dict[str, Any]] = {}
        for name, policy in self._candidates(ctx, model, self.retrain_samples).items():
            fresh = self._fresh(policy).to(ctx.device)
            score = ctx.fit(f"retrain/{name}", self._trainer_epochs, model=fresh)
            scored[name] = {"policy": policy, "score": score}
        best = max(scored, key=lambda n: scored[n]["score"])
        return scored, best

    # ------------------------------------------------------------------ after the search

    def _fresh(self, policy: Policy) -> PolicyModel:
        """The search network's initial weights with ``policy`` fixed (re-train.py)."""
        if self._backbone is None:
            raise RuntimeError("AdaShare needs build() first")
        with torch.random.fork_rng(devices=[]):
            fresh = self._make(self._backbone, self._tasks)
        fresh.load_state_dict(self._init_weights)
        fresh.set_policy(policy)
        return fresh

    def after_search(self, model: MultiTaskModel, search: dict[str, Any]) -> PolicyModel:
        """A fresh network from the search network's initial weights, the policy fixed."""
        return self._fresh(search["policy"])

    def rebuild(self, model: MultiTaskModel, search: dict[str, Any]) -> PolicyModel:
        """The saved policy on a freshly built model (resuming the main phase)."""
        if not isinstance(model, PolicyModel):
            raise TypeError("AdaShare rebuilds the PolicyModel its build() made")
        model.set_policy(search["policy"])
        return model
