"""Per-block balancers: trees with different task sets, representation gradients, GradNorm,
uncertainty and the hybrid switch, each against the equations of seed 001 §4."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mtlrun.balancers import blocks as B
from mtlrun.balancers.gradnorm import GradNorm
from mtlrun.balancers.hybrid import Hybrid
from mtlrun.balancers.mgda import MGDA
from mtlrun.balancers.min_norm import min_norm
from mtlrun.balancers.uncertainty import Uncertainty
from mtlrun.config.validate import validate
from mtlrun.errors import ConfigError
from mtlrun.model.paths import MultiTaskModel


def tree_model(seed: int = 0) -> MultiTaskModel:
    """root -> {mid -> {head:a, head:b}, head:c}: O(root) = {a, b, c}, O(mid) = {a, b}."""
    torch.manual_seed(seed)
    blocks = {
        "root": nn.Sequential(nn.Linear(4, 6), nn.Tanh()),
        "mid": nn.Sequential(nn.Linear(6, 5), nn.Tanh()),
        "head:a": nn.Linear(5, 1),
        "head:b": nn.Linear(5, 1),
        "head:c": nn.Linear(6, 1),
    }
    paths = {
        "a": ["root", "mid", "head:a"],
        "b": ["root", "mid", "head:b"],
        "c": ["root", "head:c"],
    }
    return MultiTaskModel(blocks, paths)


def tree_losses(model: MultiTaskModel, x: torch.Tensor) -> dict[str, torch.Tensor]:
    out = model(x)
    return {
        "a": (out["a"] - 1).pow(2).mean(),
        "b": (out["b"] + 2).pow(2).mean(),
        "c": (out["c"] - 0.5).pow(2).mean(),
    }


def block_grads(loss: torch.Tensor, module: nn.Module) -> torch.Tensor:
    gs = torch.autograd.grad(loss, list(module.parameters()), retain_graph=True)
    return torch.cat([g.flatten() for g in gs]).double()


# ---------------------------------------------------------------------- per block on a tree


def test_tree_blocks_get_their_own_min_norm_weights() -> None:
    model = tree_model()
    losses = tree_losses(model, torch.randn(16, 4, generator=torch.Generator().manual_seed(1)))
    root, mid = model.blocks["root"], model.blocks["mid"]
    g_root = torch.stack([block_grads(losses[t], root) for t in "abc"])
    g_mid = torch.stack([block_grads(losses[t], mid) for t in "ab"])
    a_root = min_norm(g_root, solver="projection", max_iter=2000, tol=1e-14).weights
    a_mid = min_norm(g_mid, solver="projection", max_iter=2000, tol=1e-14).weights
    head_c = torch.autograd.grad(losses["c"], model.blocks["head:c"].weight, retain_graph=True)[0]

    MGDA(["a", "b", "c"], solver="projection", max_iter=2000).backward(losses, model)

    got_root = torch.cat([p.grad.flatten() for p in root.parameters()]).double()
    got_mid = torch.cat([p.grad.flatten() for p in mid.parameters()]).double()
    assert torch.allclose(got_root, a_root @ g_root, atol=1e-5)
    assert torch.allclose(got_mid, a_mid @ g_mid, atol=1e-5)
    assert torch.allclose(model.blocks["head:c"].weight.grad, head_c)  # one user: its own
    # The two blocks solve different problems over different task sets: a's weight differs.
    assert abs(float(a_root[0]) - float(a_mid[0])) > 1e-3


def test_representation_ends_follow_the_task_sets() -> None:
    model = tree_model()
    assert B.representation_ends(model, ["a", "b", "c"], "segment") == ["root", "mid"]
    assert B.representation_ends(model, ["a", "c"], "segment") == ["root"]  # mid has one user
    chain = MultiTaskModel(
        {"b1": nn.Linear(3, 3), "b2": nn.Linear(3, 3), "head:a": nn.Linear(3, 1),
         "head:b": nn.Linear(3, 1)},
        {"a": ["b1", "b2", "head:a"], "b": ["b1", "b2", "head:b"]},
    )  # fmt: skip
    assert B.representation_ends(chain, ["a", "b"], "segment") == ["b2"]
    assert B.representation_ends(chain, ["a", "b"], "block") == ["b1", "b2"]


def test_mgda_ub_on_a_tree_uses_each_blocks_output() -> None:
    """θ_i gets (∂Z_i/∂θ_i)ᵀ Σ α_t^i ∇_{Z_i} L^t with α^i the min-norm point at Z_i (eq. 4.7)."""
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(2))
    model = tree_model()
    model.taps = {}
    losses = tree_losses(model, x)
    z_root = model.taps["root"]["a"]
    z_mid = model.taps["mid"]["a"]
    g_root = [torch.autograd.grad(losses[t], z_root, retain_graph=True)[0] for t in "abc"]
    g_mid = [torch.autograd.grad(losses[t], z_mid, retain_graph=True)[0] for t in "ab"]
    a_root = min_norm(torch.stack([g.flatten() for g in g_root]), max_iter=2000, tol=1e-14).weights
    a_mid = min_norm(torch.stack([g.flatten() for g in g_mid]), max_iter=2000, tol=1e-14).weights
    v_mid = sum(float(a) * g for a, g in zip(a_mid, g_mid, strict=True))
    v_root = sum(float(a) * g for a, g in zip(a_root, g_root, strict=True))
    mid_params = list(model.blocks["mid"].parameters())
    root_params = list(model.blocks["root"].parameters())
    want_mid = torch.autograd.grad(z_mid, mid_params, v_mid, retain_graph=True)
    want_root = torch.autograd.grad(z_root, root_params, v_root, retain_graph=True)
    want_head = torch.autograd.grad(losses["a"], model.blocks["head:a"].weight, retain_graph=True)

    balancer = MGDA(["a", "b", "c"], on="z", max_iter=2000, name="mgda_ub")
    log = balancer.backward(losses, model)

    for p, w in zip(mid_params + root_params, want_mid + want_root, strict=True):
        assert torch.allclose(p.grad, w, atol=1e-5)
    assert torch.allclose(model.blocks["head:a"].weight.grad, want_head[0])
    assert log["weight/c"] == pytest.approx(float(a_root[2]), abs=1e-6)  # c only at the root
    assert "kkt/stationary" in balancer.epoch_end(0, {})


def test_mgda_ub_segment_equals_sener_koltun_on_a_chain() -> None:
    """Hard sharing with two shared blocks: one Z (the chain's end) for the whole encoder."""
    torch.manual_seed(3)
    blocks = {
        "b1": nn.Sequential(nn.Linear(3, 4), nn.Tanh()),
        "b2": nn.Sequential(nn.Linear(4, 4), nn.Tanh()),
        "head:a": nn.Linear(4, 1),
        "head:b": nn.Linear(4, 1),
    }
    model = MultiTaskModel(blocks, {"a": ["b1", "b2", "head:a"], "b": ["b1", "b2", "head:b"]})
    model.taps = {}
    out = model(torch.randn(6, 3))
    losses = {"a": out["a"].pow(2).mean(), "b": (out["b"] - 3).pow(2).mean()}
    z = model.taps["b2"]["a"]
    ga, gb = (torch.autograd.grad(losses[t], z, retain_graph=True)[0] for t in "ab")
    alpha = min_norm(torch.stack([ga.flatten(), gb.flatten()]), solver="exact").weights
    weighted = float(alpha[0]) * losses["a"] + float(alpha[1]) * losses["b"]
    want = torch.autograd.grad(weighted, list(blocks["b1"].parameters()), retain_graph=True)
    MGDA(["a", "b"], solver="exact", on="z").backward(losses, model)
    for p, w in zip(blocks["b1"].parameters(), want, strict=True):
        assert torch.allclose(p.grad, w, atol=1e-6)


def test_representation_gradients_refuse_separate_inputs() -> None:
    model = tree_model()
    model.taps = {}
    # One input stream per task, as mnist3: the root's outputs differ between tasks.
    losses = {t: model(torch.randn(4, 4), tasks=[t])[t].pow(2).mean() for t in "abc"}
    with pytest.raises(ConfigError, match="one shared representation Z per block"):
        MGDA(["a", "b", "c"], on="z", name="mgda_ub").backward(losses, model)


def test_mnist3_refuses_representation_balancers(compose_cfg) -> None:
    for overrides, key in (
        (["balancer=mgda_ub"], "balancer=mgda_ub"),
        (["balancer=gradnorm", "balancer.on=z"], "balancer.on=z"),
        (["balancer=hybrid", "balancer.ub=z"], "balancer.ub=z"),
        (["balancer=hybrid", "balancer.ub=each", "balancer@balancer.then=mgda_ub"],
         "balancer.then.on=z"),
    ):  # fmt: skip
        cfg = compose_cfg(["data=mnist3", *overrides])
        with pytest.raises(ConfigError, match="data=mnist3 gives each task its own input"):
            validate(cfg)
        assert key in str(pytest.raises(ConfigError, validate, cfg).value)
    validate(compose_cfg(["data=mnist3", "balancer=hybrid"]))  # auto: parameter gradients
    validate(compose_cfg(["data=mnist3", "balancer=hybrid", "balancer@balancer.then=mgda_ub"]))
    validate(compose_cfg(["data=mnist3", "balancer=gradnorm"]))
    with pytest.raises(ConfigError, match="method=sparse_ste gives each task its own"):
        validate(compose_cfg(["method=sparse_ste", "balancer=mgda_ub"]))


# ---------------------------------------------------------------------- GradNorm


def test_gradnorm_weight_gradient_hand_computed() -> None:
    """G = c·n, Ḡ = mean G, r = L̃ / mean L̃, target = Ḡ r^α, ∂/∂c = sign(G − target)·n."""
    balancer = GradNorm(["a", "b"], alpha=1.0)
    balancer.initial = {"a": 2.0, "b": 1.0}
    losses = {"a": torch.tensor(2.0), "b": torch.tensor(0.5)}  # L̃ = (1, 0.5), r = (4/3, 2/3)
    c = torch.tensor([1.0, 1.0])
    grad, value = balancer.weight_gradient(c, [(["a", "b"], torch.tensor([1.0, 3.0]))], losses)
    # G = (1, 3), Ḡ = 2, target = (8/3, 4/3): a below its target, b above.
    assert grad.tolist() == pytest.approx([-1.0, 3.0])
    assert value == pytest.approx(abs(1 - 8 / 3) + abs(3 - 4 / 3))


def test_gradnorm_moves_weight_towards_the_weaker_task() -> None:
    """Two tasks on one shared layer: b's gradient is 3x a's at equal training rates, so the
    L1 gradient loss lowers c_b, raises c_a, and the weights stay summed to T = 2."""
    torch.manual_seed(0)
    trunk = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        trunk.weight.copy_(torch.eye(2))
    model = MultiTaskModel(
        {"trunk": trunk, "head:a": nn.Identity(), "head:b": nn.Identity()},
        {"a": ["trunk", "head:a"], "b": ["trunk", "head:b"]},
    )
    balancer = GradNorm(["a", "b"], on="params", alpha=1.5, lr=0.05)
    x = torch.tensor([[1.0, 1.0]])
    history = []
    for _ in range(5):
        for p in model.parameters():
            p.grad = None
        out = model(x)
        losses = {"a": out["a"][:, 0].sum(), "b": 3 * out["b"][:, 1].sum()}  # linear: rates equal
        log = balancer.backward(losses, model)
        history.append((log["weight/a"], log["weight/b"]))
    c = balancer.weights.detach()
    assert float(c.sum()) == pytest.approx(2.0)
    assert float(c[0]) > 1.0 > float(c[1])
    assert all(h[0] < n[0] for h, n in zip(history, history[1:], strict=False))
    # The model's gradient is Σ c_t ∇L_t with the weights of that step (before their update).
    ca, cb = history[-1]
    assert torch.allclose(trunk.weight.grad, torch.tensor([[ca, ca], [3 * cb, 3 * cb]]))


def test_gradnorm_on_z_matches_on_params_for_a_linear_head() -> None:
    """With identity heads, ||∇_Z L|| is the representation norm of eq. 4.11; both run."""
    model = tree_model()
    for on in ("params", "z"):
        balancer = GradNorm(["a", "b", "c"], on=on)
        model.taps = {} if on == "z" else None
        losses = tree_losses(model, torch.randn(8, 4))
        log = balancer.backward(losses, model)
        assert set(log) >= {"weight/a", "weight/b", "weight/c", "gradnorm/loss"}
        assert all(p.grad is not None for p in model.blocks["root"].parameters())
        model.zero_grad(set_to_none=True)


# ---------------------------------------------------------------------- uncertainty


def test_uncertainty_weights_follow_the_log_variance_gradient() -> None:
    """Regression form: ∂/∂s (½e^{−s}L + ½s) = ½(1 − e^{−s}L): s rises for L > 1, falls for
    L < 1 (both forms by hand: test_uncertainty.py)."""
    lin = nn.Linear(1, 1, bias=False)
    model = MultiTaskModel(
        {"t": lin, "head:a": nn.Identity(), "head:b": nn.Identity()},
        {"a": ["t", "head:a"], "b": ["t", "head:b"]},
    )
    balancer = Uncertainty(["a", "b"], lr=0.1, loss_type="regression", kkt_every=0)
    out = model(torch.ones(1, 1))
    w = float(lin.weight.detach())
    losses = {"a": 4.0 * out["a"].sum() / w, "b": 0.25 * out["b"].sum() / w}  # L = 4 and 0.25
    log = balancer.backward(losses, model)
    assert log["weight/a"] == log["weight/b"] == 0.5  # the weights that multiplied the losses
    # One Adam step of size lr against the sign of ½(1 − e^{−s}L) from s = 0.
    assert balancer.log_var.detach().tolist() == pytest.approx([0.1, -0.1], abs=1e-6)
    # The model's gradient used that step's weights ½e^{−0} = ½: ½·(4 + 0.25)/w.
    assert math.isclose(lin.weight.grad.item(), 0.5 * 4.25 / w, rel_tol=1e-6)


# ---------------------------------------------------------------------- hybrid


def test_hybrid_switches_when_a_task_stops_improving() -> None:
    balancer = Hybrid(["a", "b"], eps=0.01, ub="params")
    assert balancer.epoch_end(0, {"a": 1.0, "b": 1.0})["hybrid/phase"] == 0.0
    assert balancer.epoch_end(1, {"a": 0.8, "b": 0.9})["hybrid/phase"] == 0.0
    assert balancer.phase == 0
    assert balancer.epoch_end(2, {"a": 0.6, "b": 0.895})["hybrid/phase"] == 0.0  # b: 0.005
    assert balancer.phase == 1 and balancer.switch_epoch == 4
    assert balancer.epoch_end(3, {"a": 0.5, "b": 0.8})["hybrid/phase"] == 1.0
    assert balancer.summary() == {
        "name": "hybrid", "switch_epoch": 4, "ub": "params", "first": "gradnorm", "then": "mgda"
    }  # fmt: skip
    restored = Hybrid(["a", "b"], eps=0.01, ub="params")
    restored.load_state_dict(balancer.state_dict())
    assert (restored.phase, restored.switch_epoch) == (1, 4)


def test_hybrid_auto_picks_the_gradient_space() -> None:
    model = tree_model()
    shared = Hybrid(["a", "b", "c"])
    model.taps = {}
    shared.backward(tree_losses(model, torch.randn(4, 4)), model)
    assert shared.space == "z"
    separate = Hybrid(["a", "b", "c"])
    model.taps = {}
    model.zero_grad(set_to_none=True)
    losses = {t: model(torch.randn(4, 4), tasks=[t])[t].pow(2).mean() for t in "abc"}
    separate.backward(losses, model)
    assert separate.space == "params"
    assert all(p.grad is not None for p in model.blocks["root"].parameters())


def _phase_spec(compose_cfg, name: str) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(compose_cfg([f"balancer={name}"]).balancer, resolve=True)


def test_hybrid_composes_any_two_balancers(compose_cfg) -> None:
    """first=dwa (loss-based), then=upgrad (a torchjd weighting per block): each phase forms the
    gradient its own balancer forms on its own, and the switch hands over between them."""
    from mtlrun.run import build

    first, then = _phase_spec(compose_cfg, "dwa"), _phase_spec(compose_cfg, "upgrad")
    hybrid = Hybrid(["a", "b", "c"], first=first, then=then, eps=0.01, ub="params")
    model, x = tree_model(), torch.randn(16, 4, generator=torch.Generator().manual_seed(3))
    for phase, spec in enumerate((first, then)):
        hybrid.phase = phase
        model.zero_grad(set_to_none=True)
        hybrid.backward(tree_losses(model, x), model)
        got = [p.grad.clone() for p in model.parameters()]
        alone = build(spec, tasks=["a", "b", "c"])
        model.zero_grad(set_to_none=True)
        alone.backward(tree_losses(model, x), model)
        for g, p in zip(got, model.parameters(), strict=True):
            torch.testing.assert_close(g, p.grad, rtol=1e-6, atol=1e-9)
    assert hybrid.summary()["first"] == "dwa" and hybrid.summary()["then"] == "upgrad"


def test_hybrid_phase_keeps_its_own_epoch_hook(compose_cfg) -> None:
    """DWA's weights follow the epoch losses it is shown: the hybrid passes epoch_end on."""
    hybrid = Hybrid(["a", "b"], first=_phase_spec(compose_cfg, "dwa"), eps=0.0, ub="params")
    for epoch, losses in enumerate(
        ({"a": 1.0, "b": 1.0}, {"a": 0.5, "b": 0.9}, {"a": 0.2, "b": 0.8})
    ):
        hybrid.epoch_end(epoch, losses)
    weighting = hybrid.phases["first"].weighting
    # DWA (Liu et al. 2019): w_t = T softmax(r_t / 2), r_t = L_t(e-1) / L_t(e-2).
    r = torch.tensor([0.2 / 0.5, 0.8 / 0.9], dtype=torch.float64)
    expected = 2 * torch.softmax(r / 2.0, 0)
    torch.testing.assert_close(weighting.weights, expected, rtol=1e-6, atol=0)


def test_hybrid_ub_sets_the_phases_gradient_space(compose_cfg) -> None:
    gn, mgda = _phase_spec(compose_cfg, "gradnorm"), _phase_spec(compose_cfg, "mgda_ub")
    assert Hybrid(["a", "b"], first=gn, then=mgda, ub="params").phases["then"].on == "params"
    each = Hybrid(["a", "b"], first=gn, then=mgda, ub="each")
    assert (each.phases["first"].on, each.phases["then"].on) == ("params", "z")
    assert each.uses_taps


def test_hybrid_state_round_trip_and_older_checkpoints() -> None:
    model = tree_model()
    hybrid = Hybrid(["a", "b", "c"], ub="params")
    hybrid.backward(tree_losses(model, torch.randn(8, 4)), model)
    state = hybrid.state_dict()
    assert state["first"]["weights"].shape == (3,)
    fresh = Hybrid(["a", "b", "c"])  # ub=auto: the saved gradient space wins
    fresh.load_state_dict(state)
    assert fresh.space == "params"
    torch.testing.assert_close(fresh.phases["first"].weights, hybrid.phases["first"].weights)
    # a checkpoint written before the phases were configurable named GradNorm's state "gradnorm"
    legacy = {k: v for k, v in state.items() if k not in ("first", "then")}
    legacy["gradnorm"] = state["first"]
    older = Hybrid(["a", "b", "c"])
    older.load_state_dict(legacy)
    torch.testing.assert_close(older.phases["first"].weights, hybrid.phases["first"].weights)


def test_compare_solvers_logs_both_iteration_counts() -> None:
    model = tree_model()
    losses = tree_losses(model, torch.randn(16, 4, generator=torch.Generator().manual_seed(5)))
    log = MGDA(["a", "b", "c"], compare_solvers=True, max_iter=500).backward(losses, model)
    fw, proj = log["mgda/iterations/frank_wolfe"], log["mgda/iterations/projection"]
    assert fw >= 1 and proj >= 1
    assert log["mgda/iterations"] == pytest.approx(proj)  # the update used the projection solver


@pytest.mark.parametrize("name", ["mgda", "gradnorm", "uncertainty", "hybrid"])
def test_search_parameters_get_gradients_under_every_balancer(name: str) -> None:
    """sparse_ste's π sits outside the blocks: MGDA-type balancers give it the plain sum."""
    from mtlrun.backbones.cnn_bilstm import CNNBiLSTM
    from mtlrun.data.base import InputSpec, Task, TextInputs
    from mtlrun.methods.sparse import masked_supernet
    from mtlrun.methods.sparse_ste import BernoulliMasks

    torch.manual_seed(0)
    tasks = [Task(n, "accuracy", ("x", "y")) for n in ("a", "b")]
    backbone = CNNBiLSTM(
        input_spec=InputSpec("text", n_words=12, n_chars=8),
        word_dim=4, char_dim=3, char_filters=2, hidden=3,
    )  # fmt: skip
    model = masked_supernet(backbone, tasks, weights_only=False)
    params = dict(model.blocks.named_parameters())
    sampler = BernoulliMasks({t.name: {k: params[k].shape for k in model.maskable} for t in tasks})
    model.set_source(sampler.sample, sampler.sample, sampler)
    balancer = {
        "mgda": lambda: MGDA(["a", "b"]),
        "gradnorm": lambda: GradNorm(["a", "b"]),
        "uncertainty": lambda: Uncertainty(["a", "b"]),
        "hybrid": lambda: Hybrid(["a", "b"], ub="params"),
    }[name]()
    if name == "hybrid":
        balancer.phase = 1  # its MGDA phase
    lengths = torch.tensor([3, 2])
    words = torch.randint(1, 12, (2, 3)) * (torch.arange(3) < lengths[:, None])
    out = model(TextInputs(words, torch.randint(1, 8, (2, 3, 4)) * (words[..., None] > 0), lengths))
    balancer.backward({t: o.pow(2).mean() for t, o in out.items()}, model)
    pis = list(sampler.parameters())
    assert pis and all(p.grad is not None and p.grad.abs().sum() > 0 for p in pis)
