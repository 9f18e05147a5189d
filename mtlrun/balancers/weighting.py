"""The weighting seam: what one block's task gradients become (METHODS §5).

The per-block driver (:mod:`mtlrun.balancers.per_block`) hands a weighting one
:class:`BlockStat` per shared block and step: the block's users O(i), their losses and, on
demand, their gradients as the (T, T) float64 Gram matrix (never concatenating an embedding
table), as a (T, T) factor R with R Rᵀ = G, or as the (T, d) rows themselves. A weighting
returns one weight per user; the block's update is Σ_t w_t g_t, formed parameter by parameter.
An aggregation that is no linear combination of the rows (GradDrop, ConFIG) returns the
direction itself.

Two families plug in:

* mtlrun's own weightings (:class:`Weighting` subclasses: the min-norm solvers, DB-MTL, IMTL,
  MoCo), which read what ``stat`` names;
* torchjd's weightings and aggregators, used as they are (:func:`adapt`): a Gramian weighting
  reads our Gram matrix, a matrix weighting the rows (or a factor of the Gram matrix where only
  the Gramian matters), an aggregator the rows.

One weighting object serves one block for the whole run, so stateful ones (GradVac's EMA,
Nash-MTL's warm start, MoCo's tracked gradients) keep their state per block.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    from mtlrun.balancers.blocks import BlockSolution

STATS = ("gram", "factor", "rows", "direction")


@dataclass
class BlockStat:
    """One block's view of a step: its users, their losses and their gradients on demand.

    ``losses``: (T,) float64, detached, in the order of ``users``. ``gram()``: (T, T) float64,
    symmetric. ``factor()``: (T, T) float64 R with R Rᵀ = G (eigen-factor, clipped at 0).
    ``rows()``: (T, d) in the gradients' dtype; d is the block's parameter count (or the size of
    its output Z_i for representation gradients).
    """

    block: str
    users: list[str]
    losses: Tensor
    _gram: Callable[[], Tensor]
    _rows: Callable[[], Tensor]
    cache: dict[str, Tensor] = field(default_factory=dict)

    def gram(self) -> Tensor:
        if "gram" not in self.cache:
            self.cache["gram"] = self._gram()
        return self.cache["gram"]

    def rows(self) -> Tensor:
        if "rows" not in self.cache:
            self.cache["rows"] = self._rows()
        return self.cache["rows"]

    def factor(self) -> Tensor:
        """R = V √Λ of G = V Λ Vᵀ: every quantity that depends only on G is the same for R."""
        if "factor" not in self.cache:
            values, vectors = torch.linalg.eigh(self.gram())
            self.cache["factor"] = vectors * values.clamp_min(0).sqrt()
        return self.cache["factor"]


class NonFiniteWeights(ValueError):
    """A weighting gave a block NaN/inf weights (or the wrong number) from finite gradients.

    The trainer stops the run as diverged (its best epoch is still tested and written)."""


class Weighting:
    """mtlrun's weighting protocol: ``__call__(stat) -> (T,) weights`` (float64).

    ``stat`` names what the weighting reads (module docstring); the driver computes nothing
    else. ``logs`` returns floats to average over the blocks into the step's log (e.g. solver
    iterations); ``state_dict``/``load_state_dict`` carry per-block state across a resume.
    """

    stat = "gram"
    # Its state holds vectors of the block's size (tracked gradients): the rows must keep their
    # length from step to step, so balancer.on=z (block outputs vary with the batch) is refused.
    fixed_rows = False

    def __call__(self, s: BlockStat) -> Tensor:
        raise NotImplementedError

    def logs(self) -> dict[str, float]:
        return {}

    def stationarity(self, s: BlockStat, tol: float) -> BlockSolution | None:
        """The block's min-norm solution when the weighting solved it anyway (MGDA), for the
        Pareto-stationarity monitor; None: the driver solves it on ``s.gram()``."""
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None


class Adapted(Weighting):
    """A torchjd weighting or aggregator behind mtlrun's protocol (see :func:`adapt`).

    torchjd's stateful weightings keep their state in plain attributes; it is saved as the
    object's ``__dict__`` entries that hold tensors, numbers or arrays (its nn.Module buffers
    too), so a resumed run continues with the same EMA or warm start.
    """

    def __init__(self, inner: Any, stat: str) -> None:
        from torchjd import Stateful

        self.inner, self.stat = inner, stat
        self.fixed_rows = stat in ("rows", "direction") and isinstance(inner, Stateful)

    def __call__(self, s: BlockStat) -> Tensor:
        stat = {"gram": s.gram, "factor": s.factor}.get(self.stat, s.rows)()
        with warnings.catch_warnings():
            # cvxpy's note that Nash-MTL's problem is not DPP (re-solved each step, as intended)
            warnings.filterwarnings("ignore", message=".*not DPP.*", category=UserWarning)
            return self.inner(stat)  # direction: an aggregator's output, shape (d,)

    def state_dict(self) -> dict[str, Any]:
        attrs = {k: v for k, v in vars(self.inner).items() if _plain_state(k, v)}
        buffers = dict(getattr(self.inner, "_buffers", {}))  # None buffers too (not yet set)
        # copies: torchjd updates some of them in place on the next call
        return copy.deepcopy({"attrs": attrs, "buffers": buffers}) if attrs or buffers else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, v in state.get("attrs", {}).items():
            setattr(self.inner, k, v)
        for k, v in state.get("buffers", {}).items():
            self.inner._buffers[k] = v
        rebuild = getattr(self.inner, "_init_optim_problem", None)
        if state and rebuild is not None:  # Nash-MTL: its cvxpy problem is not state
            rebuild()


def _plain_state(key: str, value: Any) -> bool:
    """A torchjd object's own state: attributes nn.Module does not set, of plain types."""
    if key in _MODULE_KEYS:
        return False
    if isinstance(value, (tuple, list)):  # e.g. a state key (shape, dtype, device)
        return all(_plain_state("", v) for v in value)
    plain = (Tensor, int, float, str, type(None), torch.dtype, torch.device)
    return isinstance(value, plain) or type(value).__module__ == "numpy"


_MODULE_KEYS = frozenset(vars(torch.nn.Module()))


def stat_of(inner: Any) -> str:
    """What a torchjd object reads: Gramian weightings the Gram matrix, matrix weightings the
    rows, aggregators (not weightings) the rows, returning a direction."""
    from torchjd.aggregation import Aggregator
    from torchjd.aggregation._weighting_bases import _GramianWeighting

    if isinstance(inner, _GramianWeighting):
        return "gram"
    if isinstance(inner, Aggregator):
        return "direction"
    return "rows"


def adapt(inner: Any, stat: str = "auto") -> Weighting:
    """Any weighting for the driver: mtlrun's own as they are, torchjd's wrapped.

    A torchjd aggregator that is a weighted combination of rows (``UPGrad``, ``NashMTL``…) is
    used through its weighting, so the driver can form Σ_t w_t g_t without the rows; ``stat``
    overrides what it reads: ``factor`` for matrix weightings that use only M Mᵀ (Nash-MTL),
    ``gram`` for those whose "matrix" is a Gramian (MoDo, SDMGrad), ``direction`` to run the
    aggregator itself on the rows.
    """
    if isinstance(inner, Weighting):
        if stat not in ("auto", inner.stat):
            raise ValueError(_misfit(inner, stat, inner.stat))
        return inner
    if stat not in ("auto", *STATS):
        raise ValueError(f"stat should be one of auto, {', '.join(STATS)}; found {stat!r}")
    from torchjd.aggregation import GramianWeightedAggregator, WeightedAggregator

    if stat != "direction" and isinstance(inner, GramianWeightedAggregator):
        inner = inner.gramian_weighting
    elif stat != "direction" and isinstance(inner, WeightedAggregator):
        inner = inner.weighting
    reads = stat_of(inner)
    fits = {"gram": ("gram",), "direction": ("direction",), "rows": ("rows", "factor", "gram")}
    if stat != "auto" and stat not in fits[reads]:
        raise ValueError(_misfit(inner, stat, reads))
    return Adapted(inner, reads if stat == "auto" else stat)


def _misfit(inner: Any, stat: str, reads: str) -> str:
    what = {"gram": "a Gram matrix", "rows": "the gradient rows", "direction": "the gradient rows "
            "and returns a direction", "factor": "a factor of the Gram matrix"}[reads]  # fmt: skip
    return (
        f"`balancer.stat={stat}` does not fit {type(inner).__name__}, which reads {what}: "
        "leave `balancer.stat=auto`"
    )
