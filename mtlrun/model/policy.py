"""Select-or-skip policies over residual blocks (AdaShare, Sun et al. 2020, arXiv 1911.12423 §3).

Every task k runs or skips every skippable block l: u_{l,k} ∈ {0, 1}. A skipped residual block
passes its shortcut (``block.skip(x)``), so the paths stay those of hard sharing and the policy
decides which blocks each task computes. Blocks without ``skip`` (the stem) and the heads always
run.

Two modes:

* ``search``: two logits per (l, k) (``logits``, shape (L, K, 2), column 0 = select, column 1 =
  skip, as the authors' ``task{k}_logits`` in models/deeplab_resnet.py), outside
  :meth:`weight_parameters`. In training, u_{l,k} is a Gumbel-softmax sample at temperature
  ``tau`` for the last ``n_learnable`` blocks (the curriculum); earlier blocks always run. The
  sample is soft (``hard=False``, the authors' ``hard_sampling: False``) or straight-through
  (hard value, soft gradient). A block's output is u·block(x) + (1 − u)·skip(x), so the task
  losses reach the logits. In evaluation the searched blocks follow one Bernoulli(p(select))
  draw per forward (``eval_sample``, the authors' ``test_sample_policy`` with soft sampling)
  or the most likely decision.
* ``fixed`` (retraining): boolean decisions; a skipped block is never called, only its shortcut.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtlrun.backbones.accounting import count_parameters
from mtlrun.model.paths import MultiTaskModel

SELECT = 0  # column of the select logit; column 1 is skip
Policy = dict[str, dict[str, bool]]  # task -> skippable block -> runs it


class PolicyModel(MultiTaskModel):
    """Hard-sharing paths whose ``skippable`` blocks each task may skip (see the module docstring).

    ``skippable`` lists the blocks with a ``skip`` method in path order: l = 1..L. ``init_select``
    is the initial select probability of every (l, k).
    """

    def __init__(
        self,
        blocks: Mapping[str, nn.Module],
        paths: Mapping[str, Sequence[str]],
        skippable: Sequence[str],
        init_select: float = 0.5,
    ) -> None:
        super().__init__(blocks, paths)
        no_skip = [b for b in skippable if not callable(getattr(self.blocks[b], "skip", None))]
        if no_skip:
            raise ValueError(f"blocks {no_skip} offer no `skip` (a residual shortcut)")
        self.skippable: tuple[str, ...] = tuple(skippable)
        self._row = {b: i for i, b in enumerate(self.skippable)}
        self._col = {t: k for k, t in enumerate(self.paths)}
        logits = torch.zeros(len(self.skippable), len(self.paths), 2)
        logits[..., SELECT] = math.log(init_select / (1.0 - init_select))
        self.logits = nn.Parameter(logits)
        self.mode = "search"
        self.tau = 1.0
        self.n_learnable = 0  # 0: every block runs for every task (hard sharing, the warm-up)
        self.policy_grad = False  # False: draws are detached (weight updates leave π alone)
        self.hard = False  # True: straight-through hard samples; False: soft Gumbel-softmax
        self.eval_sample = False  # True: evaluation draws a policy per forward; False: argmax
        self.policy: Policy | None = None
        self._draw: dict[tuple[str, str], bool | Tensor] = {}

    # ------------------------------------------------------------------ policy state

    def weight_parameters(self) -> list[nn.Parameter]:
        """θ: every parameter but the policy logits."""
        return [p for p in self.parameters() if p is not self.logits]

    def select_prob(self) -> Tensor:
        """α_{l,k}: the probability that task k runs block l, shape (L, K)."""
        return F.softmax(self.logits, dim=-1)[..., SELECT]

    def learnable_rows(self) -> range:
        """Rows l of the blocks whose decision is searched now: the last ``n_learnable``."""
        n = len(self.skippable)
        return range(n - min(n, self.n_learnable), n)

    def set_policy(self, policy: Mapping[str, Mapping[str, bool]]) -> None:
        """Fix the decisions (``fixed`` mode): ``policy[task][block]`` for every skippable block."""
        missing = [
            f"{t}/{b}" for t in self.paths for b in self.skippable if b not in policy.get(t, {})
        ]
        if missing:
            raise ValueError(f"the policy lacks decisions for {missing}")
        self.policy = {t: {b: bool(policy[t][b]) for b in self.skippable} for t in self.paths}
        self.mode = "fixed"

    def search_mode(self) -> None:
        self.policy, self.mode = None, "search"

    def decision(self, block: str, task: str) -> bool | Tensor:
        """u_{l,k}: True/False when fixed, not searched now or drawn in evaluation; a 0-d
        Gumbel-softmax sample in training."""
        row = self._row.get(block)
        if row is None:
            return True  # stem and heads
        if self.mode == "fixed":
            assert self.policy is not None
            return self.policy[task][block]
        if row not in self.learnable_rows():
            return True
        drawn = self._draw.get((task, block))
        if drawn is not None:
            return drawn
        return bool(self.select_prob()[row, self._col[task]] >= 0.5)

    def _sample(self) -> dict[tuple[str, str], Tensor]:
        """One Gumbel-softmax sample (soft, or straight-through when ``hard``) per learnable
        (block, task); the authors' ``train_sample_policy``."""
        rows = self.learnable_rows()
        if not rows:
            return {}
        logits = self.logits if self.policy_grad else self.logits.detach()
        u = F.gumbel_softmax(logits[rows.start :], tau=self.tau, hard=self.hard)[..., SELECT]
        return {
            (t, self.skippable[rows.start + i]): u[i, k]
            for i in range(len(rows))
            for t, k in self._col.items()
        }

    def _eval_draw(self) -> dict[tuple[str, str], bool | Tensor]:
        """u_{l,k} ~ Bernoulli(p(select)) per learnable (block, task), no gradient: the
        authors' evaluation during the search (``test_sample_policy``, soft sampling)."""
        rows = self.learnable_rows()
        if not rows:
            return {}
        draw = torch.rand(len(rows), len(self._col)) < self.select_prob()[rows.start :].cpu()
        return {
            (t, self.skippable[rows.start + i]): bool(draw[i, k])
            for i in range(len(rows))
            for t, k in self._col.items()
        }

    # ------------------------------------------------------------------ forward

    def forward(self, inputs: Any, tasks: Iterable[str] | None = None) -> dict[str, Tensor]:
        names = list(tasks) if tasks is not None else self.tasks
        self._draw = {}
        if self.mode == "search" and self.training:
            self._draw = dict(self._sample())
        elif self.mode == "search" and self.eval_sample:
            self._draw = self._eval_draw()
        try:
            return super().forward(inputs, names)
        finally:
            self._draw = {}

    def _key(self, block: str, task: str) -> Any:
        d = self.decision(block, task)
        return ("drawn", task) if isinstance(d, Tensor) else d

    def cache_key(self, task: str, prefix: tuple[str, ...]) -> Any:
        """Equal when the prefixes and the tasks' decisions along them are equal.

        A drawn decision is the task's own (its gradient goes to its own logits), so it makes
        every later output of the task its own.
        """
        return tuple((b, self._key(b, task)) for b in prefix)

    def run_block(self, name: str, x: Any, task: str) -> Any:
        d = self.decision(name, task)
        block: Any = self.blocks[name]  # a residual block: forward and skip
        if isinstance(d, Tensor):
            return d * block(x) + (1 - d) * block.skip(x)
        return block(x) if d else block.skip(x)

    # ------------------------------------------------------------------ accounting

    def runs(self, block: str, task: str) -> bool:
        """Whether ``task`` calls ``block`` itself (in search mode every block is called)."""
        return self.mode != "fixed" or self.decision(block, task) is True

    def _shortcut_size(self, block: str) -> int:
        downsample = getattr(self.blocks[block], "downsample", None)
        return count_parameters(downsample) if isinstance(downsample, nn.Module) else 0

    def param_counts(self) -> dict[str, Any]:
        """Encoder parameters: ``used`` by at least one task, ``per_task``, the ``supernet``.

        A task that runs a block uses all of it; one that skips it uses its shortcut only (a
        projection shortcut has parameters; an identity has none), so a block every task skips
        counts its projection shortcut at most. The policy logits are not counted.
        """
        heads = {p[-1] for p in self.paths.values()}
        supernet = sum(count_parameters(m) for b, m in self.blocks.items() if b not in heads)
        trunk = self.trunk_blocks()

        def size(block: str, task: str) -> int:
            if self.runs(block, task):
                return count_parameters(self.blocks[block])
            return self._shortcut_size(block)

        per_task = {t: sum(size(b, t) for b in p if b in trunk) for t, p in self.paths.items()}
        used = sum(max(size(b, t) for t in self.users(b)) for b in trunk)
        return {"supernet": supernet, "used": used, "per_task": per_task}
