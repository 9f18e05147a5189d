"""sparse_imp (Sun et al. 2020): their pruning rule and schedule, weight-matrix masks, rewinding to
θ0, round selection, multi-task training with one update per task in random order, deviations."""

from __future__ import annotations

import copy
import csv
import random
from pathlib import Path

import pytest
import torch

from mtlrun.errors import ConfigError
from mtlrun.methods.single_subnet import SingleSubnet
from mtlrun.methods.sparse_imp import SparseIMP
from mtlrun.model.masks import prune_fraction
from mtlrun.run import run
from mtlrun.training import loop
from tests.unit.methods._sparse import (
    TINY_RUN,
    encoder_state,
    make_ctx,
    tiny_backbone,
    tiny_data,
    tiny_encoder_size,
    tiny_weight_matrix_size,
)

WEIGHT_KEYS = [
    "embed.char_cnn.weight",
    "bilstm.lstm.weight_ih_l0",
    "bilstm.lstm.weight_hh_l0",
    "bilstm.lstm.weight_ih_l0_reverse",
    "bilstm.lstm.weight_hh_l0_reverse",
]


# ------------------------------------------------------------------------------ schedule


def test_geometric_schedule_of_sun_et_al() -> None:
    imp = SparseIMP()  # 20 rounds down to 0.1
    assert imp.density(0) == 1.0
    assert imp.density(20) == pytest.approx(0.1, abs=1e-12)
    assert imp.density(6) == pytest.approx(0.501, abs=5e-4)  # the DML thesis's ≈50 % per task
    assert imp.density(10) == pytest.approx(0.316, abs=5e-4)  # Sun et al.'s published ≈32 %
    for r in range(20):
        assert imp.density(r + 1) / imp.density(r) == pytest.approx(0.1 ** (1 / 20))
    pruned_per_round = 1 - imp.density(1) / imp.density(0)
    assert pruned_per_round == pytest.approx(0.109, abs=1e-3)  # ~10.9 % of the remaining weights
    small = SparseIMP(rounds=3, final_density=0.3)
    assert [small.density(r) for r in range(4)] == pytest.approx(
        [1.0, 0.3 ** (1 / 3), 0.3 ** (2 / 3), 0.3]
    )


def test_defaults_are_the_authors_round_10_of_20() -> None:
    imp = SparseIMP()
    assert imp.rate == pytest.approx(0.1087491, abs=1e-7)  # 1 - 0.1^(1/20), their one_rate
    assert imp.keep_ratio == pytest.approx(0.3162278, abs=1e-7)
    assert imp.nearest_round() == 10  # prepare-masks.sh: MASK_LIST 10 10 10
    assert (imp.select, imp.prune_epochs, imp.warmup_epochs) == ("nearest", None, 0)
    assert SparseIMP(keep_ratio=0.5).nearest_round() == 6  # seed 000's ≈50 % (811k summed)


def test_kept_counts_compound_the_roundings_of_each_round() -> None:
    imp = SparseIMP()
    # Each round drops round(0.10875 · kept): 10 → 9 → 8 → 7 → 6 → 5 → 4, then round(0.435) = 0.
    assert imp.kept_counts(10)[:9] == [10, 9, 8, 7, 6, 5, 4, 4, 4]
    # The nominal schedule would keep round(10 · 0.1^(r/20)) = 10, 9, 8, 7, 6, 6, 5, 4, 4.
    assert [round(10 * imp.density(r)) for r in range(9)] == [10, 9, 8, 7, 6, 6, 5, 4, 4]
    assert imp.kept_counts(1000)[10] == 316


def test_prune_fraction_global_by_hand() -> None:
    w = {"a": torch.tensor([[0.5, -0.1], [0.2, 0.05]]), "b": torch.tensor([[0.2, -0.4, 0.7]])}
    mask = {"a": torch.ones(2, 2), "b": torch.tensor([[1.0, 1.0, 0.0]])}  # |0.7| already pruned
    # Kept |θ| sorted: 0.05 0.1 0.2 0.2 0.4 0.5; index round(0.4 · 6) = 2 → cutoff 0.2; entries
    # strictly below it go, both 0.2 stay.
    out = prune_fraction(w, mask, 0.4)
    assert out["a"].tolist() == [[1.0, 0.0], [1.0, 0.0]]
    assert out["b"].tolist() == [[1.0, 1.0, 0.0]]


def test_prune_fraction_per_layer_by_hand() -> None:
    w = {"a": torch.tensor([[0.5, -0.1], [0.2, 0.05]]), "b": torch.tensor([[0.2, -0.4, 0.7]])}
    mask = {"a": torch.ones(2, 2), "b": torch.tensor([[1.0, 1.0, 0.0]])}
    out = prune_fraction(w, mask, 0.4, per_layer=True)
    # a: sorted 0.05 0.1 0.2 0.5, index round(1.6) = 2 → cutoff 0.2, "<=" drops 0.05, 0.1, 0.2.
    assert out["a"].tolist() == [[1.0, 0.0], [0.0, 0.0]]
    # b: kept 0.2 0.4, index round(0.8) = 1 → cutoff 0.4, "<=" drops both.
    assert out["b"].tolist() == [[0.0, 0.0, 0.0]]


def test_repeated_pruning_keeps_the_scheduled_counts() -> None:
    imp = SparseIMP(rounds=5, final_density=0.2)
    g = torch.Generator().manual_seed(0)
    mask = {"a": torch.ones(7, 9), "b": torch.ones(13)}
    counts = [76]
    for _ in range(5):
        w = {k: torch.randn(m.shape, generator=g) for k, m in mask.items()}  # retrained
        new = prune_fraction(w, mask, imp.rate)
        assert all(bool((new[k] <= mask[k]).all()) for k in mask)  # pruned never return
        mask = new
        counts.append(int(sum(m.sum() for m in mask.values())))
    assert counts == imp.kept_counts(76) == [76, 55, 40, 29, 21, 15]


def test_deviations_name_the_options_that_depart() -> None:
    # Always: best-valid checkpoint, task order, trainer settings, gradients of pruned weights.
    assert len(SparseIMP().deviations) == 4
    notes = " ".join(
        SparseIMP(
            select="valid", per_layer=True, warmup_epochs=10, prune_epochs=5, rounds=10
        ).deviations
    )
    for part in ("10 rounds", "best-validation round", "Per-layer", "prune_epochs=5", "Warm-up"):
        assert part in notes, part
    assert "keeps pruning round 6" in " ".join(SparseIMP(keep_ratio=0.5).deviations)


def first_stop(imp: SparseIMP) -> int:
    tried = []
    for r in range(imp.rounds + 1):
        tried.append(imp.density(r))
        if imp._candidates_known(r, tried):
            return r
    return imp.rounds


def test_search_stops_once_the_nearest_candidates_are_tried() -> None:
    # Densities 0.1^(r/20): r5 0.562, r6 0.501, r7 0.447, r8 0.398, r9 0.355.
    assert first_stop(SparseIMP(keep_ratio=0.5)) == 7  # nearest three: r6, r7, r5
    assert first_stop(SparseIMP(keep_ratio=0.5, candidates=1)) == 6  # r6 is nearer than r7
    # Five: r6, r7, r5, r8 (0.102), r4 (0.131); r9 (0.145) is farther, so stop at r8.
    assert first_stop(SparseIMP(keep_ratio=0.5, candidates=5)) == 8
    # Exactly on the target with one candidate: no round below it is trained.
    assert first_stop(SparseIMP(keep_ratio=0.5, rounds=3, final_density=0.125, candidates=1)) == 1


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"rounds": 0}, "method.rounds"),
        ({"select": "best"}, "method.select"),
        ({"warmup_epochs": -1}, "method.warmup_epochs"),
        ({"prune_epochs": 0}, "method.prune_epochs"),
        ({"candidates": 0}, "method.candidates"),
        ({"final_density": 0.0}, "method.final_density"),
        ({"keep_ratio": 1.2}, "method.keep_ratio"),
    ],
)
def test_bad_arguments_are_config_errors(kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=f"`{key}`"):
        SparseIMP(**kwargs)


# -------------------------------------------------------------------------------- build


def test_only_weight_matrices_are_maskable() -> None:
    data = tiny_data()
    model = SparseIMP().build(tiny_backbone(data), data.tasks)
    params = dict(model.blocks.named_parameters())
    assert model.maskable == WEIGHT_KEYS
    assert not any("bias" in k for k in model.maskable)
    assert all(params[k].ndim >= 2 for k in model.maskable)
    assert sum(params[k].numel() for k in model.maskable) == tiny_weight_matrix_size()
    assert model.paths == {t: ("embed", "bilstm", f"head:{t}") for t in ("pos", "chunk", "ner")}
    assert SparseIMP.update == "per_task"
    assert SingleSubnet.update == "joint"


# ---------------------------------------------------------------------- per-task updates


def _groups() -> list:
    y = torch.zeros(2, 3, dtype=torch.long)
    return [("inputs", {"pos": y, "chunk": y + 1, "ner": y + 2})]


def test_updates_per_task_are_single_task_in_seeded_random_order() -> None:
    groups = _groups()
    tasks = {"pos", "chunk", "ner"}
    orders: dict[int, list[tuple[str, ...]]] = {}
    for seed in (0, 1):
        orders[seed] = []
        for epoch in range(4):
            rng = random.Random(seed * 7919 + epoch)  # as train_epoch seeds it
            updates = loop._updates(groups, tasks, True, rng)
            assert len(updates) == 3
            assert all(len(u) == 1 and len(u[0][1]) == 1 and u[0][0] == "inputs" for u in updates)
            order = tuple(next(iter(u[0][1])) for u in updates)
            assert set(order) == tasks
            for u in updates:
                ((_, targets),) = u
                ((t, y),) = targets.items()
                assert y is groups[0][1][t]
            orders[seed].append(order)
            again = loop._updates(groups, tasks, True, random.Random(seed * 7919 + epoch))
            assert [tuple(u[0][1]) for u in again] == [(t,) for t in order]  # reproducible
    assert orders[0] != orders[1]
    assert len(set(orders[0] + orders[1])) > 1


def test_updates_joint_and_inactive_tasks() -> None:
    groups = _groups()
    joint = loop._updates(groups, {"pos", "chunk", "ner"}, False, random.Random(0))
    assert len(joint) == 1 and list(joint[0][0][1]) == ["pos", "chunk", "ner"]
    only = loop._updates(groups, {"ner", "pos"}, True, random.Random(0))
    assert sorted(next(iter(u[0][1])) for u in only) == ["ner", "pos"]
    assert loop._updates(groups, {"other"}, True, random.Random(0)) == []


# -------------------------------------------------------------------------- the search


def test_search_rewinds_to_theta0_and_prunes_nested_masks(tmp_path: Path) -> None:
    data = tiny_data(("pos", "ner"))
    torch.manual_seed(0)
    method = SparseIMP(keep_ratio=0.5, rounds=2, final_density=0.5, prune_epochs=1, select="valid")
    model = method.build(tiny_backbone(data), data.tasks)
    ctx = make_ctx(model, data, tmp_path)
    theta0 = copy.deepcopy(model.state_dict())
    enc0 = encoder_state(model)
    fit = ctx.fit
    seen: list[dict] = []

    def spy(name: str, epochs: int, tasks=None, **kw) -> float:  # noqa: ANN001
        start = encoder_state(model)
        masks = {
            t: {k: m.clone() for k, m in per.items()} for t, per in model.fixed_masks().items()
        }
        score = fit(name, epochs, tasks=tasks, **kw)
        seen.append(
            {
                "name": name,
                "tasks": [t.name for t in tasks],
                "start": start,
                "masks": masks,
                "end": encoder_state(model),
                "update": kw.get("update", "joint"),
            }
        )
        return score

    ctx.fit = spy  # type: ignore[method-assign]
    result = method.search(ctx)

    assert [s["name"] for s in seen] == [
        f"imp/{t}/round{r}" for t in ("pos", "ner") for r in range(3)
    ]
    n = tiny_weight_matrix_size()
    for s in seen:
        assert len(s["tasks"]) == 1
        # Every round starts from θ0.
        assert all(torch.equal(s["start"][k], enc0[k]) for k in enc0), s["name"]
    # Training moved θ (so rewinding is not vacuous).
    assert any(not torch.equal(s["end"][k], enc0[k]) for s in seen for k in enc0)
    for t in ("pos", "ner"):
        rounds = [s for s in seen if s["tasks"] == [t]]
        prev = None
        for r, s in enumerate(rounds):
            m = s["masks"][t]
            assert list(m) == WEIGHT_KEYS
            assert sum(int(v.sum()) for v in m.values()) == method.kept_counts(n)[r], (t, r)
            if prev is not None:
                assert all(bool((m[k] <= prev[k]).all()) for k in m), (t, r)  # pruned never return
                # Pruned by the magnitude of the previous round's trained weights.
                expected = prune_fraction(
                    {k: rounds[r - 1]["end"][k] for k in m}, prev, method.rate
                )
                assert all(torch.equal(m[k], expected[k]) for k in m), (t, r)
            prev = m
    # After the search: every weight is θ0 again (rewinding), masks fixed for every task.
    state = model.state_dict()
    for k, v in theta0.items():
        assert torch.equal(state[k], v), k
    assert model.mode == "fixed"
    chosen = {
        t: [row for row in result["masks"]["rounds"][t] if row["chosen"]] for t in ("pos", "ner")
    }
    for t, rows in chosen.items():
        assert len(rows) == 1
        assert result["masks"]["kept"][t] == round(rows[0]["density"] * n)
        assert (
            sum(int(v.sum()) for v in model.fixed_masks()[t].values()) == result["masks"]["kept"][t]
        )
    assert result["search_s"] > 0


def test_nearest_search_keeps_that_round_without_training_it(tmp_path: Path) -> None:
    data = tiny_data(("pos",))
    torch.manual_seed(0)
    # Densities 1, 0.707, 0.5: keep_ratio 0.45 is nearest round 2; rounds 0 and 1 are trained.
    method = SparseIMP(keep_ratio=0.45, rounds=2, final_density=0.5)
    model = method.build(tiny_backbone(data), data.tasks)
    ctx = make_ctx(model, data, tmp_path)  # trainer.max_epochs = 1
    fit, calls = ctx.fit, []

    def spy(name: str, epochs: int, tasks=None, **kw) -> float:  # noqa: ANN001
        calls.append((name, epochs))
        return fit(name, epochs, tasks=tasks, **kw)

    ctx.fit = spy  # type: ignore[method-assign]
    result = method.search(ctx)
    assert calls == [("imp/pos/round0", 1), ("imp/pos/round1", 1)]  # prune_epochs null: 1
    n = tiny_weight_matrix_size()
    rows = result["masks"]["rounds"]["pos"]
    assert [(r["round"], r["chosen"]) for r in rows] == [(0, False), (1, False), (2, True)]
    assert rows[2]["valid_score"] is None and rows[0]["valid_score"] is not None
    assert result["masks"]["kept"]["pos"] == method.kept_counts(n)[2] == 456  # 912 → 645 → 456
    assert [r["density"] for r in rows] == pytest.approx([c / n for c in method.kept_counts(n)])


# --------------------------------------------------------------------------- whole run


def test_imp_run_masks_rounds_and_per_task_main_phase(
    compose_cfg, tmp_path: Path, monkeypatch
) -> None:
    calls: list[tuple[bool, list]] = []
    original = loop._updates

    def spy(groups, active, per_task, rng):  # noqa: ANN001, ANN202
        out = original(groups, active, per_task, rng)
        calls.append((per_task, out))
        return out

    monkeypatch.setattr(loop, "_updates", spy)
    cfg = compose_cfg(
        [
            "method=sparse_imp",
            "method.rounds=3",
            "method.prune_epochs=1",
            "method.final_density=0.3",
            *TINY_RUN,
        ]
    )
    metrics = run(cfg, tmp_path)
    tasks = ["pos", "chunk", "ner"]
    imp = SparseIMP(rounds=3, final_density=0.3, prune_epochs=1)
    n_w = tiny_weight_matrix_size()
    biases = tiny_encoder_size() - n_w
    counts = imp.kept_counts(n_w)
    rounds = metrics["masks"]["rounds"]
    assert set(rounds) == set(tasks)
    for t in tasks:
        kept = metrics["masks"]["kept"][t]
        # Densities 1, 0.669, 0.448, 0.3: the default keep_ratio 0.316 is nearest round 3.
        assert kept == counts[3], t
        assert metrics["masks"]["density"][t] == pytest.approx(kept / n_w)
        assert [row["round"] for row in rounds[t]] == [0, 1, 2, 3]
        assert [row["chosen"] for row in rounds[t]] == [False, False, False, True]
        assert [row["density"] for row in rounds[t]] == pytest.approx([c / n_w for c in counts])
        assert metrics["params"]["per_task"][t] == kept + biases
    assert metrics["params"]["used"] == metrics["masks"]["union"] + biases
    assert metrics["time"]["search_s"] > 0
    assert metrics["fidelity"]["method"] == imp.deviations
    with (tmp_path / "history.csv").open() as f:
        phases = [row["phase"] for row in csv.DictReader(f)]
    assert phases == [f"imp/{t}/round{r}" for t in tasks for r in range(3)] + ["train"]
    # Search rounds train one task jointly; the main phase makes one single-task update per task.
    main = [out for per_task, out in calls if per_task]
    assert main, "the main phase never asked for per-task updates"
    for out in main:
        assert sorted(next(iter(u[0][1])) for u in out) == sorted(tasks)
        assert all(len(u) == 1 and len(u[0][1]) == 1 for u in out)
    assert all(len(out) == 1 and len(out[0][0][1]) == 1 for per_task, out in calls if not per_task)


def test_epoch_plan_states_the_pruning_epochs_of_a_null_prune_epochs() -> None:
    """``prune_epochs=null`` trains each IMP round for trainer.max_epochs (their run_conll03.sh)."""
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from mtlrun.run import epoch_plan

    method = SimpleNamespace(main_epochs=lambda n: n)
    cfg = OmegaConf.create({"method": {"prune_epochs": None, "warmup_epochs": 0}})
    assert epoch_plan(cfg, method, 7) == {"imp (per round and task)": 7, "train": 7}
    cfg.method.prune_epochs = 5
    assert epoch_plan(cfg, method, 7) == {"imp (per round and task)": 5, "train": 7}
    assert epoch_plan(OmegaConf.create({"method": {}}), method, 7) == {"train": 7}
