"""The per-block driver with every shipped per-block weighting (conf/balancer/*.yaml).

Each is checked against its reference, torchjd's aggregator on the same Jacobian (to 1e-6),
through the whole driver (Gram matrix summed per parameter, Nash-MTL's factor, the update formed
per parameter); on badly scaled gradients; per block (a block used by one task gets that task's
gradient unchanged); across a resume (state round trip); and refused by name without its solver.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from mtlrun.balancers.per_block import PerBlock
from mtlrun.balancers.weighting import BlockStat, NonFiniteWeights, Weighting, adapt
from mtlrun.errors import ConfigError
from mtlrun.model.paths import MultiTaskModel

CONF = Path(__file__).parents[3] / "conf" / "balancer"
PER_BLOCK = sorted(
    p.stem for p in CONF.glob("*.yaml") if "schema/balancer/per_block" in p.read_text()
)
TASKS = ["a", "b", "c"]


def spec(name: str) -> dict:
    node = OmegaConf.to_container(OmegaConf.load(CONF / f"{name}.yaml"))
    assert isinstance(node, dict)
    return node


def balancer(name: str, tasks=TASKS, **over) -> PerBlock:
    node = spec(name)
    factory = instantiate(node["weighting"])
    return PerBlock(tasks, factory, stat=node.get("stat", "auto"), name=name, **over)


def model(double: bool = True) -> MultiTaskModel:
    torch.manual_seed(0)
    blocks = {"trunk": nn.Linear(4, 5), "mid": nn.Linear(5, 3)}
    blocks.update({f"head:{t}": nn.Linear(3, 1) for t in TASKS})
    paths = {t: ["trunk", "mid", f"head:{t}"] for t in TASKS}
    m = MultiTaskModel(blocks, paths)
    return m.double() if double else m


def losses_of(m: MultiTaskModel, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(16, 4, generator=g, dtype=torch.float64)
    targets = torch.randn(16, 3, generator=g, dtype=torch.float64)
    out = m(x)
    scale = {"a": 1.0, "b": 3.0, "c": 0.2}  # unequal gradient norms
    return {t: scale[t] * (out[t][:, 0] - targets[:, k]).pow(2).mean() for k, t in enumerate(TASKS)}


def jacobian(m: MultiTaskModel, losses: dict, block: str) -> torch.Tensor:
    params = list(m.blocks[block].parameters())
    rows = []
    for t in TASKS:
        gs = torch.autograd.grad(losses[t], params, retain_graph=True)
        rows.append(torch.cat([g.flatten() for g in gs]))
    return torch.stack(rows)


def reference(name: str):
    """torchjd's aggregator for the YAML's weighting (None for mtlrun's own weightings)."""
    from torchjd.aggregation import (
        IMTLG,
        Aggregator,
        AlignedMTL,
        CAGrad,
        GramianWeightedAggregator,
        WeightedAggregator,
    )
    from torchjd.aggregation._weighting_bases import _GramianWeighting

    if name == "imtl_g":  # mtlrun's IMTL-G: torchjd's on well-conditioned gradients
        return IMTLG()
    if name == "cagrad":  # torchjd's CAGrad, divided by 1 + c² (the authors' rescale=1)
        return lambda j: CAGrad(c=0.5)(j) / 1.25
    if name == "aligned_mtl":  # torchjd's Aligned-MTL at the authors' scale: × T
        return lambda j: AlignedMTL()(j) * len(TASKS)
    factory = instantiate(spec(name)["weighting"])
    kwargs = {"n_tasks": len(TASKS)} if name == "nash_mtl" else {}
    inner = factory(**kwargs)
    if isinstance(inner, Aggregator):
        return inner
    if isinstance(inner, _GramianWeighting):
        return GramianWeightedAggregator(inner)
    if isinstance(inner, Weighting):
        return None
    if spec(name).get("stat") == "gram":  # a matrix weighting that reads a Gramian (MoDo, SDMGrad)
        return lambda j: inner(j @ j.T) @ j
    return WeightedAggregator(inner)


@pytest.mark.parametrize("name", PER_BLOCK)
def test_driver_matches_torchjd_on_every_shared_block(name: str) -> None:
    if reference(name) is None:
        pytest.skip(f"{name} is mtlrun's own weighting (tested in its own file)")
    m = model()
    losses = losses_of(m)
    jacobians = {block: jacobian(m, losses, block) for block in ("trunk", "mid")}
    torch.manual_seed(7)  # random weightings: the same draws, block after block
    expected = {block: reference(name)(j) for block, j in jacobians.items()}
    torch.manual_seed(7)
    balancer(name).backward(losses, m)
    for block in ("trunk", "mid"):
        got = torch.cat([p.grad.flatten() for p in m.blocks[block].parameters()])
        torch.testing.assert_close(got, expected[block], rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name", PER_BLOCK)
def test_a_block_of_one_task_gets_its_gradient_unchanged(name: str) -> None:
    torch.manual_seed(0)
    blocks = {"shared": nn.Linear(4, 3), "own": nn.Linear(3, 3)}
    blocks.update({f"head:{t}": nn.Linear(3, 1) for t in TASKS})
    paths = {"a": ["shared", "own", "head:a"], "b": ["shared", "head:b"], "c": ["shared", "head:c"]}
    m = MultiTaskModel(blocks, paths).double()
    x = torch.randn(8, 4, dtype=torch.float64)
    out = m(x)
    losses = {t: (3.0 if t == "a" else 1.0) * out[t].pow(2).mean() for t in TASKS}
    own = list(m.blocks["own"].parameters())
    want = torch.autograd.grad(losses["a"], own, retain_graph=True)
    balancer(name).backward(losses, m)
    for p, g in zip(own, want, strict=True):
        assert torch.equal(p.grad, g)


def scaled_rows(case: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    r = torch.randn(3, 12, generator=g, dtype=torch.float64)
    r = r / r.norm(dim=1, keepdim=True)
    if case == "tiny":
        return 1e-5 * r
    if case == "huge":
        return 1e5 * r
    if case == "spread":
        return r * torch.tensor([[1e-6], [1.0], [1e6]], dtype=torch.float64)
    if case == "duplicate":
        return torch.stack([r[0], r[0], r[1]])
    if case == "zero_row":
        return torch.stack([r[0], torch.zeros_like(r[0]), r[1]])
    if case == "opposed":
        return torch.stack([r[0], -r[0], r[1]])
    raise AssertionError(case)


CASES = ["tiny", "huge", "spread", "duplicate", "zero_row", "opposed"]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("name", PER_BLOCK)
def test_badly_scaled_gradients_give_finite_updates(name: str, case: str) -> None:
    rows = scaled_rows(case)
    b = balancer(name)
    w = b.weighting_for("blk", 3)
    gram = rows @ rows.T
    s = BlockStat("blk", TASKS, torch.ones(3, dtype=torch.float64), lambda: gram, lambda: rows)
    torch.manual_seed(0)
    out = w(s)
    update = out if w.stat == "direction" else out.to(rows.dtype) @ rows
    assert update.shape == (12,)
    assert torch.isfinite(update).all(), (name, case, out)
    # By design FairGrad's update scales as 1/||g|| (G w = w^(-1/alpha)) and MoCo's has the
    # length of the losses (it normalises each gradient to its loss), whatever ||g|| is.
    if name not in ("fairgrad", "moco"):
        # the update never grows beyond the sum of the task gradients' norms (times a small factor)
        assert float(update.norm()) <= 10 * float(rows.norm(dim=1).sum()) + 1e-12


class Broken(Weighting):
    """Gives NaN weights from the second step on."""

    calls = 0

    def __call__(self, s):
        Broken.calls += 1
        value = 1.0 if Broken.calls <= 2 else float("nan")
        return torch.full((len(s.users),), value, dtype=torch.float64)


def test_non_finite_weights_stop_the_run_naming_the_block() -> None:
    Broken.calls = 10
    m = model()
    with pytest.raises(NonFiniteWeights, match="gave block 'trunk' the weights"):
        PerBlock(TASKS, Broken, name="broken").backward(losses_of(m), m)


STATEFUL = ["gradvac", "nash_mtl", "excess_mtl", "modo", "sdmgrad", "moco"]


@pytest.mark.parametrize("name", STATEFUL)
def test_state_round_trip_continues_identically(name: str) -> None:
    def step(b: PerBlock, m: MultiTaskModel, seed: int) -> torch.Tensor:
        m.zero_grad(set_to_none=True)
        b.backward(losses_of(m, seed), m)
        return torch.cat([p.grad.flatten() for p in m.blocks["trunk"].parameters()])

    m = model()
    straight = balancer(name)
    for seed in (1, 2):
        step(straight, m, seed)
    saved = straight.state_dict()
    want = step(straight, m, 3)
    resumed = balancer(name)
    resumed.load_state_dict(saved)
    got = step(resumed, m, 3)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    if name in ("gradvac", "excess_mtl", "modo", "moco"):  # the others converge from any warm start
        fresh = step(balancer(name), m, 3)
        assert not torch.allclose(fresh, want, rtol=1e-6, atol=0)  # the state mattered


def test_a_missing_solver_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    import torchjd._mixins

    real = importlib.util.find_spec
    monkeypatch.setattr(
        torchjd._mixins, "find_spec", lambda n, *a: None if n == "quadprog" else real(n, *a)
    )
    with pytest.raises(ConfigError, match=r"balancer=upgrad.*quadprog.*mtlrun\[solvers\]"):
        balancer("upgrad")


def test_a_bad_weighting_argument_names_the_balancer() -> None:
    node = spec("gradvac")
    node["weighting"]["beta"] = 2.0
    with pytest.raises(ConfigError, match="balancer=gradvac"):
        PerBlock(TASKS, instantiate(node["weighting"]), name="gradvac")


def test_stat_is_read_from_the_object() -> None:
    from torchjd.aggregation import NashMTL, UPGrad, UPGradWeighting

    assert adapt(UPGradWeighting()).stat == "gram"
    assert adapt(UPGrad()).stat == "gram"  # a Gramian-weighted aggregator: its weighting
    assert adapt(NashMTL(n_tasks=2), "factor").stat == "factor"
    assert adapt(NashMTL(n_tasks=2), "direction").stat == "direction"


def test_a_run_whose_weights_break_is_written_marked_diverged(compose_cfg, tmp_path: Path) -> None:
    from mtlrun.run import run
    from tests.conftest import TINY_TEXT, TOY_SMALL

    Broken.calls = 0
    cfg = compose_cfg([*TINY_TEXT, *TOY_SMALL, "trainer.progress=false", "trainer.plots=false",
                       "balancer=upgrad", "trainer.max_epochs=2",
                       f"balancer.weighting._target_={__name__}.Broken"])  # fmt: skip
    metrics = run(cfg, tmp_path / "run")
    assert metrics["diverged"]["epoch"] == 1
    assert "gave block" in metrics["diverged"]["note"]
    assert (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.parametrize("name", ["moco", "excess_mtl"])
def test_state_of_the_gradients_size_is_refused_on_block_outputs(name: str) -> None:
    with pytest.raises(ConfigError, match=rf"`balancer={name}` keeps per-block state.*on=params"):
        balancer(name, on="z")
    assert balancer(name).on == "params"
    assert not balancer("upgrad", on="z").weightings  # stateless: fine on block outputs


@pytest.mark.parametrize(("name", "stat"), [("upgrad", "rows"), ("graddrop", "gram"),
                                            ("moco", "gram"), ("pcgrad", "direction")])  # fmt: skip
def test_a_stat_the_weighting_cannot_read_is_refused(name: str, stat: str) -> None:
    with pytest.raises(
        ConfigError, match=rf"`balancer={name}`: `balancer.stat={stat}` does not fit"
    ):
        PerBlock(TASKS, instantiate(spec(name)["weighting"]), stat=stat, name=name)
