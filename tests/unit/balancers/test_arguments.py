"""A balancer's bad arguments are reported together, in one ConfigError, before training."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from mtlrun.balancers.base import BlockBalancer
from mtlrun.balancers.equal import Equal
from mtlrun.balancers.gradnorm import GradNorm
from mtlrun.balancers.hybrid import Hybrid
from mtlrun.balancers.mgda import MGDA
from mtlrun.balancers.uncertainty import Uncertainty
from mtlrun.errors import ConfigError
from mtlrun.run import build

TASKS = ["pos", "chunk", "ner"]
SOLVER = "`balancer.solver` should be one of exact, frank_wolfe, projection. Found `balancer.solver = bad`."
NORMALIZE = (
    "`balancer.normalize` should be one of none, l2, loss, loss+. Found `balancer.normalize = bad`."
)


@pytest.mark.parametrize("balancer", ["mgda", "mgda_ub"])
def test_composed_config_names_every_bad_key(compose_cfg, balancer: str) -> None:
    cfg = compose_cfg([f"balancer={balancer}", "balancer.solver=bad", "balancer.normalize=bad"])
    with pytest.raises(ConfigError) as info:
        build(cfg.balancer, tasks=TASKS)
    assert str(info.value) == f"invalid configuration:\n  - {SOLVER}\n  - {NORMALIZE}"


def test_composed_hybrid_names_its_phase_keys(compose_cfg) -> None:
    """A bad key of a phase is named with the phase's path, beside the hybrid's own."""
    cfg = compose_cfg(
        ["balancer=hybrid", "balancer.eps=-1", "balancer.then.solver=bad",
         "balancer.then.normalize=bad", "balancer.first.alpha=-1"]
    )  # fmt: skip
    with pytest.raises(ConfigError) as info:
        build(cfg.balancer, tasks=TASKS)
    then = [m.replace("`balancer.", "`balancer.then.") for m in (SOLVER, NORMALIZE)]
    assert str(info.value).split("\n  - ")[1:] == [
        "`balancer.eps` should be >= 0. Found `balancer.eps = -1.0`.",
        "`balancer.first.alpha` should be >= 0. Found `balancer.first.alpha = -1.0`.",
        *then,
    ]


BAD: dict[str, tuple[Callable[[], BlockBalancer], list[str]]] = {
    "equal": (
        lambda: Equal(TASKS, weights={"foo": 1.0, "ner": -1.0}, kkt_every=-1),
        ["balancer.weights` has keys ['foo']", "{'ner': -1.0}", "balancer.kkt_every"],
    ),
    "uncertainty": (
        lambda: Uncertainty(TASKS, lr=0.0, loss_type="poisson", kkt_tol=0.0),
        ["balancer.lr", "balancer.loss_type", "balancer.kkt_tol"],
    ),
    "gradnorm": (
        lambda: GradNorm(TASKS, on="w", alpha=-1.0, lr=0.0, at="layer"),
        ["balancer.on", "balancer.alpha", "balancer.lr", "balancer.at"],
    ),
    "mgda": (
        lambda: MGDA(TASKS, solver="exact", normalize="max", on="w", at="layer", max_iter=0),
        [
            "`balancer.solver=exact` is the two-task closed form; this run has 3 tasks",
            "balancer.normalize",
            "balancer.on",
            "balancer.at",
            "`balancer.max_iter` should be an integer >= 1. Found `balancer.max_iter = 0`.",
        ],
    ),
    # ub=auto builds its two phases at the first step: their keys are checked up front too.
    "hybrid": (
        lambda: Hybrid(
            TASKS,
            first={
                "_target_": "mtlrun.balancers.gradnorm.GradNorm",
                "alpha": -1.0,
                "lr": 0.0,
                "at": "layer",
                "kkt_every": -1,
            },
            then={
                "_target_": "mtlrun.balancers.mgda.MGDA",
                "solver": "exact",
                "normalize": "max",
                "max_iter": 0,
                "kkt_tol": 0.0,
            },
            eps=-1.0,
            ub="x",
        ),  # fmt: skip
        [
            "`balancer.eps` should be >= 0. Found `balancer.eps = -1.0`.",
            "`balancer.ub` should be one of auto, z, params, each. Found `balancer.ub = x`.",
            "`balancer.first.alpha` should be >= 0. Found `balancer.first.alpha = -1.0`.",
            "`balancer.first.lr` should be > 0. Found `balancer.first.lr = 0.0`.",
            "`balancer.first.at` should be one of segment, block. Found `balancer.first.at = layer`.",
            "`balancer.first.kkt_every` should be an integer >= 0. Found `balancer.first.kkt_every = -1`.",
            "two-task closed form",
            "`balancer.then.normalize` should be one of none, l2, loss, loss+",
            "balancer.then.max_iter",
            "`balancer.then.kkt_tol` should be > 0. Found `balancer.then.kkt_tol = 0.0`.",
        ],
    ),
    "hybrid phase": (
        lambda: Hybrid(TASKS, first={"alpha": 2.0}, then="mgda"),
        ["`balancer.first` should be a balancer config", "`balancer.then` should be"],
    ),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_every_problem_of_a_balancer_is_in_one_error(name: str) -> None:
    make, fragments = BAD[name]
    with pytest.raises(ConfigError) as info:
        make()
    text = str(info.value)
    assert text.startswith("invalid configuration:\n  - ")
    assert [f for f in fragments if f not in text] == []
    assert text.count("\n  - ") == len(fragments)  # each problem once (hybrid shares `at`)
