"""MaskedModel: each task runs θ ⊙ M_t (fixed masks), its own trunk, exact gradients and counts."""

from __future__ import annotations

import copy

import pytest
import torch

from mtlrun.backbones.accounting import counted_parameters
from mtlrun.backbones.cnn_bilstm import CNNBiLSTM
from mtlrun.data.base import InputSpec, Task, TextInputs
from mtlrun.methods.hard import HardSharing
from mtlrun.methods.sparse import masked_supernet
from mtlrun.model.masked import MaskedModel
from mtlrun.model.paths import MultiTaskModel

TEXT = InputSpec("text", n_words=20, n_chars=10)
TINY = {"word_dim": 8, "char_dim": 4, "char_filters": 4, "hidden": 6}
TASKS = [Task(n, "accuracy", ("x", "y", "z")) for n in ("a", "b", "c")]


def tiny_backbone() -> CNNBiLSTM:
    return CNNBiLSTM(input_spec=TEXT, **TINY)


def text_batch() -> TextInputs:
    lengths = torch.tensor([5, 3, 4])
    words = torch.randint(2, 20, (3, 5)) * (torch.arange(5) < lengths[:, None])
    chars = torch.randint(2, 10, (3, 5, 4)) * (words[..., None] > 0)
    return TextInputs(words, chars, lengths)


def build(weights_only: bool = False, seed: int = 0) -> MaskedModel:
    torch.manual_seed(seed)
    return masked_supernet(tiny_backbone(), TASKS, weights_only=weights_only)


def random_masks(
    model: MaskedModel, density: float = 0.5, seed: int = 1
) -> dict[str, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    params = dict(model.blocks.named_parameters())
    return {
        t: {k: (torch.rand(params[k].shape, generator=g) < density).float() for k in model.maskable}
        for t in model.tasks
    }


def by_hand(model: MaskedModel, task: str, mask: dict[str, torch.Tensor]) -> MultiTaskModel:
    """A plain copy of the network whose weights were multiplied by the mask."""
    blocks = copy.deepcopy(model.blocks)
    params = dict(blocks.named_parameters())
    with torch.no_grad():
        for k, m in mask.items():
            params[k].mul_(m)
    return MultiTaskModel(dict(blocks.items()), {task: model.paths[task]}).eval()


def test_maskable_keys_are_counted_encoder_parameters() -> None:
    model = build()
    expected = [
        f"{b}.{n}" for b in ("embed", "bilstm") for n, _ in counted_parameters(model.blocks[b])
    ]
    assert model.maskable == expected
    assert not any("embedding" in k for k in model.maskable)  # embedding tables are uncounted
    assert not any(k.startswith("head:") for k in model.maskable)
    weights = build(weights_only=True).maskable
    assert weights and all(dict(model.blocks.named_parameters())[k].ndim >= 2 for k in weights)


def test_dense_mode_equals_the_plain_model() -> None:
    model = build().eval()
    assert model.mode == "dense"
    plain = MultiTaskModel(dict(model.blocks.items()), model.paths).eval()
    batch = text_batch()
    out, ref = model(batch), plain(batch)
    for t in model.tasks:
        assert torch.equal(out[t], ref[t])
    assert model.param_counts() == plain.param_counts()


@pytest.mark.parametrize("task", ["a", "b", "c"])
def test_fixed_mask_output_equals_network_with_weights_masked_by_hand(task: str) -> None:
    model = build()
    masks = random_masks(model)
    model.set_masks(masks)
    model.eval()
    assert model.mode == "fixed"
    batch = text_batch()
    out = model(batch)[task]
    ref = by_hand(model, task, masks[task])(batch)[task]
    assert torch.allclose(out, ref, atol=1e-6)
    # The masks matter: the dense output is different.
    dense = MultiTaskModel(dict(model.blocks.items()), model.paths).eval()(batch)[task]
    assert not torch.allclose(out, dense, atol=1e-4)


def test_each_task_computes_its_own_trunk() -> None:
    model = build()
    masks = random_masks(model)
    model.set_masks(masks)
    model.eval()
    batch = text_batch()
    together = model(batch)
    for t in model.tasks:
        alone = model(batch, tasks=[t])[t]
        assert torch.allclose(together[t], alone, atol=1e-6), t
    model(batch)  # cache keys read the masks of the last forward call
    assert model.cache_key("a", ("embed",)) != model.cache_key("b", ("embed",))
    assert model.cache_key("a", ("embed", "bilstm")) == ("a", ("embed", "bilstm"))
    # Distinct masks, distinct outputs (same head weights would otherwise not tell).
    model.blocks["head:b"].load_state_dict(model.blocks["head:a"].state_dict())
    out = model(batch)
    assert not torch.allclose(out["a"], out["b"], atol=1e-4)


def test_changing_one_tasks_mask_leaves_the_others_unchanged() -> None:
    model = build()
    masks = random_masks(model)
    model.set_masks(masks)
    model.eval()
    batch = text_batch()
    before = model(batch)
    new_b = random_masks(model, density=0.3, seed=7)["b"]
    model.set_masks({"b": new_b})
    assert torch.equal(model.fixed_masks()["b"][model.maskable[0]], new_b[model.maskable[0]])
    after = model(batch)
    assert torch.equal(after["a"], before["a"])
    assert torch.equal(after["c"], before["c"])
    assert not torch.allclose(after["b"], before["b"], atol=1e-4)


def test_masked_out_weights_get_zero_gradient_and_shared_weights_sum() -> None:
    model = build()
    masks = random_masks(model, density=0.6)
    model.set_masks(masks)
    model.eval()  # deterministic (dropout off)
    batch = text_batch()
    params = dict(model.blocks.named_parameters())
    keys = model.maskable
    out = model(batch)
    losses = {t: out[t].pow(2).mean() for t in model.tasks}
    per_task = {
        t: torch.autograd.grad(losses[t], [params[k] for k in keys], retain_graph=True)
        for t in model.tasks
    }
    total = torch.autograd.grad(sum(losses.values()), [params[k] for k in keys])
    n_shared = 0
    for i, k in enumerate(keys):
        for t in model.tasks:
            g = per_task[t][i]
            assert bool((g[masks[t][k] == 0] == 0).all()), (t, k)  # exactly zero where masked out
        assert torch.allclose(total[i], sum(per_task[t][i] for t in model.tasks), atol=1e-6), k
        kept_by = torch.stack([masks[t][k] for t in model.tasks])
        nobody = kept_by.sum(0) == 0
        assert bool((total[i][nobody] == 0).all()), k
        # Kept by exactly a and b: the total is g_a + g_b (c contributes nothing there).
        ab = (kept_by[0] == 1) & (kept_by[1] == 1) & (kept_by[2] == 0)
        n_shared += int(ab.sum())
        assert torch.allclose(total[i][ab], per_task["a"][i][ab] + per_task["b"][i][ab], atol=1e-6)
        assert bool((per_task["c"][i][ab] == 0).all())
    assert n_shared > 0
    # Some kept entry does receive a signal (the test is not vacuous).
    assert any(
        bool(per_task["a"][i][masks["a"][k] > 0].abs().sum() > 0) for i, k in enumerate(keys)
    )


def test_masked_weight_gradient_equals_mask_times_effective_weight_gradient() -> None:
    """∂L/∂θ = M ⊙ ∂L/∂(θ⊙M), compared with the by-hand masked copy."""
    model = build()
    masks = random_masks(model)
    model.set_masks(masks)
    model.eval()
    batch = text_batch()
    params = dict(model.blocks.named_parameters())
    (g,) = torch.autograd.grad(
        model(batch, tasks=["a"])["a"].pow(2).mean(), [params["bilstm.lstm.weight_hh_l0"]]
    )
    ref_model = by_hand(model, "a", masks["a"])
    ref_params = dict(ref_model.blocks.named_parameters())
    (g_eff,) = torch.autograd.grad(
        ref_model(batch)["a"].pow(2).mean(), [ref_params["bilstm.lstm.weight_hh_l0"]]
    )
    assert torch.allclose(g, g_eff * masks["a"]["bilstm.lstm.weight_hh_l0"], atol=1e-6)


def test_param_counts_with_a_hand_built_mask() -> None:
    model = build(weights_only=True)
    params = dict(model.blocks.named_parameters())
    encoder = {
        f"{b}.{n}": p for b in ("embed", "bilstm") for n, p in counted_parameters(model.blocks[b])
    }
    unmasked = sum(p.numel() for k, p in encoder.items() if k not in model.maskable)
    assert unmasked > 0  # biases stay unmasked with weights_only
    k1, k2 = model.maskable[0], model.maskable[1]
    n2 = params[k2].numel()

    # Hand-built: a keeps the first 10 entries of k1, b the first 20, c entries 15..29; c has no
    # mask for k2 (dense there); every other maskable key fully kept by a and b, empty for c.
    def first(key: str, lo: int, hi: int) -> torch.Tensor:
        m = torch.zeros(params[key].numel())
        m[lo:hi] = 1.0
        return m.view_as(params[key])

    rest = [k for k in model.maskable if k not in (k1, k2)]
    n_rest = sum(params[k].numel() for k in rest)
    masks = {
        "a": {
            k1: first(k1, 0, 10),
            k2: first(k2, 0, 5),
            **{k: torch.ones_like(params[k]) for k in rest},
        },
        "b": {
            k1: first(k1, 0, 20),
            k2: first(k2, 0, 0),
            **{k: torch.ones_like(params[k]) for k in rest},
        },
        "c": {k1: first(k1, 15, 30), **{k: torch.zeros_like(params[k]) for k in rest}},
    }
    model.set_masks(masks)
    counts = model.param_counts()
    assert counts["supernet"] == sum(p.numel() for p in encoder.values())
    assert counts["per_task"] == {
        "a": 10 + 5 + n_rest + unmasked,
        "b": 20 + 0 + n_rest + unmasked,
        "c": 15 + n2 + 0 + unmasked,
    }
    # ∪ over k1: entries 0..29 = 30; k2: c is dense there → n2; rest: a/b keep all → n_rest.
    assert counts["used"] == 30 + n2 + n_rest + unmasked


def test_param_counts_full_masks_equal_hard_sharing() -> None:
    model = build()
    hard_counts = HardSharing().build(tiny_backbone(), TASKS).param_counts()
    params = dict(model.blocks.named_parameters())
    model.set_masks(
        {t: {k: torch.ones_like(params[k]) for k in model.maskable} for t in model.tasks}
    )
    assert model.param_counts() == hard_counts


def test_masks_survive_state_dict_save_and_load(tmp_path) -> None:
    model = build(seed=0)
    masks = random_masks(model, seed=5)
    model.set_masks(masks)
    sd = model.state_dict()
    assert any(k.startswith("mask__") for k in sd)
    path = tmp_path / "model.pt"
    torch.save(sd, path)

    other = build(seed=1)  # different weights and, after loading, the same
    params = dict(other.blocks.named_parameters())
    other.set_masks(
        {t: {k: torch.ones_like(params[k]) for k in other.maskable} for t in other.tasks}
    )
    other.load_state_dict(torch.load(path))
    got = other.fixed_masks()
    for t in masks:
        for k in masks[t]:
            assert torch.equal(got[t][k], masks[t][k]), (t, k)
    model.eval()
    other.eval()
    batch = text_batch()
    a, b = model(batch), other(batch)
    for t in model.tasks:
        assert torch.equal(a[t], b[t])
    assert other.param_counts() == model.param_counts()


def test_loading_masks_needs_the_buffers_first() -> None:
    model = build()
    model.set_masks(random_masks(model))
    fresh = build()
    with pytest.raises(RuntimeError, match="mask__"):
        fresh.load_state_dict(model.state_dict())


def test_trunk_runs_once_per_masked_task_and_once_when_dense() -> None:
    model = build()
    calls: dict[str, int] = {}
    for name in ("embed", "bilstm"):
        model.blocks[name].register_forward_hook(
            lambda *_a, name=name: calls.__setitem__(name, calls.get(name, 0) + 1)
        )
    batch = text_batch()
    model(batch)
    assert calls == {"embed": 1, "bilstm": 1}  # dense: a shared prefix is computed once
    model.set_masks(random_masks(model))
    calls.clear()
    assert model.fuse_tasks is None  # auto: fused on a GPU only
    model.fuse_tasks = True
    model(batch)
    assert calls == {}  # masked tasks together: one fused pass (forward_tasks), no forward()
    model.fuse_tasks = False
    model(batch)
    # functional_call runs the block's forward too: one call per task.
    assert calls == {"embed": 3, "bilstm": 3}


@pytest.mark.parametrize("dropout", [0.0, 0.5])
def test_fused_pass_equals_one_pass_per_task(dropout: float) -> None:
    """The tasks' masked encoders run as one pass (grouped char CNN, block-diagonal BiLSTM)
    with the outputs and the gradients of one functional pass per task."""
    torch.manual_seed(0)
    model = masked_supernet(
        CNNBiLSTM(input_spec=TEXT, dropout=dropout, **TINY), TASKS, weights_only=False
    )
    model.set_masks(random_masks(model))
    model.eval()  # dropout off, so both ways are deterministic
    batch = text_batch()
    results = []
    for fuse in (True, False):
        model.fuse_tasks = fuse
        model.zero_grad(set_to_none=True)
        out = model(batch)
        sum((k + 1) * out[t].pow(2).sum() for k, t in enumerate(model.tasks)).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append(({t: o.detach() for t, o in out.items()}, grads))
    (fused_out, fused_grads), (ref_out, ref_grads) = results
    for t in model.tasks:
        assert torch.allclose(fused_out[t], ref_out[t], atol=1e-5)
    assert fused_grads.keys() == ref_grads.keys()
    for n in ref_grads:
        assert torch.allclose(fused_grads[n], ref_grads[n], atol=1e-5), n
    # A single task, or no masks, takes the ordinary path.
    model.fuse_tasks = True
    model._active = {"a": None, "b": None}
    assert not model._fusable(["a", "b"])
    model._active = {"a": {}}
    assert not model._fusable(["a"])


def test_block_diagonal_gates_layout() -> None:
    from mtlrun.backbones.cnn_bilstm import _block_diagonal_gates

    w = torch.arange(2 * 8 * 3, dtype=torch.float32).view(2, 8, 3)  # T=2, H=2, D=3
    big = _block_diagonal_gates(w)
    assert big.shape == (16, 6)
    for gate in range(4):
        for t in range(2):
            rows = slice(gate * 4 + t * 2, gate * 4 + t * 2 + 2)
            assert torch.equal(big[rows, t * 3 : t * 3 + 3], w[t, gate * 2 : gate * 2 + 2])
            assert not big[rows, (1 - t) * 3 : (1 - t) * 3 + 3].any()
