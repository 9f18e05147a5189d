"""Soft sharing (cross-stitch / L2 coupling) and hierarchical sharing: structure, seed 000
Table 4.2 parameter counts, and which weights each task's output and loss depend on."""

from __future__ import annotations

import itertools

import pytest
import torch

from mtlrun.backbones.cnn_bilstm import CNNBiLSTM
from mtlrun.backbones.lenet_bn import LeNetBN
from mtlrun.data.base import InputSpec, Task, TextInputs
from mtlrun.errors import ConfigError
from mtlrun.methods.hierarchical import Hierarchical
from mtlrun.methods.soft import SoftSharedModel, SoftSharing

TEXT = InputSpec("text", n_words=20, n_chars=10)
TINY = {"word_dim": 8, "char_dim": 4, "char_filters": 4, "hidden": 6}
TASKS = [
    Task("pos", "accuracy", ("a", "b", "c", "d")),
    Task("chunk", "f1", ("O", "B-NP", "I-NP")),
    Task("ner", "f1", ("O", "B-PER", "I-PER")),
]
NAMES = [t.name for t in TASKS]


def tiny() -> CNNBiLSTM:
    return CNNBiLSTM(input_spec=TEXT, **TINY)


def text_batch() -> TextInputs:
    lengths = torch.tensor([5, 3, 4])
    words = torch.randint(2, 20, (3, 5)) * (torch.arange(5) < lengths[:, None])
    chars = torch.randint(2, 10, (3, 5, 4)) * (words[..., None] > 0)
    return TextInputs(words, chars, lengths)


# ------------------------------------------------------------- seed 000 Table 4.2 counts


def test_soft_counts_with_the_default_backbone() -> None:
    model = SoftSharing().build(CNNBiLSTM(input_spec=TEXT), TASKS)
    counts = model.param_counts()
    assert counts["used"] == 1_596_330  # char CNN 2,730 + 3 × BiLSTM 531,200
    assert counts["supernet"] == 1_596_330  # the stitch matrix is not an encoder parameter
    assert counts["per_task"] == {t: 533_930 for t in NAMES}


def test_hierarchical_counts_with_the_default_backbone() -> None:
    model = Hierarchical().build(CNNBiLSTM(input_spec=TEXT), TASKS)
    counts = model.param_counts()
    assert counts["used"] == 1_497_130  # 2,730 + 531,200 + layer 2 (input 400) 963,200
    assert counts["supernet"] == 1_497_130
    assert counts["per_task"] == {"pos": 533_930, "chunk": 1_497_130, "ner": 1_497_130}


# -------------------------------------------------------------------------- soft: build


def test_soft_structure() -> None:
    model = SoftSharing().build(tiny(), TASKS)
    assert isinstance(model, SoftSharedModel)
    assert model.paths == {t: ("embed", f"bilstm:{t}", f"head:{t}") for t in NAMES}
    assert model.shared_blocks() == ["embed"]
    assert model.stitch is not None and model.stitch.shape == (3, 3)
    # stitch_self on the diagonal, the rest shared equally: rows sum to 1.
    assert torch.allclose(model.stitch.diagonal(), torch.full((3,), 0.9))
    assert torch.allclose(model.stitch.sum(1), torch.ones(3))
    assert any(p is model.stitch for p in model.weight_parameters())  # α trains with θ
    assert model.regularizer() is None


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [({"coupling": "sum"}, "method.coupling"), ({"stitch_self": 1.5}, "method.stitch_self")],
)
def test_soft_bad_arguments(kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        SoftSharing(**kwargs)


@pytest.mark.parametrize("method", [SoftSharing(), Hierarchical()], ids=["soft", "hierarchical"])
def test_needs_the_cnn_bilstm_backbone(method) -> None:  # noqa: ANN001
    lenet = LeNetBN(input_spec=InputSpec("image", channels=1, height=28, width=28))
    tasks = [Task("mnist", "accuracy", tuple("0123456789"))]
    with pytest.raises(ConfigError, match="backbone=cnn_bilstm"):
        method.build(lenet, tasks)


# -------------------------------------------------------------------------- soft: L2


def test_l2_coupling_regularizer_by_hand() -> None:
    torch.manual_seed(0)
    model = SoftSharing(coupling="l2", l2_weight=0.01).build(tiny(), TASKS)
    assert model.stitch is None
    lstms = [dict(model.blocks[f"bilstm:{t}"].named_parameters()) for t in NAMES]
    by_hand = sum(
        ((a[k] - b[k]) ** 2).sum() for a, b in itertools.combinations(lstms, 2) for k in a
    )
    reg = model.regularizer()
    assert reg is not None and float(reg.detach()) > 0
    assert torch.allclose(reg, 0.01 * by_hand)
    # Its gradient pulls θ_s towards θ_t: 2λ Σ_t (θ_s − θ_t).
    reg.backward()
    k = "lstm.weight_hh_l0"
    expected = 2 * 0.01 * ((lstms[0][k] - lstms[1][k]) + (lstms[0][k] - lstms[2][k]))
    assert torch.allclose(lstms[0][k].grad, expected.detach(), atol=1e-7)
    assert model.blocks["embed"].char_cnn.weight.grad is None  # only the task BiLSTMs are coupled


def test_l2_regularizer_is_zero_for_identical_copies_and_off_with_zero_weight() -> None:
    model = SoftSharing(coupling="l2", l2_weight=0.5).build(tiny(), TASKS)
    state = model.blocks["bilstm:pos"].state_dict()
    for t in ("chunk", "ner"):
        model.blocks[f"bilstm:{t}"].load_state_dict(state)
    assert float(model.regularizer().detach()) == 0.0
    assert SoftSharing(coupling="l2", l2_weight=0.0).build(tiny(), TASKS).regularizer() is None


def test_l2_coupled_outputs_are_independent_per_task() -> None:
    torch.manual_seed(0)
    model = SoftSharing(coupling="l2").build(tiny(), TASKS).eval()
    batch = text_batch()
    before = model(batch)
    with torch.no_grad():
        for p in model.blocks["bilstm:chunk"].parameters():
            p.add_(0.5)
    after = model(batch)
    assert torch.equal(before["pos"], after["pos"]) and torch.equal(before["ner"], after["ner"])
    assert not torch.allclose(before["chunk"], after["chunk"])


# ------------------------------------------------------------------ soft: cross-stitch


def _manual(model: SoftSharedModel, batch: TextInputs, task: str) -> torch.Tensor:
    return model.blocks[f"head:{task}"](
        model.blocks[f"bilstm:{task}"](model.blocks["embed"](batch))
    )


def test_cross_stitch_identity_is_independent_networks_on_a_shared_embedding() -> None:
    torch.manual_seed(0)
    model = SoftSharing().build(tiny(), TASKS).eval()
    with torch.no_grad():
        model.stitch.copy_(torch.eye(3))
    batch = text_batch()
    out = model(batch)
    for t in NAMES:
        assert torch.allclose(out[t], _manual(model, batch, t), atol=1e-6), t
    with torch.no_grad():
        for p in model.blocks["bilstm:chunk"].parameters():
            p.add_(0.5)
    after = model(batch)
    assert torch.equal(after["pos"], out["pos"]) and torch.equal(after["ner"], out["ner"])
    assert not torch.allclose(after["chunk"], out["chunk"])
    assert set(model(batch, tasks=["ner"])) == {"ner"}


def test_cross_stitch_mixes_other_tasks_hidden_states() -> None:
    torch.manual_seed(0)
    model = SoftSharing(stitch_self=0.8).build(tiny(), TASKS).eval()
    batch = text_batch()
    out = model(batch)
    # Head pos reads 0.8·h_pos + 0.1·h_chunk + 0.1·h_ner.
    shared = model.blocks["embed"](batch)
    h = {t: model.blocks[f"bilstm:{t}"](shared) for t in NAMES}
    mixed = 0.8 * h["pos"].x + 0.1 * h["chunk"].x + 0.1 * h["ner"].x
    ref = model.blocks["head:pos"](type(shared)(mixed, shared.lengths))
    assert torch.allclose(out["pos"], ref, atol=1e-6)
    assert not torch.allclose(out["pos"], _manual(model, batch, "pos"), atol=1e-4)
    with torch.no_grad():
        for p in model.blocks["bilstm:chunk"].parameters():
            p.add_(0.5)
    assert not torch.allclose(model(batch)["pos"], out["pos"], atol=1e-6)


def test_gradients_reach_the_stitch_and_other_tasks_bilstms() -> None:
    torch.manual_seed(0)
    model = SoftSharing().build(tiny(), TASKS).eval()
    model(text_batch())["pos"].pow(2).mean().backward()
    assert model.stitch.grad is not None
    assert float(model.stitch.grad[0].abs().sum()) > 0  # row of pos
    assert float(model.stitch.grad[1:].abs().sum()) == 0  # the other rows do not feed pos
    for t in NAMES:
        g = model.blocks[f"bilstm:{t}"].lstm.weight_hh_l0.grad
        assert g is not None and float(g.abs().sum()) > 0, t
    assert model.blocks["head:chunk"].linear.weight.grad is None


# ------------------------------------------------------------------------- hierarchical


def test_hierarchical_structure_and_gradients() -> None:
    torch.manual_seed(0)
    model = Hierarchical(task_layers={"pos": 1, "chunk": 2, "ner": 2}).build(tiny(), TASKS).eval()
    assert model.paths == {
        "pos": ("embed", "bilstm", "head:pos"),
        "chunk": ("embed", "bilstm", "bilstm2", "head:chunk"),
        "ner": ("embed", "bilstm", "bilstm2", "head:ner"),
    }
    assert model.blocks["bilstm2"].lstm.input_size == 2 * TINY["hidden"]
    batch = text_batch()
    out = model(batch)
    model.blocks["bilstm2"].zero_grad(set_to_none=True)
    out["pos"].pow(2).mean().backward(retain_graph=True)
    assert all(p.grad is None for p in model.blocks["bilstm2"].parameters())
    assert float(model.blocks["bilstm"].lstm.weight_hh_l0.grad.abs().sum()) > 0
    out["chunk"].pow(2).mean().backward()
    assert float(model.blocks["bilstm2"].lstm.weight_hh_l0.grad.abs().sum()) > 0
    # pos reads layer 1 directly.
    ref = model.blocks["head:pos"](model.blocks["bilstm"](model.blocks["embed"](batch)))
    assert torch.allclose(out["pos"], ref, atol=1e-6)


def test_hierarchical_task_layers_configurable() -> None:
    flat = Hierarchical(task_layers={"pos": 1, "chunk": 1, "ner": 1}).build(tiny(), TASKS)
    assert "bilstm2" not in flat.blocks
    assert all(p == ("embed", "bilstm", f"head:{t}") for t, p in flat.paths.items())
    missing = Hierarchical(task_layers={"pos": 1}).build(tiny(), TASKS)  # others read the top layer
    assert missing.paths["ner"] == ("embed", "bilstm", "bilstm2", "head:ner")


@pytest.mark.parametrize("value", [0, 3])
def test_hierarchical_bad_layer_is_a_config_error(value: int) -> None:
    with pytest.raises(ConfigError, match="task_layers"):
        Hierarchical(task_layers={"pos": 1, "chunk": value, "ner": 2})
