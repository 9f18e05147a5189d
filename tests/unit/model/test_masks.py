"""Mask helpers of sparse sharing: exact top-k, IMP rounds, and the reported mask statistics."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mtlrun.model.masks import magnitude_prune, mask_stats, maskable_parameters, topk_mask


def _scores(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "a.w": torch.rand(7, 5, generator=g),
        "a.b": torch.rand(7, generator=g),
        "b.k": torch.rand(3, 2, 4, generator=g),
    }


def _flat(d: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([v.flatten() for v in d.values()])


# ---------------------------------------------------------------------------- topk_mask


@pytest.mark.parametrize("ratio", [0.01, 0.1, 0.3, 0.5, 0.77, 1.0])
def test_topk_global_keeps_exactly_round_r_n_highest(ratio: float) -> None:
    scores = _scores()
    mask = topk_mask(scores, ratio)
    assert list(mask) == list(scores)
    for k in scores:
        assert mask[k].shape == scores[k].shape
    flat_m, flat_s = _flat(mask), _flat(scores)
    n = flat_s.numel()
    assert set(flat_m.unique().tolist()) <= {0.0, 1.0}
    assert int(flat_m.sum()) == round(ratio * n)
    kept, dropped = flat_s[flat_m > 0], flat_s[flat_m == 0]
    if dropped.numel():
        assert kept.min() > dropped.max()  # scores are distinct here: top-k is unique


@pytest.mark.parametrize("ratio", [0.1, 0.3, 0.5, 0.9])
def test_topk_per_layer_keeps_exactly_round_r_numel_of_each_tensor(ratio: float) -> None:
    scores = _scores(1)
    mask = topk_mask(scores, ratio, per_layer=True)
    for k, s in scores.items():
        m = mask[k]
        assert m.shape == s.shape
        assert int(m.sum()) == round(ratio * s.numel()), k
        kept, dropped = s[m > 0], s[m == 0]
        if kept.numel() and dropped.numel():
            assert kept.min() > dropped.max(), k


def test_topk_global_differs_from_per_layer_when_one_tensor_dominates() -> None:
    scores = {"x": torch.full((10,), 0.9), "y": torch.linspace(0.0, 0.1, 10)}
    glob = topk_mask(scores, 0.5)
    assert int(glob["x"].sum()) == 10 and int(glob["y"].sum()) == 0
    per = topk_mask(scores, 0.5, per_layer=True)
    assert int(per["x"].sum()) == 5 and int(per["y"].sum()) == 5
    assert torch.equal(per["y"], (torch.arange(10) >= 5).float())  # the 5 highest of y


@pytest.mark.parametrize("per_layer", [False, True])
@pytest.mark.parametrize("ratio", [0.2, 0.5, 0.35])
def test_topk_count_is_exact_with_ties(ratio: float, per_layer: bool) -> None:
    scores = {"a": torch.full((4, 5), 0.5), "b": torch.tensor([0.5, 0.5, 1.0, 0.0, 0.5, 0.5, 0.5])}
    mask = topk_mask(scores, ratio, per_layer=per_layer)
    if per_layer:
        for k, s in scores.items():
            assert int(mask[k].sum()) == round(ratio * s.numel())
    else:
        assert int(_flat(mask).sum()) == round(ratio * 27)
        assert mask["b"][2] == 1.0  # the unique highest score is kept
        assert mask["b"][3] == 0.0  # the unique lowest is not


def test_topk_all_equal_scores_still_exact() -> None:
    scores = {"z": torch.zeros(11)}
    assert int(topk_mask(scores, 0.5)["z"].sum()) == round(0.5 * 11)
    assert int(topk_mask(scores, 1.0)["z"].sum()) == 11


@pytest.mark.parametrize("ratio", [0.0, -0.1, 1.0001, 2.0])
@pytest.mark.parametrize("per_layer", [False, True])
def test_topk_ratio_outside_unit_interval_raises(ratio: float, per_layer: bool) -> None:
    with pytest.raises(ValueError, match="keep_ratio"):
        topk_mask(_scores(), ratio, per_layer=per_layer)


def test_topk_mask_carries_no_gradient_and_leaves_scores_alone() -> None:
    pi = nn.Parameter(torch.rand(6, 3))
    before = pi.detach().clone()
    mask = topk_mask({"p": pi}, 0.5)
    assert not mask["p"].requires_grad
    assert torch.equal(pi.detach(), before)


# ----------------------------------------------------------------------- magnitude_prune


def _weights(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "l1.weight": torch.randn(6, 5, generator=g),
        "l2.weight": torch.randn(4, 3, 2, generator=g),
    }


@pytest.mark.parametrize("density", [0.9, 0.6, 0.25, 0.05])
def test_prune_from_full_mask_keeps_exact_count_of_largest_magnitude(density: float) -> None:
    w = _weights()
    full = {k: torch.ones_like(v) for k, v in w.items()}
    out = magnitude_prune(w, full, density)
    n = sum(v.numel() for v in w.values())
    flat_m, flat_w = _flat(out), _flat(w).abs()
    assert set(flat_m.unique().tolist()) <= {0.0, 1.0}
    assert int(flat_m.sum()) == round(density * n)
    assert flat_w[flat_m > 0].min() > flat_w[flat_m == 0].max()
    for k in w:
        assert out[k].shape == w[k].shape


def test_prune_never_revives_pruned_entries_even_with_the_largest_weights() -> None:
    w = _weights(1)
    n = sum(v.numel() for v in w.values())
    # Previously pruned: exactly the 10 largest |θ|; they must stay pruned.
    flat_abs = _flat(w).abs()
    top10 = torch.topk(flat_abs, 10).indices
    prev_flat = torch.ones(n)
    prev_flat[top10] = 0.0
    prev, start = {}, 0
    for k, v in w.items():
        prev[k] = prev_flat[start : start + v.numel()].view_as(v)
        start += v.numel()
    density = 0.4
    out = magnitude_prune(w, prev, density)
    flat_m = _flat(out)
    assert int(flat_m.sum()) == round(density * n)  # density is a fraction of all entries
    assert bool((flat_m <= prev_flat).all())  # kept ⊆ previously kept
    assert bool((flat_m[top10] == 0).all())
    candidates = prev_flat > 0
    kept_scores = flat_abs[flat_m > 0]
    dropped_candidates = flat_abs[candidates & (flat_m == 0)]
    assert kept_scores.min() > dropped_candidates.max()  # largest |θ| among the candidates


def test_prune_sequence_is_nested_and_exact() -> None:
    """Several IMP rounds on changing weights: each mask is inside the previous one."""
    g = torch.Generator().manual_seed(3)
    shapes = {"l1.weight": (8, 4), "l2.weight": (5, 5)}
    n = sum(a * b for a, b in shapes.values())
    mask = {k: torch.ones(s) for k, s in shapes.items()}
    for r, density in enumerate([0.8, 0.64, 0.5, 0.3]):
        w = {k: torch.randn(s, generator=g) for k, s in shapes.items()}  # retrained weights
        new = magnitude_prune(w, mask, density)
        assert int(_flat(new).sum()) == round(density * n), r
        assert bool((_flat(new) <= _flat(mask)).all()), r
        mask = new


def test_prune_to_a_higher_density_than_kept_keeps_the_mask() -> None:
    w = _weights(2)
    prev = magnitude_prune(w, {k: torch.ones_like(v) for k, v in w.items()}, 0.3)
    again = magnitude_prune(w, prev, 0.8)  # cannot grow: pruned entries never return
    assert all(torch.equal(again[k], prev[k]) for k in w)


def test_prune_treats_zero_weights_as_prunable_before_pruned_entries_return() -> None:
    w = {"p.weight": torch.tensor([[0.0, 0.0, 5.0, 3.0]])}
    prev = {"p.weight": torch.tensor([[1.0, 1.0, 0.0, 1.0]])}
    out = magnitude_prune(w, prev, 0.5)  # keep 2 of 4; candidates are entries 0, 1, 3
    kept = out["p.weight"][0].tolist()
    assert kept[3] == 1.0 and kept[2] == 0.0  # |3| kept, the pruned |5| stays pruned
    assert kept[0] + kept[1] == 1.0  # one of the two zeros fills the count


# ---------------------------------------------------------------------------- mask_stats


def _hand_masks() -> dict[str, dict[str, torch.Tensor]]:
    # 10 entries over two keys: k1 (2x3) and k2 (4,)
    a = {"k1": torch.tensor([[1.0, 1, 0], [0, 1, 0]]), "k2": torch.tensor([1.0, 0, 0, 1])}  # 5 kept
    b = {"k1": torch.tensor([[1.0, 0, 0], [0, 1, 1]]), "k2": torch.tensor([1.0, 1, 0, 0])}  # 5 kept
    c = {"k1": torch.tensor([[1.0, 1, 1], [1, 1, 1]]), "k2": torch.tensor([1.0, 0, 0, 0])}  # 7 kept
    return {"a": a, "b": b, "c": c}


def test_mask_stats_match_hand_computed_fractions() -> None:
    stats = mask_stats(_hand_masks())
    assert stats["density"] == {
        "a": pytest.approx(0.5),
        "b": pytest.approx(0.5),
        "c": pytest.approx(0.7),
    }
    assert stats["kept"] == {"a": 5, "b": 5, "c": 7}
    # a ∩ b: k1[0,0], k1[1,1], k2[0] = 3; a ∪ b = 5 + 5 − 3 = 7
    # a ∩ c: k1[0,0], k1[0,1], k1[1,1], k2[0] = 4; ∪ = 5 + 7 − 4 = 8
    # b ∩ c: k1[0,0], k1[1,1], k1[1,2], k2[0] = 4; ∪ = 5 + 7 − 4 = 8
    assert stats["iou"] == {
        "a|b": pytest.approx(3 / 7),
        "a|c": pytest.approx(4 / 8),
        "b|c": pytest.approx(4 / 8),
    }
    # all three: k1[0,0], k1[1,1], k2[0] = 3; union: k1 all 6 + k2[0], k2[1], k2[3] = 9
    assert stats["union"] == 9
    assert stats["overlap_ratio"] == pytest.approx(3 / 9)
    assert stats["density_per_layer"]["a"] == {
        "k1": pytest.approx(3 / 6),
        "k2": pytest.approx(2 / 4),
    }
    assert stats["density_per_layer"]["c"] == {"k1": pytest.approx(1.0), "k2": pytest.approx(0.25)}


def test_mask_stats_of_identical_masks_are_one() -> None:
    m = {"k": torch.tensor([1.0, 0, 1, 1])}
    stats = mask_stats({"x": m, "y": {"k": m["k"].clone()}})
    assert stats["iou"] == {"x|y": 1.0}
    assert stats["overlap_ratio"] == 1.0
    assert stats["density"] == {"x": 0.75, "y": 0.75}


def test_mask_stats_accepts_bool_masks() -> None:
    masks = {t: {k: v.bool() for k, v in per.items()} for t, per in _hand_masks().items()}
    stats = mask_stats(masks)
    assert stats["iou"]["a|b"] == pytest.approx(3 / 7)
    assert stats["density"]["c"] == pytest.approx(0.7)


def test_private_copies_with_disjoint_keys_have_zero_iou() -> None:
    masks = {
        "a": {"enc:a.w": torch.tensor([1.0, 1, 0, 0]), "enc:a.v": torch.tensor([[1.0, 0], [0, 0]])},
        "b": {"enc:b.w": torch.tensor([1.0, 1, 1, 0]), "enc:b.v": torch.tensor([[1.0, 1], [1, 1]])},
    }
    stats = mask_stats(masks)
    assert stats["iou"] == {"a|b": 0.0}
    assert stats["overlap_ratio"] == 0.0
    # Density relative to the task's own parameters only (8 entries each).
    assert stats["density"] == {"a": pytest.approx(3 / 8), "b": pytest.approx(7 / 8)}
    assert stats["union"] == 3 + 7
    assert stats["kept"] == {"a": 3, "b": 7}


# ------------------------------------------------------------------- maskable_parameters


class _Block(nn.Module):
    uncounted = ("table",)

    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Embedding(5, 3)
        self.lin = nn.Linear(3, 2)
        self.conv = nn.Conv1d(2, 2, 3)


def test_maskable_parameters_keys_counting_and_weights_only() -> None:
    blocks = {"x": _Block(), "y": nn.Linear(2, 2), "head": nn.Linear(2, 1)}
    got = maskable_parameters(blocks, ["x", "y"])
    assert list(got) == [
        "x.lin.weight",
        "x.lin.bias",
        "x.conv.weight",
        "x.conv.bias",
        "y.weight",
        "y.bias",
    ]
    assert got["x.lin.weight"] is blocks["x"].lin.weight
    weights = maskable_parameters(blocks, ["x", "y"], weights_only=True)
    assert list(weights) == ["x.lin.weight", "x.conv.weight", "y.weight"]
    assert all(p.ndim >= 2 for p in weights.values())
