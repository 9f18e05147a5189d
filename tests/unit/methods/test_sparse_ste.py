"""sparse_ste (seed 000 Algorithm 1): the straight-through mask gradient, discretisation to an
exact keep ratio, and a short search → fine-tune run with its artefacts."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from mtlrun.errors import ConfigError
from mtlrun.methods.sparse_ste import BernoulliMasks, SparseSTE
from mtlrun.model.masks import topk_mask
from mtlrun.run import run
from tests.unit.methods._sparse import (
    TINY_RUN,
    make_ctx,
    tiny_backbone,
    tiny_data,
    tiny_encoder_size,
)

SHAPES = {
    "a": {"x.w": torch.Size([4, 5]), "x.b": torch.Size([5])},
    "b": {"x.w": torch.Size([4, 5])},
}


# ------------------------------------------------------------------------ BernoulliMasks


def test_pi_init_uniform_and_constant() -> None:
    torch.manual_seed(0)
    uniform = BernoulliMasks(SHAPES)
    assert {t: list(per) for t, per in uniform.shapes.items()} == {
        "a": ["x.w", "x.b"],
        "b": ["x.w"],
    }
    for t, per in SHAPES.items():
        for k, shape in uniform.probabilities(t).items():
            assert shape.shape == per[k]
            assert bool(((shape >= 0) & (shape <= 1)).all())
    assert len(set(uniform.probabilities("a")["x.w"].detach().flatten().tolist())) > 1
    const = BernoulliMasks(SHAPES, init="constant", value=0.25)
    assert all(bool((p == 0.25).all()) for p in const.probabilities("a").values())
    # One π per task: the same key of two tasks is two parameters.
    assert uniform.probabilities("a")["x.w"] is not uniform.probabilities("b")["x.w"]


def test_ste_gradient_of_pi_is_the_gradient_of_the_mask() -> None:
    """L = Σ (θ ⊙ M̃)·c: ∂L/∂π = θ ⊙ c = ∂L/∂M with M a leaf holding the same draw."""
    g = torch.Generator().manual_seed(0)
    theta = {k: torch.randn(s, generator=g) for k, s in SHAPES["a"].items()}
    c = {k: torch.randn(s, generator=g) for k, s in SHAPES["a"].items()}
    sampler = BernoulliMasks(SHAPES)

    torch.manual_seed(42)
    m_tilde = sampler.sample("a")
    loss = sum(((theta[k] * m_tilde[k]) * c[k]).sum() for k in theta)
    (flat_grad,) = torch.autograd.grad(loss, [sampler.flat("a")])
    by_key = sampler.views("a", flat_grad)
    grads = [by_key[k] for k in theta]

    torch.manual_seed(42)  # the same draw (one flat Bernoulli per task)
    draw = sampler.views("a", torch.bernoulli(sampler.flat("a").detach()))
    leaves = {k: draw[k].clone().requires_grad_(True) for k in theta}
    loss_m = sum(((theta[k] * leaves[k]) * c[k]).sum() for k in theta)
    grads_m = torch.autograd.grad(loss_m, [leaves[k] for k in theta])
    for i, k in enumerate(theta):
        assert torch.allclose(grads[i], theta[k] * c[k]), k
        assert torch.allclose(grads[i], grads_m[i]), k
        assert torch.allclose(m_tilde[k].detach(), leaves[k].detach(), atol=1e-6), k  # same draw


def test_sample_is_the_bernoulli_draw_up_to_rounding_and_has_rate_pi() -> None:
    sampler = BernoulliMasks({"t": {"k": torch.Size([200, 100])}}, init="constant", value=0.2)
    torch.manual_seed(3)
    m = sampler.sample("t")["k"].detach()
    assert torch.allclose(m, m.round(), atol=1e-6)
    assert set(m.round().unique().tolist()) <= {0.0, 1.0}
    assert float(m.round().mean()) == pytest.approx(0.2, abs=0.01)
    torch.manual_seed(4)
    assert not torch.equal(sampler.sample("t")["k"].detach().round(), m.round())  # a fresh draw


def test_sampled_mask_value_is_exactly_binary() -> None:
    torch.manual_seed(0)
    sampler = BernoulliMasks({"t": {"k": torch.Size([100, 100])}})
    m = sampler.sample("t")["k"].detach()
    assert bool(((m == 0) | (m == 1)).all())


def test_clamp_keeps_pi_in_unit_interval() -> None:
    sampler = BernoulliMasks({"t": {"k": torch.Size([5])}})
    with torch.no_grad():
        sampler.flat("t").copy_(torch.tensor([-0.5, 0.0, 0.3, 1.0, 1.7]))
    sampler.clamp_()
    assert sampler.probabilities("t")["k"].tolist() == pytest.approx([0.0, 0.0, 0.3, 1.0, 1.0])
    # After a large optimiser step, clamping brings every entry back.
    opt = torch.optim.SGD(sampler.parameters(), lr=10.0)
    sampler.sample("t")["k"].sum().mul(-1).backward()
    opt.step()
    assert float(sampler.flat("t").detach().max()) > 1
    sampler.clamp_()
    p = sampler.flat("t")
    assert bool(((p >= 0) & (p <= 1)).all())


# ---------------------------------------------------------------------------- discretise


@pytest.mark.parametrize("ratio", [0.1, 0.3, 0.5, 1.0])
def test_discretise_keeps_exactly_round_ratio_n_per_task(ratio: float) -> None:
    torch.manual_seed(0)
    shapes = {
        "a": {"p.w": torch.Size([7, 9]), "p.b": torch.Size([9]), "q.w": torch.Size([3, 4, 5])}
    }
    shapes["b"] = dict(shapes["a"])
    sampler = BernoulliMasks(shapes)
    n = sum(s.numel() for s in shapes["a"].values())
    glob = SparseSTE(keep_ratio=ratio)
    per = SparseSTE(keep_ratio=ratio, per_layer=True)
    for t in shapes:
        masks = glob.discretise(sampler, t)
        assert sum(int(m.sum()) for m in masks.values()) == round(ratio * n)
        probs = torch.cat([p.detach().flatten() for p in sampler.probabilities(t).values()])
        flat = torch.cat([m.flatten() for m in masks.values()])
        if 0 < int(flat.sum()) < n:
            assert probs[flat > 0].min() > probs[flat == 0].max()  # top-k of π
        layered = per.discretise(sampler, t)
        for k, s in shapes[t].items():
            assert int(layered[k].sum()) == round(ratio * s.numel()), (t, k)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"keep_ratio": 0.0}, "method.keep_ratio"),
        ({"keep_ratio": 1.5}, "method.keep_ratio"),
        ({"pi_init": "normal"}, "method.pi_init"),
        ({"search_epochs": 0}, "method.search_epochs"),
    ],
)
def test_bad_arguments_are_config_errors(kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        SparseSTE(**kwargs)


# ------------------------------------------------------------ through the masked supernet


def test_source_mode_ste_gradient_through_the_model_equals_mask_gradient() -> None:
    """In training mode each forward draws M_τ ~ Bernoulli(π_τ); ∂L/∂π_τ = ∂L/∂M_τ."""
    data = tiny_data()
    torch.manual_seed(0)
    method = SparseSTE()
    model = method.build(tiny_backbone(data, dropout=0.0), data.tasks)
    params = dict(model.blocks.named_parameters())
    shapes = {t: {k: params[k].shape for k in model.maskable} for t in model.tasks}
    sampler = BernoulliMasks(shapes)
    model.set_source(sampler.sample, lambda t: method.discretise(sampler, t), sampler)
    model.train()
    inputs, _ = next(iter(data.eval_groups("train", 8)))

    torch.manual_seed(7)
    out = model(inputs)
    loss = sum(out[t].pow(2).mean() for t in model.tasks)
    flat_grads = torch.autograd.grad(loss, [sampler.flat(t) for t in model.tasks])
    grad_pi = [
        g
        for t, fg in zip(model.tasks, flat_grads, strict=True)
        for g in sampler.views(t, fg).values()
    ]

    torch.manual_seed(7)  # same draws, in the model's order (one flat Bernoulli per task)
    leaves = {}
    for t in model.tasks:
        draw = sampler.views(t, torch.bernoulli(sampler.flat(t).detach()))
        leaves[t] = {k: v.clone().requires_grad_(True) for k, v in draw.items()}
    model.set_source(lambda t: leaves[t], lambda t: method.discretise(sampler, t), sampler)
    out_m = model(inputs)
    loss_m = sum(out_m[t].pow(2).mean() for t in model.tasks)
    assert torch.allclose(loss, loss_m, atol=1e-5)
    grad_m = torch.autograd.grad(loss_m, [m for t in model.tasks for m in leaves[t].values()])
    for a, b in zip(grad_pi, grad_m, strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    assert any(bool(g.abs().sum() > 0) for g in grad_pi)
    assert set(model.weight_parameters()).isdisjoint(set(sampler.parameters()))


def test_source_mode_samples_in_training_and_uses_discretised_masks_in_eval() -> None:
    data = tiny_data()
    torch.manual_seed(0)
    method = SparseSTE(keep_ratio=0.4)
    model = method.build(tiny_backbone(data, dropout=0.0), data.tasks)
    params = dict(model.blocks.named_parameters())
    sampler = BernoulliMasks({t: {k: params[k].shape for k in model.maskable} for t in model.tasks})
    model.set_source(sampler.sample, lambda t: method.discretise(sampler, t), sampler)
    inputs, _ = next(iter(data.eval_groups("valid", 8)))
    model.train()
    a, b = model(inputs)["pos"], model(inputs)["pos"]
    assert not torch.allclose(a, b)  # a fresh draw per forward
    model.eval()
    with torch.no_grad():
        e1 = model(inputs)
        e2 = model(inputs)
    assert torch.equal(e1["pos"], e2["pos"])
    # Eval output = the network with the top-k masks fixed.
    fixed = method.build(tiny_backbone(data, dropout=0.0), data.tasks)
    fixed.load_state_dict(model.state_dict(), strict=False)
    fixed.set_masks({t: method.discretise(sampler, t) for t in model.tasks})
    fixed.eval()
    with torch.no_grad():
        ref = fixed(inputs)
    for t in model.tasks:
        assert torch.allclose(e1[t], ref[t], atol=1e-6)


def _search(tmp_path: Path, **kwargs: object) -> tuple:
    data = tiny_data()
    torch.manual_seed(0)
    method = SparseSTE(keep_ratio=0.3, search_epochs=1, **kwargs)  # type: ignore[arg-type]
    model = method.build(tiny_backbone(data), data.tasks)
    ctx = make_ctx(model, data, tmp_path)
    torch.manual_seed(123)
    result = method.search(ctx)
    # The initial π: BernoulliMasks is the search's first draw from the global RNG.
    params = dict(model.blocks.named_parameters())
    torch.manual_seed(123)
    initial = BernoulliMasks({t: {k: params[k].shape for k in model.maskable} for t in model.tasks})
    return method, model, result, initial


def test_pi_is_frozen_with_zero_lr_and_masks_are_topk_of_initial_pi(tmp_path: Path) -> None:
    method, model, result, initial = _search(tmp_path, pi_lr=0.0)
    fixed = model.fixed_masks()
    assert model.mode == "fixed"
    for t in model.tasks:
        for k, p in model.sampler.probabilities(t).items():
            assert torch.equal(p.detach(), initial.probabilities(t)[k].detach()), (t, k)
        expected = topk_mask(initial.probabilities(t), 0.3)
        for k in expected:
            assert torch.equal(fixed[t][k], expected[k]), (t, k)
    assert result["before_finetune"] is None  # finetune_epochs=0: nothing to compare
    assert result["search_s"] > 0


def test_pi_moves_during_search_with_the_default_lr(tmp_path: Path) -> None:
    method, model, result, initial = _search(tmp_path)
    moved = changed = 0
    fixed = model.fixed_masks()
    for t in model.tasks:
        probs = model.sampler.probabilities(t)
        moved += sum(
            int((probs[k].detach() != initial.probabilities(t)[k].detach()).sum()) for k in probs
        )
        expected = topk_mask(initial.probabilities(t), 0.3)
        changed += sum(int((fixed[t][k] != expected[k]).sum()) for k in expected)
        assert all(bool(((p >= 0) & (p <= 1)).all()) for p in probs.values())
    assert moved > 0
    assert changed > 0  # the learnt π re-orders the top-k


# ---------------------------------------------------------------------------- whole run


def test_search_then_finetune_run(compose_cfg, tmp_path: Path) -> None:
    cfg = compose_cfg(
        [
            "method=sparse_ste",
            "method.search_epochs=2",
            "method.finetune_epochs=1",
            "method.keep_ratio=0.3",
            *TINY_RUN,
        ]
    )
    metrics = run(cfg, tmp_path)
    n = tiny_encoder_size()
    kept = round(0.3 * n)
    tasks = ["pos", "chunk", "ner"]
    assert metrics["params"]["supernet"] == n
    # Exact count: the density is 0.3 up to the rounding of round(0.3·n) (n = 1012 here).
    for t in tasks:
        assert metrics["masks"]["density"][t] == pytest.approx(kept / n, abs=1e-12)
        assert metrics["masks"]["density"][t] == pytest.approx(0.3, abs=0.5 / n)
        assert metrics["masks"]["kept"][t] == kept
    assert metrics["params"]["per_task"] == {t: kept for t in tasks}
    assert metrics["params"]["used"] == metrics["masks"]["union"]
    assert kept <= metrics["params"]["used"] <= min(n, 3 * kept)
    assert set(metrics["masks"]["iou"]) == {"pos|chunk", "pos|ner", "chunk|ner"}
    assert all(0 <= v <= 1 for v in metrics["masks"]["iou"].values())
    assert metrics["time"]["search_s"] > 0
    before = metrics["before_finetune"]
    assert set(before) == {"valid", "test"} and set(before["test"]) == set(tasks)
    for name in ("masks.pt", "masks.json", "masks.png"):
        assert (tmp_path / name).is_file(), name
    saved = torch.load(tmp_path / "masks.pt")
    assert set(saved) == set(tasks)
    assert all(sum(int(m.sum()) for m in saved[t].values()) == kept for t in tasks)
    stats = json.loads((tmp_path / "masks.json").read_text())
    assert stats["density"] == metrics["masks"]["density"]
    assert (tmp_path / "masks.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with (tmp_path / "history.csv").open() as f:
        phases = [row["phase"] for row in csv.DictReader(f)]
    assert phases == ["search", "search", "train"]
    # The fine-tune phase kept the searched masks.
    last = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=False)
    for t in tasks:
        for k, m in saved[t].items():
            assert torch.equal(last["masks"][t][k].bool(), m), (t, k)
