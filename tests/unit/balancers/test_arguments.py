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


@pytest.mark.parametrize("balancer", ["mgda", "mgda_ub", "hybrid"])
def test_composed_config_names_every_bad_key(compose_cfg, balancer: str) -> None:
    cfg = compose_cfg([f"balancer={balancer}", "balancer.solver=bad", "balancer.normalize=bad"])
    with pytest.raises(ConfigError) as info:
        build(cfg.balancer, tasks=TASKS)
    assert str(info.value) == f"invalid configuration:\n  - {SOLVER}\n  - {NORMALIZE}"


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
            eps=-1.0,
            ub="x",
            alpha=-1.0,
            lr=0.0,
            solver="exact",
            normalize="max",
            at="layer",
            max_iter=0,
            kkt_every=-1,
            kkt_tol=0.0,
        ),  # fmt: skip
        [
            "`balancer.eps` should be >= 0. Found `balancer.eps = -1.0`.",
            "`balancer.ub` should be one of auto, z, params. Found `balancer.ub = x`.",
            "`balancer.alpha` should be >= 0. Found `balancer.alpha = -1.0`.",
            "`balancer.lr` should be > 0. Found `balancer.lr = 0.0`.",
            "two-task closed form",
            "`balancer.normalize` should be one of none, l2, loss, loss+",
            "`balancer.at` should be one of segment, block. Found `balancer.at = layer`.",
            "balancer.max_iter",
            "`balancer.kkt_every` should be an integer >= 0. Found `balancer.kkt_every = -1`.",
            "`balancer.kkt_tol` should be > 0. Found `balancer.kkt_tol = 0.0`.",
        ],
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
