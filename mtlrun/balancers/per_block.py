"""The per-block driver: any weighting, applied per shared block over the tasks that use it.

For every block i with users O(i) (seed 001 §4), the driver gathers the users' gradients (on
the block's parameters, ``on="params"``, or at its output Z_i, ``on="z"``; see
:mod:`mtlrun.balancers.blocks`), hands them to the block's own weighting as a
:class:`~mtlrun.balancers.weighting.BlockStat` and writes Σ_t w_t g_t (or the aggregation's
direction) as the block's update. A block used by one task gets that task's gradient unchanged,
whatever the weighting; parameters outside every block (cross-stitch units) get the sum.

``group="all"`` weighs the shared blocks of one set of users together instead: their
gradients are concatenated into one vector per task and get one weighting (for hard sharing: one
over all shared parameters, as LibMTL and the weightings' authors apply them). Blocks with
different users (hierarchical, sparse, tree-shaped networks) still get one weighting per set of
users, and single-user blocks their task's gradient.

The Pareto-stationarity monitor reads the same Gram matrices (no extra backward pass): a
min-norm solve per shared block (per group) on one step in ``kkt_every``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from mtlrun.balancers import blocks as B
from mtlrun.balancers.base import ArgumentErrors, BlockBalancer
from mtlrun.balancers.min_norm import gram_matrix
from mtlrun.balancers.weighting import BlockStat, NonFiniteWeights, Weighting, adapt
from mtlrun.errors import ConfigError
from mtlrun.model.paths import MultiTaskModel

Factory = Callable[..., Any]
GROUPS = ("block", "all")


class PerBlock(BlockBalancer):
    """One weighting per shared block (``weighting``: a factory, called once per block).

    Logs ``weight/<task>`` (the task's mean weight over the shared blocks it uses, where the
    weighting gives weights) and the weighting's own entries, averaged over blocks.
    """

    block_deviation = ""  # a subclass's departure that only per-block grouping makes

    def __init__(
        self,
        tasks: Sequence[str],
        weighting: Factory,
        stat: str = "auto",
        on: str = "params",
        at: str = "segment",
        kkt_every: int = 1,
        kkt_tol: float = 0.05,
        name: str = "per_block",
        paper: str = "",
        deviations: Sequence[str] = (),
        errors: ArgumentErrors | None = None,
        group: str = "block",
        block_deviation: str = "",
    ) -> None:
        """``paper``: the reference a YAML names (shown in ``--help``); ``errors``: a
        subclass's argument problems, raised with the driver's in one error. ``group``:
        ``block`` (one weighting per shared block) or ``all`` (one per set of users over their
        shared blocks together; module docstring). ``block_deviation``: a departure from the
        authors' code that only ``group=block`` makes (recorded then, not with ``all``)."""
        errors = errors if errors is not None else ArgumentErrors()
        errors.choice("on", on, B.GRADIENT_SPACES)
        errors.choice("at", at, B.REPRESENTATION_AT)
        errors.choice("stat", stat, ("auto", "gram", "factor", "rows", "direction"))
        errors.choice("group", group, GROUPS)
        errors.require(
            not (group == "all" and on == "z"), "group",
            "`block` with `balancer.on=z` (block outputs are weighed where each segment ends; "
            "`all` groups parameter gradients)", group,
        )  # fmt: skip
        super().__init__(tasks, name, kkt_every, kkt_tol, errors)
        self.factory, self.stat, self.on, self.at = weighting, stat, on, at
        self.group = group
        self.paper = paper
        own = [*type(self).deviations, *deviations]  # a subclass's own, then the YAML's
        per_block = block_deviation or type(self).block_deviation
        self.deviations = [per_block, *own] if per_block and group == "block" else own
        self.uses_taps = on == "z"
        self.weightings: dict[str, Weighting] = {}
        self._pending: dict[str, Any] = {}
        probe = self._make(len(self.tasks))  # a missing solver or a bad argument stops the run now
        if on == "z" and probe.fixed_rows:
            raise ConfigError(
                f"`balancer={name}` keeps per-block state of the gradients' size across steps, "
                "and block outputs change size with the batch (sentence lengths, a short last "
                "batch): use it on parameter gradients, `balancer.on=params`."
            )

    # ------------------------------------------------------------------ weightings per block

    def _make(self, n_users: int) -> Weighting:
        kwargs = {"n_tasks": n_users} if _takes(self.factory, "n_tasks") else {}
        try:
            inner = self.factory(**kwargs) if callable(self.factory) else self.factory
            return adapt(inner, self.stat)
        except ImportError as e:
            raise ConfigError(
                f"`balancer={self.name}` needs a solver that is not installed ({e}). "
                "Install mtlrun's solvers: pip install 'mtlrun[solvers]'."
            ) from None
        except (TypeError, ValueError) as e:
            raise ConfigError(f"`balancer={self.name}`: {e}") from None

    def groups(self, model: MultiTaskModel, params: Sequence[Tensor], tasks: Sequence[str]):
        """The parameter blocks the weighting runs on: every block (``group=block``), or the
        shared blocks of each set of users merged into one, named by its blocks joined with
        ``+`` (``group=all``); single-user blocks stay as they are."""
        blocks = B.param_blocks(model, params, tasks)
        if self.group == "block":
            return blocks
        merged: dict[tuple[str, ...], B.ParamBlock] = {}
        out: list[B.ParamBlock] = []
        for blk in blocks:
            if len(blk.users) == 1:
                out.append(blk)
            elif (key := tuple(blk.users)) in merged:
                m = merged[key]
                m.name, m.ks = f"{m.name}+{blk.name}", [*m.ks, *blk.ks]
            else:
                merged[key] = B.ParamBlock(blk.name, list(blk.ks), list(blk.users))
                out.append(merged[key])
        return out

    def weighting_for(self, block: str, n_users: int) -> Weighting:
        if block not in self.weightings:
            w = self._make(n_users)
            if block in self._pending:
                w.load_state_dict(self._pending.pop(block))
            self.weightings[block] = w
        return self.weightings[block]

    # ------------------------------------------------------------------ step

    def backward(self, losses: dict[str, Tensor], model: MultiTaskModel) -> dict[str, float]:
        due = self.monitor.due()
        if self.on == "z":
            out = self._backward_z(losses, model, due)
        else:
            out = self._backward_params(losses, model, due)
        return self._log(losses, out)

    def _stat(self, block: str, users: list[str], losses: dict[str, Tensor], gram, rows):
        values = torch.stack([losses[t].detach().double() for t in users])
        return BlockStat(block, list(users), values, gram, rows)

    def _weigh(self, s: BlockStat, due: bool, solved: list) -> tuple[Tensor, bool]:
        """(weights or direction, is_direction) for one shared block; the monitor's solve."""
        w = self.weighting_for(s.block, len(s.users))
        out = w(s)
        if due:
            own = w.stationarity(s, self.monitor.tol)
            tol = self.monitor.tol
            solved.append(own or B.solve_gram_block(s.gram(), s.users, "projection", 250, tol))
        self._logs.append(w.logs())
        direction = w.stat == "direction"
        if not direction:
            _check_weights(out, s, self.name)
        return out, direction

    def _backward_params(self, losses: dict[str, Tensor], model: MultiTaskModel, due: bool):
        tasks = list(losses)
        params = B.trainable(model)
        per_task = B.task_param_grads(losses, params)
        done: set[int] = set()
        solved: list[B.BlockSolution] = []
        weights: list[tuple[list[str], Tensor]] = []
        self._logs: list[dict[str, float]] = []
        for blk in self.groups(model, params, tasks):
            done.update(blk.ks)
            if len(blk.users) == 1:
                only = per_task[blk.users[0]]
                for k in blk.ks:
                    if (g := only[k]) is not None:
                        B.add_grad(params[k], g)
                continue
            s = self._stat(
                blk.name, blk.users, losses,
                lambda blk=blk: B.block_gram(per_task, blk.ks, blk.users),
                lambda blk=blk: torch.stack([B.flat(per_task[t], blk.ks, params)
                                             for t in blk.users]),
            )  # fmt: skip
            out, direction = self._weigh(s, due, solved)
            if direction:
                B.assign(out, blk.ks, params)
                continue
            weights.append((blk.users, out))
            self.assign_weighted(
                [params[k] for k in blk.ks],
                {t: tuple(per_task[t][k] for k in blk.ks) for t in blk.users},
                {t: float(a) for t, a in zip(blk.users, out.tolist(), strict=True)},
            )
        B.add_outside_blocks(per_task, params, done)
        if due:
            self.monitor.record(solved)
        return weights

    def _backward_z(self, losses: dict[str, Tensor], model: MultiTaskModel, due: bool):
        tasks = list(losses)
        ends = B.representation_ends(model, tasks, self.at)
        zs = B.shared_outputs(model, ends, tasks, self.name)
        grads = B.task_representation_grads(losses, model, zs)
        replacements: dict[str, tuple[Tensor, Tensor]] = {}
        solved: list[B.BlockSolution] = []
        weights: list[tuple[list[str], Tensor]] = []
        self._logs = []
        for b in ends:
            users = [t for t in tasks if b in grads[t]]
            rows = torch.stack([grads[t][b].flatten() for t in users])
            s = self._stat(
                b, users, losses, lambda rows=rows: gram_matrix(rows), lambda rows=rows: rows
            )
            out, direction = self._weigh(s, due, solved)
            if direction:
                replacements[b] = (zs[b], out.to(rows.dtype).view_as(zs[b]))
                continue
            weights.append((users, out))
            alpha = out.to(rows.device, rows.dtype)
            replacements[b] = (
                zs[b],
                sum(a * grads[t][b] for a, t in zip(alpha, users, strict=True)),
            )
        B.backward_replacing(torch.stack(list(losses.values())).sum(), replacements)
        if due:
            self.monitor.record(solved)
        return weights

    def _log(self, losses: dict[str, Tensor], weights) -> dict[str, float]:
        per: dict[str, list[float]] = {t: [] for t in losses}
        for users, w in weights:
            for t, a in zip(users, w.tolist(), strict=True):
                per[t].append(a)
        log = {f"weight/{t}": sum(v) / len(v) for t, v in per.items() if v}
        keys = {k for entry in self._logs for k in entry}
        for k in sorted(keys):
            values = [entry[k] for entry in self._logs if k in entry]
            log[k] = sum(values) / len(values)
        return log

    # ------------------------------------------------------------------ state

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "on": self.on, "group": self.group}

    def state_dict(self) -> dict:
        return {"blocks": {b: w.state_dict() for b, w in self.weightings.items()}}

    def load_state_dict(self, state: dict) -> None:
        if not state:
            return
        self.weightings = {}
        self._pending = dict(state.get("blocks", {}))


def _takes(factory: Any, name: str) -> bool:
    try:
        return name in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False


def _check_weights(w: Tensor, s: BlockStat, balancer: str) -> None:
    if w.shape != (len(s.users),) or not bool(torch.isfinite(w).all()):
        raise NonFiniteWeights(
            f"balancer={balancer} gave block {s.block!r} the weights {w.tolist()} for tasks "
            f"{s.users}: not one finite weight per task (its Gram matrix was "
            f"{s.gram().tolist()})"
        )
