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
from mtlrun.methods.tree_measure import block_divergences, probe_batches
from mtlrun.methods.tree_search import SlimmedTree, TreeSearch, capture, last_bn
from mtlrun.model.paths import MultiTaskModel
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


def test_pair_weights_sum_both_normalised_scales_as_inter_stress() -> None:
    # inter_stress.py: (γ_i/Σγ_i + γ_j/Σγ_j) · S, summed over channels (weights sum to 2)
    g1, g2 = torch.tensor([1.0, -3.0]), torch.tensor([2.0, 2.0])
    assert S.pair_weights(g1, g2).tolist() == pytest.approx([0.75, 1.25])
    assert S.pair_weights(g1, g2, "mean").tolist() == pytest.approx([0.375, 0.625])
    div = torch.tensor([0.1, 0.3])
    assert S.compatibility(div, S.pair_weights(g1, g2)) == pytest.approx(0.45)
    assert S.compatibility(div, S.pair_weights(g1, g2, "mean")) == pytest.approx(0.225)


def test_random_position_reads_one_position_per_batch() -> None:
    # feature_similarity.py: r, c = randint(h), randint(w) per batch; JS at (r, c) only
    z1 = torch.zeros(4, 2, 3, 3)
    z2 = torch.zeros(4, 2, 3, 3)
    z2[:, 1, 2, 1] = math.log(1 / 3)  # σ = 0.25 at one position of channel 1
    jsd = float(S.js_divergence(torch.tensor(0.5).double(), torch.tensor(0.25).double()))
    mean = S.channel_divergence(z1, z2, "mean")
    assert mean.tolist() == pytest.approx([0.0, jsd / 9])
    seen = set()
    for seed in range(40):
        g, twin = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        r, c = (
            int(torch.randint(0, 3, (), generator=twin)),
            int(torch.randint(0, 3, (), generator=twin)),
        )
        got = S.channel_divergence(z1, z2, "random", g).tolist()
        assert got == pytest.approx([0.0, jsd if (r, c) == (2, 1) else 0.0])
        seen.add((r, c))
    assert len(seen) > 1 and (2, 1) in seen


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


def test_regularizer_is_the_authors_smooth_l1_slimming_loss() -> None:
    # utils/regularizers.py: λ·Σ_blocks F.smooth_l1_loss(γ, 0) (a mean over channels, Huber β=1)
    model = tiny_tree(l1=0.5)
    conv1, conv2 = last_bn(model.blocks["conv1"]), last_bn(model.blocks["conv2"])
    with torch.no_grad():
        conv1.weight.copy_(torch.tensor([0.5, -2.0, 0.0]))
        conv2.weight.fill_(0.2)
    reg = model.regularizer()
    # conv1: (½·0.25 + (2 − ½) + 0) / 3; conv2: ½·0.04 per channel
    expected = 0.5 * ((0.125 + 1.5 + 0.0) / 3 + 0.02)
    assert reg is not None and float(reg.detach()) == pytest.approx(expected)
    reg.backward()
    # d/dγ: λ·clip(γ, −1, 1) / c
    assert conv1.weight.grad.tolist() == pytest.approx([0.5 * 0.5 / 3, -0.5 / 3, 0.0])
    assert tiny_tree(l1=0.0).regularizer() is None


def test_regularizer_l1_form_is_eq_5_6() -> None:
    torch.manual_seed(0)
    model = TreeSearch(l1=0.5, l1_form="l1").build(LeNetBN(input_spec=SPEC, channels=[3, 4]), TASKS)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.fill_(-2.0)
    reg = model.regularizer()
    assert reg is not None and float(reg.detach()) == pytest.approx(0.5 * 2.0 * (3 + 4))


def test_peels_carry_their_own_slimming_weight() -> None:
    model = tiny_tree(l1=0.001)
    peel = model.peel("a", l1=0.0045)
    assert isinstance(peel, SlimmedTree) and peel.l1 == 0.0045 and peel.form == "smooth_l1"
    assert model.peel("a").l1 == 0.001


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


def _sig_jsd(a: float, b: float) -> float:
    """D_JS(σ(a) ‖ σ(b)) with the KL of eq. 5.3 (feature_similarity.py), by hand."""
    p, q = 1 / (1 + math.exp(-a)), 1 / (1 + math.exp(-b))
    m = (p + q) / 2
    return 0.5 * (p * math.log(p / m) + q * math.log(q / m))


def _relu_tree() -> tuple[SlimmedTree, dict[str, MultiTaskModel]]:
    """A one-channel trunk (identity -> BN with mean 0, var 1, ε 0, γ 1): Z̃ = the input.
    The peel of ``a`` puts a ReLU first, the peel of ``b`` a Hardtanh(-1, 1)."""
    bn = torch.nn.BatchNorm2d(1, eps=0.0)
    blocks = {"trunk": torch.nn.Sequential(torch.nn.Identity(), bn)}
    for t in ("a", "b"):
        blocks[f"head:{t}"] = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    joint = SlimmedTree(blocks, {t: ["trunk", f"head:{t}"] for t in ("a", "b")})
    peels: dict[str, MultiTaskModel] = {t: joint.peel(t) for t in ("a", "b")}
    peels["a"].blocks["trunk"][0] = torch.nn.ReLU()
    peels["b"].blocks["trunk"][0] = torch.nn.Hardtanh(-1.0, 1.0)
    return joint, peels


def test_stress_compares_each_peel_on_its_own_tasks_images_only() -> None:
    joint, peels = _relu_tree()
    # task a's images are 3 (ReLU keeps them; Hardtanh gives 1), task b's are -2 (ReLU: 0,
    # Hardtanh: -1); the joint network passes both unchanged.
    probes = {"a": [torch.full((5, 1, 2, 2), 3.0)], "b": [torch.full((5, 1, 2, 2), -2.0)]}
    inner, pairs = block_divergences(joint, peels, ["trunk"], probes, "random",
                                     torch.Generator().manual_seed(0))  # fmt: skip
    # Alg. 2 / stress_points: peel a on a's images (3 vs 3), peel b on b's images (-1 vs -2);
    # on each other's images they would differ (0 vs -2, 1 vs 3).
    assert inner["trunk"]["a"].tolist() == pytest.approx([0.0], abs=1e-12)
    assert inner["trunk"]["b"].tolist() == pytest.approx([_sig_jsd(-1.0, -2.0)])
    # Alg. 3 / feature_similarity: the pair on every task's images, per-task means added up
    both = _sig_jsd(3.0, 1.0) + _sig_jsd(0.0, -1.0)
    assert pairs["trunk"][("a", "b")].tolist() == pytest.approx([both])
    # C with the weights I(γ_peel) + I(γ_joint) = 1 + 1 (inter_stress.py), one channel
    scored = TreeSearch().score(joint, peels, inner, pairs)
    assert scored["stress"]["trunk"] == pytest.approx(2 * _sig_jsd(-1.0, -2.0))
    assert scored["compatibility"]["trunk"]["a"] == pytest.approx(0.0, abs=1e-12)
    assert scored["task_affinity"]["trunk"] == {
        "tasks": ["a", "b"], "matrix": [[0.0, pytest.approx(2 * both)], [pytest.approx(2 * both), 0.0]]
    }  # fmt: skip
    halves = TreeSearch(importance="mean").score(joint, peels, inner, pairs)
    assert halves["stress"]["trunk"] == pytest.approx(_sig_jsd(-1.0, -2.0))


def test_probe_batches_take_one_tasks_images_from_the_chosen_split() -> None:
    class Data:
        def eval_groups(self, split: str, batch: int):  # noqa: ANN202
            for task in ("a", "b"):
                for k in range(3):
                    yield (split, task, k, batch), {task: None}

    got = probe_batches(Data(), "b", 2, "train")
    assert got == [("train", "b", 0, 256), ("train", "b", 1, 256)]
    assert len(probe_batches(Data(), "a", None, "valid")) == 3


def test_the_most_stressed_block_is_split() -> None:
    model = tiny_tree()
    model.split("conv2", [["head:a"], ["head:b", "head:c"]])
    # splittable now: conv1 (children conv2-1, conv2-2) and conv2-2 (children head:b, head:c)
    affinity = {
        "conv1": {"tasks": ["a", "b", "c"], "matrix": np.ones((3, 3)).tolist()},
        "conv2-2": {"tasks": ["b", "c"], "matrix": [[0.0, 1.0], [1.0, 0.0]]},
    }
    method = TreeSearch()
    block, groups, _ = method.choose(
        model, {"stress": {"conv1": 0.2, "conv2-2": 0.7}, "task_affinity": affinity}, seed=0
    )
    assert (block, groups) == ("conv2-2", [["head:b"], ["head:c"]])
    block, groups, extra = method.choose(
        model, {"stress": {"conv1": 0.9, "conv2-2": 0.7}, "task_affinity": affinity}, seed=0
    )
    assert (block, groups) == ("conv1", [["conv2-1"], ["conv2-2"]])
    assert extra["children"] == ["conv2-1", "conv2-2"]


def test_the_closest_tasks_stay_together_as_in_table_1a() -> None:
    # Table 1(a)'s divergences with a -> kmnist, b -> mnist, c -> fashion
    model = tiny_tree()
    matrix = [[0.0, 0.0050, 0.0236], [0.0050, 0.0, 0.0243], [0.0236, 0.0243, 0.0]]
    measured = {"stress": {"conv2": 1.0},
                "task_affinity": {"conv2": {"tasks": ["a", "b", "c"], "matrix": matrix}}}  # fmt: skip
    block, groups, _ = TreeSearch().choose(model, measured, seed=0)
    assert (block, groups) == ("conv2", [["head:a", "head:b"], ["head:c"]])


def test_last_bn_skips_a_residual_shortcut() -> None:
    resnet = ResNet(input_spec=SPEC, layers=[1, 1, 1, 1], width=4)
    block = resnet.make_block("layer2_0")  # stride 2: a downsample with its own BN
    assert last_bn(block) is block.bn2
    assert isinstance(last_bn(resnet.make_block("stem")), torch.nn.BatchNorm2d)


def test_stationarity_epochs_share_one_optimiser() -> None:
    """One optimiser (its momentum) across the one-epoch phases of a stationarity stage."""

    class Ctx:
        def __init__(self, shares: list[float]) -> None:
            self.model, self.shares = tiny_tree(), shares
            self.history: list[dict[str, float]] = []
            self.made: list[torch.optim.Optimizer] = []
            self.used: list[torch.optim.Optimizer] = []

        def make_optimizer(self, params):  # noqa: ANN001, ANN202
            self.made.append(torch.optim.SGD(list(params), lr=0.1, momentum=0.9))
            return self.made[-1]

        def fit(self, name: str, epochs: int, make_optimizer=None, **_: object) -> float:  # noqa: ANN001
            self.used.append(make_optimizer(self.model.weight_parameters()))
            self.history.append({"kkt/stationary": self.shares[len(self.used) - 1]})
            return 0.0

    ctx = Ctx([0.1, 0.2, 0.3])
    got = TreeSearch(max_stationary_epochs=3, stationary_share=0.9).train_to_stationarity(
        ctx, "train/step0"
    )
    assert got == {"phase": "train/step0", "epochs": 3, "kkt_stationary": 0.3, "stationary": False}
    assert len(ctx.made) == 1 and all(opt is ctx.made[0] for opt in ctx.used)
    ctx = Ctx([0.1, 0.95, 0.3])
    got = TreeSearch(max_stationary_epochs=3, stationary_share=0.9).train_to_stationarity(
        ctx, "train/step1"
    )
    assert got["epochs"] == 2 and got["stationary"] and len(ctx.used) == 2


# ------------------------------------------------------------------ configuration


def test_every_bad_key_is_named_at_once() -> None:
    with pytest.raises(ConfigError) as e:
        TreeSearch(n_splits=0, peel_epochs=0, l1=-1.0, peel_l1=-1.0, l1_form="l2",
                   stationary_share=1.5, similarity_batches=0, probe_split="test",
                   positions="corner", importance="max")  # fmt: skip
    text = str(e.value)
    for key in ("n_splits", "peel_epochs", "l1", "peel_l1", "l1_form", "stationary_share",
                "similarity_batches", "probe_split", "positions", "importance"):  # fmt: skip
        assert f"`method.{key}`" in text
    assert (
        "`method.positions` should be one of random, mean. Found `method.positions = corner`."
        in text
    )
    assert "`method.l1_form` should be one of smooth_l1, l1. Found `method.l1_form = l2`." in text
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
    # fine-tuned peels differ from the joint network: a positive stress
    assert set(first["stress"]) == {"conv2"} and first["stress"]["conv2"] > 0
    assert set(first["compatibility"]["conv2"]) == {"mnist", "fashion"}
    assert first["task_affinity"]["conv2"]["matrix"][0][1] > 0
    assert first["task_affinity"]["conv2"]["tasks"] == ["mnist", "fashion"]
    assert steps[2]["split"]["block"] == "conv1"  # then conv1 has two children
    assert steps[2]["paths"]["mnist"] == ["conv1-1", "conv2-1", "head:mnist"]
    assert steps[0]["training"]["epochs"] == 1  # a share >= 0 is reached after one epoch
    for name in ("tree.png", "affinity_conv2_step1.csv", "affinity_conv2_step1.png"):
        assert (tmp_path / name).is_file(), name
    rows = (tmp_path / "affinity_conv2_step1.csv").read_text().splitlines()
    assert rows[0] == ",mnist,fashion" and rows[1].startswith("mnist,0,")
    assert metrics["params"]["per_task"]["mnist"] > 0
    notes = metrics["fidelity"]["method"]
    assert any("n_splits=2" in n for n in notes) and any("peel_epochs=1" in n for n in notes)
    assert "backbone" not in metrics["fidelity"]  # the authors' LeNet by default
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
    three = ["data=mnist3", "data.missing_train=split_test", "data.valid_size=16",
             "backbone=lenet_bn", "backbone.channels=[3,4]"]  # fmt: skip
    base = ["method=tree_search", *three, "method.random_splits=true", "method.n_splits=1",
            *QUICK, *FAST, "trainer.max_epochs=1", "method.max_stationary_epochs=1"]  # fmt: skip
    splits = {}
    for name, seed in (("s1", 1), ("s1_again", 1), ("s2", 2)):
        run(compose_cfg([*base, f"method.random_seed={seed}"]), tmp_path / name)
        tree = json.loads((tmp_path / name / "tree.json").read_text())
        assert tree["random_splits"] is True and "stress" not in tree["steps"][1]
        splits[name] = tree["steps"][1]["split"]
    # random.Random(1) and (2) draw different partitions of the three heads (see
    # test_random_split_partitions_are_non_empty_and_reproducible)
    assert splits["s1"] == splits["s1_again"]
    assert splits["s1"]["groups"] != splits["s2"]["groups"]
    assert splits["s1"]["groups"] == [["head:mnist", "head:kmnist"], ["head:fashion"]]
    assert splits["s2"]["groups"] == [["head:mnist", "head:fashion"], ["head:kmnist"]]
    assert not list((tmp_path / "s1").glob("affinity_*.csv"))
    assert (tmp_path / "s1" / "tree.png").is_file()


def test_random_split_partitions_are_non_empty_and_reproducible() -> None:
    import random

    model = tiny_tree()
    got = [TreeSearch().choose_randomly(model, random.Random(s)) for s in (1, 1, 2)]
    assert got[0] == got[1] and got[0] != got[2]
    assert got[0][1] == [["head:a", "head:c"], ["head:b"]]
    assert got[2][1] == [["head:a", "head:b"], ["head:c"]]
    for block, groups in got:
        assert block == "conv2" and len(groups) == 2 and all(groups)
        assert sorted(c for g in groups for c in g) == ["head:a", "head:b", "head:c"]


def test_missing_scikit_learn_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """scikit-learn is the `tree` extra: without it the search is refused before training, and
    random trees (no clustering) still build."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "sklearn" else real(name, *a)
    )
    with pytest.raises(ConfigError, match=r"pip install 'mtlrun\[tree\]'"):
        TreeSearch()
    assert TreeSearch(random_splits=True).n_splits == 2
