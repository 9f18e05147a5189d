"""single_subnet: one pruned private copy of the encoder per task, nothing shared."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mtlrun.methods.single_subnet import SingleSubnet
from mtlrun.methods.sparse_imp import SparseIMP
from mtlrun.run import run
from tests.unit.methods._sparse import (
    TINY_RUN,
    tiny_backbone,
    tiny_data,
    tiny_encoder_size,
    tiny_weight_matrix_size,
)

TASKS = ("pos", "chunk", "ner")


def _own(task: str) -> set[str]:
    return {f"embed:{task}", f"bilstm:{task}"}


def test_build_gives_each_task_its_own_weight_matrix_keys() -> None:
    data = tiny_data()
    model = SingleSubnet().build(tiny_backbone(data), data.tasks)
    assert model.paths == {t: (f"embed:{t}", f"bilstm:{t}", f"head:{t}") for t in TASKS}
    assert model.shared_blocks() == []
    params = dict(model.blocks.named_parameters())
    assert len(model.maskable) == 3 * 5
    for t in TASKS:
        keys = [k for k in model.maskable if k.split(".", 1)[0] in _own(t)]
        assert len(keys) == 5
        assert sum(params[k].numel() for k in keys) == tiny_weight_matrix_size()
    assert all(params[k].ndim >= 2 for k in model.maskable)
    assert model.param_counts()["used"] == 3 * tiny_encoder_size()


def test_single_subnet_run_masks_are_private(compose_cfg, tmp_path: Path) -> None:
    cfg = compose_cfg(
        [
            "method=single_subnet",
            "method.rounds=1",
            "method.prune_epochs=1",
            "method.final_density=0.5",
            "method.candidates=1",
            *TINY_RUN,
        ]
    )
    metrics = run(cfg, tmp_path)
    masks = torch.load(tmp_path / "masks.pt")
    n_w = tiny_weight_matrix_size()
    biases = tiny_encoder_size() - n_w
    kept = round(0.5 * n_w)  # candidates=1: the round nearest keep_ratio 0.5 (round 1, density 0.5)
    assert set(masks) == set(TASKS)
    for t in TASKS:
        assert {k.split(".", 1)[0] for k in masks[t]} == _own(t)  # only its own copy
        assert len(masks[t]) == 5
        assert sum(int(m.sum()) for m in masks[t].values()) == kept
        assert metrics["masks"]["kept"][t] == kept
        assert metrics["masks"]["density"][t] == kept / n_w  # relative to its own copy
        assert metrics["params"]["per_task"][t] == kept + biases
    assert metrics["masks"]["iou"] == {"pos|chunk": 0.0, "pos|ner": 0.0, "chunk|ner": 0.0}
    assert metrics["masks"]["overlap_ratio"] == 0.0
    assert metrics["masks"]["union"] == 3 * kept
    assert metrics["params"]["used"] == sum(metrics["params"]["per_task"].values())
    assert metrics["params"]["supernet"] == 3 * tiny_encoder_size()
    notes = SingleSubnet(rounds=1, final_density=0.5, prune_epochs=1, candidates=1).deviations
    assert metrics["fidelity"]["method"] == notes
    assert notes[0].startswith("The subnets are retrained from θ0 side by side")
    assert not any(n.startswith(("The multi-task phase", "Per-task updates")) for n in notes)


SUBNET = ["method.rounds=2", "method.prune_epochs=1", "method.final_density=0.25"]
SUBNET += ["method.keep_ratio=0.5", "trainer.max_epochs=1", "trainer.progress=false"]
SUBNET += ["trainer.plots=false", "data.n_train=40", "data.n_valid=12", "data.n_test=12"]
SUBNET += ["backbone.word_dim=8", "backbone.char_dim=4", "backbone.char_filters=4"]
SUBNET += ["backbone.hidden=6"]


def test_copies_start_from_the_encoder_sparse_imp_draws_with_the_same_seed(compose_cfg) -> None:
    data = tiny_data()
    torch.manual_seed(3)
    shared = SparseIMP().build(tiny_backbone(data), data.tasks)
    torch.manual_seed(3)
    copies = SingleSubnet().build(tiny_backbone(data), data.tasks)
    theirs = dict(shared.blocks.named_parameters())
    for key, value in copies.blocks.named_parameters():
        block, rest = key.split(".", 1)
        shared_block = block if block.startswith("head:") else block.split(":")[0]
        assert torch.equal(value, theirs[f"{shared_block}.{rest}"]), key
    # copies, not one module under three names
    assert copies.blocks["embed:pos"] is not copies.blocks["embed:ner"]


def test_masks_from_a_sparse_imp_run_are_the_masks_its_own_pruning_finds(
    compose_cfg, tmp_path: Path
) -> None:
    source = tmp_path / "imp"
    run(compose_cfg(["method=sparse_imp", *SUBNET]), source)
    own = run(compose_cfg(["method=single_subnet", *SUBNET]), tmp_path / "own")
    taken = run(
        compose_cfg(["method=single_subnet", *SUBNET, f"method.masks_from={source}"]),
        tmp_path / "taken",
    )
    assert taken["search"]["masks_from"] == str(source)
    assert taken["epochs"]["phases"] == {"train": 1}  # no pruning round trained
    a = torch.load(tmp_path / "own" / "masks.pt")
    b = torch.load(tmp_path / "taken" / "masks.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[t][k], b[t][k]) for t in a for k in a[t])
    assert taken["test"] == own["test"]


def test_masks_from_a_run_with_other_pruning_inputs_is_refused_naming_them(
    compose_cfg, tmp_path: Path
) -> None:
    from mtlrun.errors import ConfigError

    source = tmp_path / "imp"
    run(compose_cfg(["method=sparse_imp", *SUBNET, "optim.lr=0.3"]), source)
    with pytest.raises(ConfigError, match=r"optim.lr \(there 0.3, here 0.1\)"):
        run(
            compose_cfg(["method=single_subnet", *SUBNET, f"method.masks_from={source}"]),
            tmp_path / "taken",
        )
    with pytest.raises(ConfigError, match="not a finished run with masks"):
        run(
            compose_cfg(["method=single_subnet", *SUBNET, f"method.masks_from={tmp_path}"]),
            tmp_path / "none",
        )
