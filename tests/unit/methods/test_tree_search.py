"""method=tree_search (seed 001 §5): eq. 5.1-5.8, Algorithms 2-5, artefacts, a tiny run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from mtlrun.backbones.cnn_bilstm import CNNBiLSTM
from mtlrun.backbones.lenet_bn import LeNetBN
from mtlrun.backbones.resnet import ResNet
from mtlrun.config.validate import validate
from mtlrun.data.base import InputSpec, Task
from mtlrun.errors import ConfigError
from mtlrun.methods import stress as S
from mtlrun.methods.tree_search import SlimmedTree, TreeSearch, capture, last_bn
from mtlrun.run import run
from tests.conftest import QUICK

SPEC = InputSpec("image", channels=1, height=28, width=28)
TASKS = [Task(n, "accuracy", tuple(str(i) for i in range(10))) for n in ("a", "b", "c")]


def tiny_tree(l1: float = 0.0) -> SlimmedTree:
    torch.manual_seed(0)
    return TreeSearch(l1=l1).build(LeNetBN(input_spec=SPEC, channels=[3, 4]), TASKS)


# ------------------------------------------------------------------ eq. 5.1-5.8


def test_js_divergence_matches_a_hand_value() -> None:
    # p = 0.5, q = 0.25, m = 0.375: ½(0.5 ln(0.5/0.375) + 0.25 ln(0.25/0.375))
    expected = 0.5 * (0.5 * math.log(0.5 / 0.375) + 0.25 * math.log(0.25 / 0.375))
    got = S.js_divergence(torch.tensor(0.5, dtype=torch.float64), torch.tensor(0.25).double())
    assert float(got) == pytest.approx(expected, rel=1e-9)
    assert expected == pytest.approx(0.02123738, abs=1e-8)


def test_channel_divergence_is_zero_on_identical_activations_and_symmetric() -> None:
    torch.manual_seed(0)
    z1, z2 = torch.randn(6, 3, 4, 4), torch.randn(6, 3, 4, 4)
    assert torch.equal(S.channel_divergence(z1, z1), torch.zeros(3, dtype=torch.float64))
    d12, d21 = S.channel_divergence(z1, z2), S.channel_divergence(z2, z1)
    assert d12.shape == (3,)
    assert torch.allclose(d12, d21)
    assert bool((d12 > 0).all())


def test_channel_divergence_averages_samples_and_positions() -> None:
    z1 = torch.zeros(2, 2, 3, 3)  # σ = 0.5 everywhere
    z2 = torch.zeros(2, 2, 3, 3)
    z2[:, 1] = math.log(1 / 3)  # σ = 0.25 in channel 1
    expected = float(S.js_divergence(torch.tensor(0.5).double(), torch.tensor(0.25).double()))
    assert S.channel_divergence(z1, z2).tolist() == pytest.approx([0.0, expected])


def test_importance_sums_to_one_and_uses_absolute_scales() -> None:
    imp = S.importance(torch.tensor([1.0, -3.0, 0.0, 4.0]))
    assert float(imp.sum()) == pytest.approx(1.0)
    assert imp.tolist() == pytest.approx([0.125, 0.375, 0.0, 0.5])
    assert S.importance(torch.zeros(4)).tolist() == pytest.approx([0.25] * 4)


def test_compatibility_weights_channels_and_stress_sums_tasks() -> None:
    div = torch.tensor([0.1, 0.3])
    assert S.compatibility(div, torch.tensor([0.25, 0.75])) == pytest.approx(0.25)
    assert S.stress({"a": 0.25, "b": 0.5}) == pytest.approx(0.75)


# ------------------------------------------------------------------ Algorithm 4 and clustering


def test_children_affinity_hand_case() -> None:
    tasks = ["a", "b", "c"]
    divergence = np.array([[0.0, 1.0, 4.0], [1.0, 0.0, 2.0], [4.0, 2.0, 0.0]])
    # child 0 -> {a, b}, child 1 -> {c}: Â01 = mean(4, 2) = 3, Â10 = max(4, 2) = 4, Ã = 3.5
    got = S.children_affinity(divergence, tasks, [["a", "b"], ["c"]])
    assert np.allclose(got, [[1.0, math.exp(-1.0)], [math.exp(-1.0), 1.0]])
    three = S.children_affinity(divergence, tasks, [["a"], ["b"], ["c"]])
    # Ã = [[0, 1, 4], [1, 0, 2], [4, 2, 0]] / 4
    assert three[0, 1] == pytest.approx(math.exp(-0.25))
    assert three[1, 2] == pytest.approx(math.exp(-0.5))
    assert three[0, 2] == pytest.approx(math.exp(-1.0))


def test_spectral_split_recovers_a_block_diagonal_affinity() -> None:
    members = [0, 1, 0, 1, 0]
    affinity = np.array([[1.0 if a == b else 0.05 for b in members] for a in members])
    assert S.spectral_split(affinity, seed=0) == [[0, 2, 4], [1, 3]]
    assert S.spectral_split(np.ones((2, 2)), seed=0) == [[0], [1]]


# ------------------------------------------------------------------ model side


def test_peel_gives_exactly_the_tasks_outputs_of_the_joint_network() -> None:
    model = tiny_tree(l1=1e-4)
    model.split("conv2", [["head:a"], ["head:b", "head:c"]])
    model.eval()
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        joint = model(x)
        for t in ("a", "b"):
            peel = model.peel(t).eval()
            assert isinstance(peel, SlimmedTree) and peel.l1 == pytest.approx(1e-4)
            assert torch.equal(peel(x)[t], joint[t])


def test_regularizer_is_l1_on_batchnorm_scales() -> None:
    model = tiny_tree(l1=0.5)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.fill_(-2.0)
    reg = model.regularizer()
    assert reg is not None and float(reg.detach()) == pytest.approx(0.5 * 2.0 * (3 + 4))
    reg.backward()
    assert torch.equal(last_bn(model.blocks["conv1"]).weight.grad, torch.full((3,), -0.5))
    assert tiny_tree(l1=0.0).regularizer() is None


def test_capture_returns_the_normalised_pre_affine_input() -> None:
    model = tiny_tree()
    bn = last_bn(model.blocks["conv2"])
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 2)
        bn.bias.uniform_(-1, 1)
    seen: dict[str, torch.Tensor] = {}
    bn.register_forward_hook(lambda _m, _i, out: seen.update(out=out))
    x = torch.randn(3, 1, 28, 28)
    z = capture(model, ["conv2"], x)["conv2"]
    assert model.training  # the mode is restored
    affine = z * bn.weight.view(1, -1, 1, 1) + bn.bias.view(1, -1, 1, 1)
    assert torch.allclose(affine, seen["out"], atol=1e-5)


def test_last_bn_skips_a_residual_shortcut() -> None:
    resnet = ResNet(input_spec=SPEC, layers=[1, 1, 1, 1], width=4)
    block = resnet.make_block("layer2_0")  # stride 2: a downsample with its own BN
    assert last_bn(block) is block.bn2
    assert isinstance(last_bn(resnet.make_block("stem")), torch.nn.BatchNorm2d)


# ------------------------------------------------------------------ configuration


def test_every_bad_key_is_named_at_once() -> None:
    with pytest.raises(ConfigError) as e:
        TreeSearch(n_splits=0, peel_epochs=0, l1=-1.0, stationary_share=1.5, similarity_batches=0)
    text = str(e.value)
    for key in ("n_splits", "peel_epochs", "l1", "stationary_share", "similarity_batches"):
        assert f"`method.{key}`" in text
    assert (
        "`method.stationary_share` should be in [0, 1]. Found `method.stationary_share = 1.5`."
        in text
    )


def test_text_backbone_is_refused_in_build_and_before_data_loads(compose_cfg) -> None:
    text = CNNBiLSTM(input_spec=InputSpec("text", n_words=20, n_chars=10), word_dim=8,
                     char_dim=4, char_filters=4, hidden=6)  # fmt: skip
    with pytest.raises(ConfigError, match="`backbone` should be one of lenet_bn, resnet"):
        TreeSearch().build(text, TASKS)
    with pytest.raises(ConfigError, match=r"`backbone` should be one of lenet_bn, resnet for "
                       r"method=tree_search .*Found `backbone=cnn_bilstm`"):  # fmt: skip
        validate(compose_cfg(["method=tree_search"]))


# ------------------------------------------------------------------ end to end

TWO = ["data=mnist3", "data.tasks=[mnist,fashion]", "data.valid_size=16", "backbone=lenet_bn"]
FAST = [
    "method.peel_epochs=1",
    "method.max_stationary_epochs=2",
    "method.similarity_batches=1",
    "trainer.max_epochs=1",
    "data.limit_train=16",
    "trainer.plots=false",
]


def test_tiny_search_writes_the_tree_and_test_metrics(compose_cfg, tmp_path: Path) -> None:
    cfg = compose_cfg(
        [
            "method=tree_search",
            *TWO,
            "balancer=hybrid",
            "method.n_splits=2",
            "method.stationary_share=0.0",
            *QUICK,
            *FAST,
        ]
    )
    metrics = run(cfg, tmp_path)
    assert set(metrics["test"]) == {"mnist", "fashion"}
    tree = json.loads((tmp_path / "tree.json").read_text())
    steps = tree["steps"]
    assert [s["step"] for s in steps] == [0, 1, 2]
    first = steps[1]
    assert first["split"]["block"] == "conv2"  # the only splittable block of hard sharing
    assert set(first["stress"]) == {"conv2"} and first["stress"]["conv2"] >= 0
    assert first["task_affinity"]["conv2"]["tasks"] == ["mnist", "fashion"]
    assert steps[2]["split"]["block"] == "conv1"  # then conv1 has two children
    assert steps[2]["paths"]["mnist"] == ["conv1-1", "conv2-1", "head:mnist"]
    assert steps[0]["training"]["epochs"] == 1  # a share >= 0 is reached after one epoch
    for name in ("tree.png", "affinity_conv2_step1.csv", "affinity_conv2_step1.png"):
        assert (tmp_path / name).is_file(), name
    rows = (tmp_path / "affinity_conv2_step1.csv").read_text().splitlines()
    assert rows[0] == ",mnist,fashion" and rows[1].startswith("mnist,0,")
    assert metrics["params"]["per_task"]["mnist"] > 0
    # resuming the main phase: a fresh model takes the recorded splits, then the weights
    method = TreeSearch()
    fresh = method.build(LeNetBN(input_spec=SPEC), [Task(n, "accuracy", tuple("0123456789"))
                                                    for n in ("mnist", "fashion")])  # fmt: skip
    search = {"tree": {"steps": steps}}
    rebuilt = method.rebuild(fresh, search)
    assert rebuilt.paths == {t: tuple(p) for t, p in steps[-1]["paths"].items()}
    saved = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=False)
    rebuilt.load_state_dict(saved["model"])


def test_random_splits_use_the_seed(compose_cfg, tmp_path: Path) -> None:
    overrides = ["method=tree_search", *TWO, "method.random_splits=true", "method.n_splits=1",
                 *QUICK, *FAST]  # fmt: skip
    run(compose_cfg(overrides), tmp_path / "r1")
    tree = json.loads((tmp_path / "r1" / "tree.json").read_text())
    assert tree["random_splits"] is True
    split = tree["steps"][1]["split"]
    assert split["block"] == "conv2" and sorted(map(len, split["groups"])) == [1, 1]
    assert "stress" not in tree["steps"][1]
    assert not list((tmp_path / "r1").glob("affinity_*.csv"))
    assert (tmp_path / "r1" / "tree.png").is_file()


def test_random_split_partitions_are_non_empty_and_reproducible() -> None:
    import random

    model = tiny_tree()
    got = [TreeSearch().choose_randomly(model, random.Random(s)) for s in (1, 1, 2)]
    assert got[0] == got[1]
    for block, groups in got:
        assert block == "conv2" and len(groups) == 2 and all(groups)
        assert sorted(c for g in groups for c in g) == ["head:a", "head:b", "head:c"]
