"""Per-block gradient machinery shared by every balancer (seed 001 §4, METHODS §5).

Every balancer acts per block i over O(i), the tasks whose loss depends on θ_i. Two gradient
spaces exist:

* **parameter gradients** ∇_{θ_i} L^t (seed 001 eq. 4.5): one backward pass per task, valid for
  every architecture and data set;
* **representation gradients** ∇_{Z_i} L^t at a block's output Z_i (eq. 4.6–4.7, MGDA-UB and
  GradNorm on z, eq. 4.11): cheap (each task back-propagates only through the blocks after Z_i),
  but the upper bound 4.6 needs one Z_i that every task of O(i) reads. That fails when tasks see
  different inputs (mnist3: one input stream per task) or different weights (per-task masks);
  :func:`shared_outputs` refuses both with a clear error.

Representation balancers work at **segment ends**: a maximal chain of blocks with the same O(i)
shares its last block's Z (for hard sharing this is Sener & Koltun's single Z); with
``at="block"`` every shared block's output is its own Z (one more backward per task through the
rest of the chain). The combined direction Σ_t α_t^i ∇_{Z_i} L^t replaces the gradient arriving at
Z_i during one ordinary backward pass (:func:`backward_replacing`), so θ_i receives
(∂Z_i/∂θ_i)ᵀ Σ_t α_t^i ∇_{Z_i} L^t, and the blocks before it receive the chain rule of that.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from mtlrun.balancers.min_norm import MinNormResult, is_pareto_stationary, min_norm
from mtlrun.errors import ConfigError
from mtlrun.model.paths import MultiTaskModel

GRADIENT_SPACES = ("params", "z")
REPRESENTATION_AT = ("segment", "block")


def representation(output: Any) -> Tensor:
    """The tensor part of a block output (a Tensor, or a state such as SeqState with ``.x``)."""
    if isinstance(output, Tensor):
        return output
    x = getattr(output, "x", None)
    if isinstance(x, Tensor):
        return x
    raise TypeError(f"block output of type {type(output).__name__} has no tensor to balance on")


# ---------------------------------------------------------------------- parameter gradients


@dataclass
class ParamBlock:
    """One block's trainable parameters (indices into the balancer's parameter list) and O(i)."""

    name: str
    ks: list[int]
    users: list[str]


def trainable(model: MultiTaskModel) -> list[nn.Parameter]:
    """Every parameter with a gradient: θ, and search parameters such as sparse_ste's π
    (outside the blocks, so they get the plain sum of the task gradients)."""
    return [p for p in model.parameters() if p.requires_grad]


def param_blocks(
    model: MultiTaskModel, params: Sequence[Tensor], tasks: Sequence[str]
) -> list[ParamBlock]:
    """Every block with trainable parameters, its parameter indices and its users among ``tasks``."""
    index = {id(p): k for k, p in enumerate(params)}
    out = []
    for name, block in model.blocks.items():
        ks = [index[id(p)] for p in block.parameters() if id(p) in index]
        users = [t for t in model.loss_users(name) if t in tasks]
        if ks and users:
            out.append(ParamBlock(name, ks, users))
    return out


def task_param_grads(
    losses: Mapping[str, Tensor], params: Sequence[Tensor]
) -> dict[str, tuple[Tensor | None, ...]]:
    """∇_θ L^t for every task (one backward pass each; the graph is kept)."""
    return {
        t: torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        for t, loss in losses.items()
    }


def flat(grads: Sequence[Tensor | None], ks: Sequence[int], params: Sequence[Tensor]) -> Tensor:
    """The block's gradient as one vector (missing gradients are zeros)."""
    pieces = []
    for k in ks:
        g = grads[k]
        pieces.append((g if g is not None else torch.zeros_like(params[k])).flatten())
    return torch.cat(pieces)


def assign(vector: Tensor, ks: Sequence[int], params: Sequence[Tensor]) -> None:
    """Add a flat block gradient onto the block's parameters' ``.grad``."""
    start = 0
    for k in ks:
        n = params[k].numel()
        add_grad(params[k], vector[start : start + n].view_as(params[k]))
        start += n


def add_grad(p: Tensor, g: Tensor) -> None:
    """Accumulate: a regulariser may already have written its gradient this step."""
    p.grad = g.detach().clone() if p.grad is None else p.grad + g.detach()


def add_outside_blocks(
    per_task: Mapping[str, Sequence[Tensor | None]],
    params: Sequence[Tensor],
    done: set[int],
    weights: Mapping[str, float] | None = None,
) -> None:
    """Parameters outside every block (cross-stitch units): the (weighted) sum of the tasks."""
    for k, p in enumerate(params):
        if k in done:
            continue
        gs: list[Tensor] = []
        for t, grads in per_task.items():
            g = grads[k]
            if g is not None:
                gs.append((weights[t] if weights else 1.0) * g)
        if gs:
            add_grad(p, torch.stack(gs).sum(0))


# ---------------------------------------------------------------------- representation gradients


def representation_ends(model: MultiTaskModel, tasks: Sequence[str], at: str) -> list[str]:
    """The shared blocks whose output Z is balanced on (module docstring), in path order."""
    active = set(tasks)
    users = {b: [t for t in model.loss_users(b) if t in active] for b in model.blocks}
    order: dict[str, None] = {}
    for t in tasks:
        for b in model.paths[t]:
            order[b] = None
    ends = []
    for b in order:
        if len(users[b]) < 2:
            continue
        if at == "block":
            ends.append(b)
            continue
        if any(b not in model.paths[t] for t in users[b]):  # read off the paths (cross-stitch)
            ends.append(b)
            continue
        following = {_next_block(model.paths[t], b) for t in users[b]}
        nxt = next(iter(following)) if len(following) == 1 else None
        if nxt is None or set(users[nxt]) != set(users[b]):
            ends.append(b)
    return ends


def _next_block(path: Sequence[str], block: str) -> str | None:
    k = path.index(block)
    return path[k + 1] if k + 1 < len(path) else None


def shared_outputs(
    model: MultiTaskModel, ends: Sequence[str], tasks: Sequence[str], balancer: str
) -> dict[str, Tensor]:
    """Z_i for every end, checked to be one tensor that all its users read.

    Raises ConfigError when tasks see different inputs or weights there (seed 001 eq. 4.6 needs
    one Z_i); the message names the block and the ways on.
    """
    taps = model.taps or {}
    out: dict[str, Tensor] = {}
    for b in ends:
        users = [t for t in model.loss_users(b) if t in tasks]
        seen = taps.get(b, {})
        missing = [t for t in users if t not in seen]
        if missing:
            raise ConfigError(
                f"`balancer={balancer}` balances on block outputs, but block {b!r} recorded no "
                f"output for task(s) {missing} (this method's forward bypasses the block paths). "
                "Use a balancer on parameter gradients (balancer=mgda, balancer.on=params)."
            )
        zs = {id(representation(seen[t])) for t in users}
        if len(zs) > 1:
            raise ConfigError(
                f"`balancer={balancer}` needs one shared representation Z per block (seed 001 eq. "
                f"4.6), but tasks {users} get different outputs of block {b!r}: they read "
                "different inputs (one input stream per task, as in data=mnist3) or different "
                "weights (per-task masks). Use parameter gradients instead: balancer=mgda, "
                "balancer=gradnorm balancer.on=params, or balancer=hybrid balancer.ub=params."
            )
        out[b] = representation(seen[users[0]])
    return out


def task_representation_grads(
    losses: Mapping[str, Tensor], model: MultiTaskModel, zs: Mapping[str, Tensor]
) -> dict[str, dict[str, Tensor]]:
    """∇_{Z_i} L^t for every end i on task t's path (activation gradients only)."""
    out: dict[str, dict[str, Tensor]] = {}
    for t, loss in losses.items():
        mine = [b for b in zs if t in model.loss_users(b)]
        if not mine:
            out[t] = {}
            continue
        grads = torch.autograd.grad(
            loss, [zs[b] for b in mine], retain_graph=True, allow_unused=True
        )
        out[t] = {
            b: (g if g is not None else torch.zeros_like(zs[b]))
            for b, g in zip(mine, grads, strict=True)
        }
    return out


def backward_replacing(total: Tensor, replacements: Mapping[str, tuple[Tensor, Tensor]]) -> None:
    """Back-propagate ``total`` with the gradient at each Z replaced by a given direction.

    ``replacements[block] = (Z, v)``. The hook swaps the gradient arriving at Z for v, so
    everything before Z sees v's chain rule; everything after Z gets ``total``'s own gradient.
    """
    handles = []
    for z, v in replacements.values():
        handles.append(z.register_hook(_constant(v)))
    try:
        total.backward()
    finally:
        for h in handles:
            h.remove()


def _constant(v: Tensor) -> Callable[[Tensor], Tensor]:
    def hook(grad: Tensor) -> Tensor:
        return v.to(grad.dtype)

    return hook


# ---------------------------------------------------------------------- min-norm per block


@dataclass
class BlockSolution:
    """α for one block's users, the solver's result and whether the block is Pareto-stationary."""

    users: list[str]
    alpha: Tensor  # (|O(i)|,) float64 on the CPU
    result: MinNormResult | None
    stationary: bool
    ratio: float = 1.0  # ||Σ_t α_t g_t|| / max_t ||g_t||: 0 at a Pareto-stationary point


def solve_block(
    rows: Tensor,
    users: Sequence[str],
    solver: str,
    max_iter: int,
    kkt_tol: float,
    scale: Callable[[Tensor], Tensor] | None = None,
) -> BlockSolution:
    """The min-norm point of one block's task gradients (rows), after optional scaling."""
    if len(users) == 1:
        return BlockSolution(list(users), torch.ones(1, dtype=torch.float64), None, False)
    scaled = scale(rows.double()) if scale is not None else rows.double()
    result = min_norm(scaled, solver=solver, max_iter=max_iter)
    biggest = float((scaled.norm(dim=1) ** 2).max())
    stationary = is_pareto_stationary(result, biggest, kkt_tol)
    ratio = (max(result.norm_sq, 0.0) / biggest) ** 0.5 if biggest > 0 else 0.0
    return BlockSolution(list(users), result.weights.cpu(), result, stationary, ratio)


# ---------------------------------------------------------------------- the KKT monitor


class StationarityMonitor:
    """Share of checked mini-batches that were Pareto-stationary (seed 001 def. 4.3, Fig. 4).

    A mini-batch is stationary when every shared block's min-norm point is ≈ 0:
    ||Σ_t α_t g_t|| ≤ tol · max_t ||g_t||. ``every``: check one mini-batch in ``every`` (1 = all;
    0 = never, the column is left out). Balancers that solve the min-norm problem anyway check
    every mini-batch for free. Besides the share, ``kkt/ratio`` is the mean over checked
    mini-batches of the largest ||Σ_t α_t g_t|| / max_t ||g_t|| over their shared blocks, the
    continuous quantity the threshold is applied to (it falls as training nears stationarity).
    """

    def __init__(self, every: int, tol: float) -> None:
        if every < 0:
            raise ConfigError(
                f"`balancer.kkt_every` should be an integer >= 0. Found `balancer.kkt_every = {every}`."
            )
        if not tol > 0:
            raise ConfigError(
                f"`balancer.kkt_tol` should be > 0. Found `balancer.kkt_tol = {tol}`."
            )
        self.every, self.tol = every, tol
        self.step, self.checked, self.stationary, self.ratio = 0, 0, 0, 0.0

    def due(self) -> bool:
        """Advance one mini-batch; True when this one is to be checked."""
        self.step += 1
        return self.every > 0 and (self.step - 1) % self.every == 0

    def record(self, solutions: Iterable[BlockSolution]) -> None:
        shared = [s for s in solutions if s.result is not None]
        if not shared:
            return
        self.checked += 1
        self.stationary += int(all(s.stationary for s in shared))
        self.ratio += max(s.ratio for s in shared)

    def epoch_log(self) -> dict[str, float]:
        """``kkt/stationary`` and ``kkt/checked`` for the epoch, then reset."""
        out = {}
        if self.checked:
            out = {
                "kkt/stationary": self.stationary / self.checked,
                "kkt/ratio": self.ratio / self.checked,
                "kkt/checked": float(self.checked),
            }
        # The schedule restarts every epoch, so a resumed run checks the same mini-batches.
        self.step, self.checked, self.stationary, self.ratio = 0, 0, 0, 0.0
        return out


def block_gram(
    per_task: Mapping[str, Sequence[Tensor | None]], ks: Sequence[int], users: Sequence[str]
) -> Tensor:
    """The (T, T) float64 Gram matrix of the users' gradients on one block's parameters.

    Summed parameter by parameter, so the block's gradients are never concatenated; of a 2-D
    parameter only the rows some task's gradient touches are read in float64 (an embedding
    table's gradient is zero outside the batch's words). Equal to ``gram_matrix`` of the
    concatenated rows up to float64 rounding; all zeros when no task has a gradient there.
    """
    n = len(users)
    present = [g for t in users for k in ks if (g := per_task[t][k]) is not None]
    device = present[0].device if present else torch.device("cpu")
    gram = torch.zeros(n, n, dtype=torch.float64, device=device)
    for k in ks:
        grads = [per_task[t][k] for t in users]
        present = [g for g in grads if g is not None]
        if not present:
            continue
        zero = torch.zeros_like(present[0])
        rows = torch.stack([g if g is not None else zero for g in grads])  # (T, *shape)
        if rows.dim() == 3 and rows.shape[1] > 1024:  # (T, rows, cols): keep touched rows only
            touched = rows.ne(0).any(dim=2).any(dim=0).nonzero().squeeze(1)
            rows = rows.index_select(1, touched)
        flat_rows = rows.reshape(n, -1).double()
        gram += flat_rows @ flat_rows.T
    return 0.5 * (gram + gram.T)


def solve_gram_block(
    gram: Tensor, users: Sequence[str], solver: str, max_iter: int, kkt_tol: float
) -> BlockSolution:
    """:func:`solve_block` from the block's Gram matrix instead of its gradient rows."""
    result = min_norm(gram, solver=solver, gram=True, max_iter=max_iter)
    biggest = float(gram.diagonal().max())
    stationary = is_pareto_stationary(result, biggest, kkt_tol)
    ratio = (max(result.norm_sq, 0.0) / biggest) ** 0.5 if biggest > 0 else 0.0
    return BlockSolution(list(users), result.weights.cpu(), result, stationary, ratio)


def check_param_stationarity(
    per_task: Mapping[str, Sequence[Tensor | None]],
    blocks: Sequence[ParamBlock],
    params: Sequence[Tensor],
    tol: float,
) -> list[BlockSolution]:
    """Min-norm per shared block on parameter gradients (projection solver), for the monitor.

    Works on each block's Gram matrix (:func:`block_gram`): the same solution as on the
    concatenated gradient rows, without copying the block's gradients.
    """
    out = []
    for blk in blocks:
        if len(blk.users) < 2:
            continue
        gram = block_gram(per_task, blk.ks, blk.users)
        out.append(solve_gram_block(gram, blk.users, "projection", 250, tol))
    return out


def check_representation_stationarity(
    grads: Mapping[str, Mapping[str, Tensor]],
    model: MultiTaskModel,
    ends: Sequence[str],
    tol: float,
) -> list[BlockSolution]:
    """Min-norm per end on representation gradients (projection solver), for the monitor."""
    out = []
    for b in ends:
        users = [t for t in grads if b in grads[t]]
        if len(users) < 2:
            continue
        rows = torch.stack([grads[t][b].flatten() for t in users])
        out.append(solve_block(rows, users, "projection", 250, tol))
    return out
