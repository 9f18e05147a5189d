"""AdaShare (seed 002): straight-through policies, fixed-policy skipping, the schedules, the two
regularisers on hand-computed cases, parameter accounting, artefacts and a tiny end-to-end run."""

from __future__ import annotations

import json
import math
import signal
from pathlib import Path

import pytest
import torch
from torch import nn

from mtlrun.backbones.lenet_bn import LeNetBN
from mtlrun.backbones.resnet import ResidualBlock, ResNet
from mtlrun.config.validate import validate
from mtlrun.data.base import InputSpec, Task
from mtlrun.errors import ConfigError
from mtlrun.methods.adashare import (
    AdaShare,
    curriculum,
    sharing_loss,
    sparsity_loss,
    temperature,
    write_policy,
)
from mtlrun.model.policy import PolicyModel
from mtlrun.run import run
from mtlrun.training import loop
from tests.conftest import TINY_RESNET

SPEC = InputSpec(modality="image", channels=1, height=28, width=28)
TASKS = [Task("a", "accuracy", tuple("0123")), Task("b", "accuracy", tuple("01"))]
RESNET_RUN = [
    "method=adashare",
    "data=mnist3",
    "data.tasks=[mnist,fashion]",
    "data.valid_size=16",
    "backbone=resnet",
    *TINY_RESNET,
    "method.warmup_epochs=1",
    "method.policy_epochs=1",
    "method.n_samples=2",
    "trainer.max_epochs=1",
    "trainer.batch_size=16",
    "trainer.progress=false",
    "trainer.plots=false",
    "trainer.save_predictions=false",
]


def tiny_model(init_select: float = 0.5) -> tuple[AdaShare, PolicyModel]:
    method = AdaShare(init_select=init_select)
    torch.manual_seed(0)
    model = method.build(ResNet(input_spec=SPEC, layers=[1, 1, 1, 1], width=4), TASKS)
    return method, model


def all_run(model: PolicyModel) -> dict[str, dict[str, bool]]:
    return {t: dict.fromkeys(model.skippable, True) for t in model.tasks}


# ------------------------------------------------------------------------ the policy model


def test_skippable_blocks_are_the_residual_blocks_and_logits_are_not_weights() -> None:
    _, model = tiny_model()
    assert model.skippable == ("layer1_0", "layer2_0", "layer3_0", "layer4_0")
    assert model.logits.shape == (4, 2, 2)
    assert all(p is not model.logits for p in model.weight_parameters())
    assert torch.allclose(model.select_prob(), torch.full((4, 2), 0.5))
    _, biased = tiny_model(init_select=0.8)
    assert torch.allclose(biased.select_prob(), torch.full((4, 2), 0.8))


def test_straight_through_draw_passes_gradients_to_the_searched_logits() -> None:
    _, model = tiny_model()
    model.train()
    model.n_learnable, model.tau, model.policy_grad = 2, 1.0, True
    x = torch.randn(3, 1, 28, 28)
    out = model(x)
    loss = sum(o.square().sum() for o in out.values())
    assert isinstance(loss, torch.Tensor)
    (grad,) = torch.autograd.grad(loss, [model.logits])
    assert grad[2:].abs().sum() > 0  # the two searched blocks, both tasks
    assert torch.all(grad[2:].abs().sum(-1) > 0)
    assert torch.all(grad[:2] == 0)  # earlier blocks always run: no draw, no gradient


def test_weight_updates_leave_the_logits_without_gradient() -> None:
    _, model = tiny_model()
    model.train()
    model.n_learnable = 4  # policy_grad is False: the draws are detached
    out = model(torch.randn(2, 1, 28, 28))
    sum(o.sum() for o in out.values()).backward()  # type: ignore[union-attr]
    assert model.logits.grad is None


def test_drawn_decisions_are_hard_and_per_task_in_the_cache_key() -> None:
    _, model = tiny_model()
    model.train()
    model.n_learnable = 1
    model._draw = model._sample()
    u = model.decision("layer4_0", "a")
    assert isinstance(u, torch.Tensor) and float(u) in (0.0, 1.0)
    prefix = ("stem", "layer1_0", "layer2_0", "layer3_0")
    assert model.cache_key("a", prefix) == model.cache_key("b", prefix)  # always run: shared
    last = (*prefix, "layer4_0")
    assert model.cache_key("a", last) != model.cache_key("b", last)


class Exploding(ResidualBlock):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise AssertionError("a skipped block was called")


def test_fixed_policy_skips_with_the_shortcut_and_never_calls_the_block() -> None:
    _, model = tiny_model()
    old = model.blocks["layer2_0"]
    assert isinstance(old, ResidualBlock)
    boom = Exploding(4, 8, 2, old.downsample)
    model.blocks["layer2_0"] = boom
    policy = all_run(model)
    policy["a"]["layer2_0"] = policy["b"]["layer2_0"] = False
    model.set_policy(policy)
    model.eval()
    x = torch.randn(2, 1, 28, 28)
    out = model(x)  # does not raise
    stem = model.blocks["stem"](x)
    h = model.blocks["layer1_0"](stem)
    h = boom.skip(h)
    for name in ("layer3_0", "layer4_0", "head:a"):
        h = model.blocks[name](h)
    assert torch.allclose(out["a"], h)


def test_tasks_with_equal_decisions_share_computation_and_differ_after_a_split() -> None:
    _, model = tiny_model()
    calls: dict[str, int] = {}
    for name in model.skippable:
        model.blocks[name].register_forward_hook(
            lambda m, i, o, name=name: calls.__setitem__(name, calls.get(name, 0) + 1)
        )
    policy = all_run(model)
    policy["b"]["layer3_0"] = False
    model.set_policy(policy)
    model.eval()
    model(torch.randn(2, 1, 28, 28))
    # layer1/2 shared (once); layer3 only a; layer4 after different prefixes: once per task
    assert calls == {"layer1_0": 1, "layer2_0": 1, "layer3_0": 1, "layer4_0": 2}


def test_param_counts_on_a_hand_policy() -> None:
    _, model = tiny_model()

    def size(m: nn.Module) -> int:
        return sum(p.numel() for p in m.parameters())

    blocks = {b: size(model.blocks[b]) for b in ("stem", *model.skippable)}
    shortcut = size(model.blocks["layer3_0"].downsample)  # type: ignore[arg-type]
    policy = all_run(model)
    policy["a"]["layer1_0"] = policy["b"]["layer1_0"] = False  # identity shortcut: 0 params
    policy["b"]["layer3_0"] = False  # b uses layer3's projection shortcut only
    policy["a"]["layer4_0"] = False
    model.set_policy(policy)
    counts = model.param_counts()
    assert counts["supernet"] == sum(blocks.values())
    assert counts["per_task"]["a"] == blocks["stem"] + blocks["layer2_0"] + blocks["layer3_0"] + (
        size(model.blocks["layer4_0"].downsample)  # type: ignore[arg-type]
    )
    assert counts["per_task"]["b"] == (
        blocks["stem"] + blocks["layer2_0"] + shortcut + blocks["layer4_0"]
    )
    assert counts["used"] == sum(blocks.values()) - blocks["layer1_0"]


# ------------------------------------------------------------------------ schedules and losses


def test_temperature_and_curriculum_follow_the_schedule() -> None:
    assert temperature(5.0, 0.965, 1) == pytest.approx(5.0 * 0.965)
    assert temperature(5.0, 0.965, 3) == pytest.approx(5.0 * 0.965**3)
    assert [curriculum(4, e) for e in range(1, 7)] == [1, 2, 3, 4, 4, 4]


def test_sparsity_loss_on_a_hand_case() -> None:
    # p(select) = 0.5 (equal logits) and σ(log 3) = 0.75 for the second row.
    logits = torch.tensor([[[0.0, 0.0]], [[math.log(3.0), 0.0]]])
    assert float(sparsity_loss(logits)) == pytest.approx(math.log(0.5) + math.log(0.75))


def test_sharing_loss_on_a_hand_case() -> None:
    # L = 2 blocks, K = 3 tasks: weights (L − l)/L = 1/2 (l = 1) and 0 (l = 2).
    alpha = torch.tensor([[0.9, 0.5, 0.1], [0.2, 0.8, 0.5]])
    pairs = abs(0.9 - 0.5) + abs(0.9 - 0.1) + abs(0.5 - 0.1)
    assert float(sharing_loss(alpha)) == pytest.approx(0.5 * pairs)
    assert float(sharing_loss(torch.full((3, 2), 0.3))) == 0.0


def test_schedule_is_set_per_policy_epoch() -> None:
    method, model = tiny_model()

    class Ctx:
        seen: list[tuple[float, int]] = []

        def fit(self, name, epochs, on_epoch_start=None, **kwargs) -> float:  # type: ignore[no-untyped-def]
            for e in range(epochs):
                on_epoch_start(e)
                self.seen.append((model.tau, model.n_learnable))
            return 0.0

    method.policy_epochs = 6
    ctx = Ctx()
    method._learn_policy(ctx, model, None, None)  # type: ignore[arg-type]
    assert [n for _, n in ctx.seen] == [1, 2, 3, 4, 4, 4]
    assert [t for t, _ in ctx.seen] == pytest.approx([5.0 * 0.965**e for e in range(1, 7)])


def test_policy_json_is_written(tmp_path: Path) -> None:
    alpha = torch.tensor([[0.9, 0.2], [0.6, 0.7]])
    policy = {"a": {"l1": True, "l2": True}, "b": {"l1": False, "l2": True}}
    samples = {"argmax": {"policy": policy, "score": 0.5}}
    write_policy(tmp_path, ["l1", "l2"], ["a", "b"], alpha, policy, samples, "argmax")
    saved = json.loads((tmp_path / "policy.json").read_text())
    assert saved["decision"] == [[True, False], [True, True]]
    assert saved["select_prob"] == [[0.9, 0.2], [0.6, 0.7]]
    assert saved["samples"]["argmax"]["skipped"] == {"a": [], "b": ["l1"]}
    assert (tmp_path / "policy.png").is_file()


# ------------------------------------------------------------------------ config errors


def test_every_bad_key_is_named_at_once() -> None:
    with pytest.raises(ConfigError) as e:
        AdaShare(tau0=0, policy_split=1.0, init_select=0.0, policy_epochs=0)
    text = str(e.value)
    for key in ("tau0", "policy_split", "init_select", "policy_epochs"):
        assert f"`method.{key}`" in text
    assert "`method.policy_split` should be in (0, 1). Found `method.policy_split = 1.0`." in text


def test_a_backbone_without_residual_blocks_is_refused() -> None:
    with pytest.raises(ConfigError) as e:
        AdaShare().build(LeNetBN(input_spec=SPEC), TASKS)
    assert str(e.value) == (
        "`method=adashare` needs a backbone of residual blocks (allowed: resnet); "
        "found backbone=lenet_bn"
    )


def test_validate_refuses_adashare_without_resnet(compose_cfg) -> None:
    cfg = compose_cfg(
        ["method=adashare", "data=mnist3", "data.tasks=[mnist,fashion]", "backbone=lenet_bn"]
    )
    with pytest.raises(ConfigError, match=r"found backbone=lenet_bn"):
        validate(cfg)


# ------------------------------------------------------------------------ end to end


def test_tiny_run_retrains_the_chosen_policy(compose_cfg, tmp_path: Path) -> None:
    metrics = run(compose_cfg(RESNET_RUN), tmp_path)
    assert set(metrics["test"]) == {"mnist", "fashion"}
    search = metrics["search"]
    assert set(search["policy"]) == {"mnist", "fashion"}
    assert search["chosen"] in {s["name"] for s in search["samples"]}
    assert len(search["samples"]) == 3  # argmax + 2 drawn
    saved = json.loads((tmp_path / "policy.json").read_text())
    assert saved["blocks"] == ["layer1_0", "layer2_0", "layer3_0", "layer4_0"]
    history = (tmp_path / "history.csv").read_text()
    assert ",warmup," in history or "warmup" in history
    assert "policy" in history and "train" in history


def test_a_search_stopped_in_the_policy_phase_resumes_to_the_same_result(
    compose_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM inside policy epoch 2; trainer.resume=true ends as the uninterrupted run."""
    calls: dict = {"n": 0, "at": None}
    original = loop.task_loss

    def counting_loss(logits, target):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == calls["at"]:
            signal.raise_signal(signal.SIGTERM)
        return original(logits, target)

    monkeypatch.setattr(loop, "task_loss", counting_loss)
    overrides = [*RESNET_RUN, "method.policy_epochs=2"]
    straight = run(compose_cfg(overrides), tmp_path / "straight")
    assert calls["n"] == 8 + 2 * 16 + 8  # warm-up, 2 policy epochs, 1 retraining epoch
    # 64 training images per task, 51 for the weights: 4 steps of 2 task losses per epoch, and
    # as many policy losses in the policy phase. Warm-up 8, policy epoch 1: 16, then 6 more.
    calls.update(n=0, at=8 + 16 + 6)
    folder = tmp_path / "outputs" / "cut"
    stopped = run(compose_cfg(overrides), folder)
    assert "test" not in stopped
    assert stopped["epochs"]["phases"] == {"warmup": 1, "policy": 1}  # cut in policy epoch 2
    calls["at"] = None
    resumed = run(compose_cfg([*overrides, "trainer.resume=true"]), tmp_path / "outputs" / "on")
    assert resumed["run"]["resumed_from_dir"] == str(folder.resolve())
    volatile = ("time", "run")
    assert {k: v for k, v in resumed.items() if k not in volatile} == {
        k: v for k, v in straight.items() if k not in volatile
    }


def test_after_search_is_a_fresh_seeded_network_with_the_policy_fixed() -> None:
    method, model = tiny_model()
    policy = all_run(model)
    policy["b"]["layer4_0"] = False
    search = {"policy": policy}
    first, second = method.after_search(model, search), method.after_search(model, search)
    assert first is not model and first.mode == "fixed" and first.policy == policy
    w = "blocks.layer1_0.conv1.weight"
    assert not torch.equal(first.state_dict()[w], model.state_dict()[w])  # new random init
    assert torch.equal(first.state_dict()[w], second.state_dict()[w])  # seeded
    rebuilt = method.rebuild(tiny_model()[1], search)
    assert rebuilt.policy == policy and rebuilt.param_counts() == first.param_counts()
