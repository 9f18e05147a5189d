"""AdaShare (arXiv 1911.12423, the authors' code): Gumbel policies, fixed-policy skipping, the
schedules epoch by epoch, both forms of the two regularisers on hand-computed cases, what a
policy step may change, the phases' optimisers, parameter accounting, artefacts and tiny runs."""

from __future__ import annotations

import csv
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
from mtlrun.methods.adashare import AdaShare
from mtlrun.methods.adashare_artefacts import write_policy
from mtlrun.methods.adashare_losses import (
    curriculum,
    sharing_loss,
    sharing_loss_paper,
    sparsity_loss,
    sparsity_loss_paper,
    temperature,
)
from mtlrun.methods.base import PolicyStep
from mtlrun.model.policy import PolicyModel
from mtlrun.run import run
from mtlrun.training import context, loop
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
    "method.curriculum_speed=1",
    "method.policy_epochs=5",  # > L·speed = 4: the best epoch is chosen from epoch 5 on
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


def test_gumbel_draws_pass_gradients_to_the_searched_logits() -> None:
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


def test_drawn_decisions_are_soft_by_default_hard_on_request_and_per_task_in_the_cache_key() -> (
    None
):
    _, model = tiny_model()
    model.train()
    model.n_learnable = 1
    torch.manual_seed(1)
    model._draw = model._sample()
    u = model.decision("layer4_0", "a")
    assert isinstance(u, torch.Tensor) and 0.0 < float(u) < 1.0  # authors: hard_sampling False
    model.hard = True
    model._draw = model._sample()
    u = model.decision("layer4_0", "a")
    assert isinstance(u, torch.Tensor) and float(u) in (0.0, 1.0)
    prefix = ("stem", "layer1_0", "layer2_0", "layer3_0")
    assert model.cache_key("a", prefix) == model.cache_key("b", prefix)  # always run: shared
    last = (*prefix, "layer4_0")
    assert model.cache_key("a", last) != model.cache_key("b", last)


def test_evaluation_in_the_search_draws_a_policy_or_takes_the_most_likely() -> None:
    _, model = tiny_model()
    model.eval()
    model.n_learnable = 4
    with torch.no_grad():
        model.logits[..., 0] = torch.tensor([[9.0, -9.0]] * 4)  # a: select, b: skip, surely
    model.eval_sample = True
    model._draw = model._eval_draw()
    assert model.decision("layer1_0", "a") is True and model.decision("layer1_0", "b") is False
    with torch.no_grad():
        model.logits.zero_()  # p = 0.5: the draws differ between forwards
    draws = set()
    for _ in range(20):
        model._draw = model._eval_draw()
        draws.add(tuple(model.decision(b, "a") for b in model.skippable))
    assert len(draws) > 1
    model.eval_sample, model._draw = False, {}
    assert model.decision("layer1_0", "a") is True  # argmax: p = 0.5 >= 0.5 selects


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


def test_temperature_and_curriculum_follow_the_authors_schedule() -> None:
    # train.py: epoch 1 at init_temp, × decay_temp after every policy pass
    assert temperature(5.0, 0.965, 1) == 5.0
    assert temperature(5.0, 0.965, 3) == pytest.approx(5.0 * 0.965**2)
    # num_train_layers = p_epoch // curriculum_speed + 1 with p_epoch = e − 1
    assert [curriculum(4, e, 3) for e in range(1, 15)] == [1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 4, 4]
    assert [curriculum(4, e, 1) for e in range(1, 7)] == [1, 2, 3, 4, 4, 4]


def test_sparsity_loss_is_the_authors_mean_cross_entropy_towards_skip() -> None:
    # 3 blocks, 2 tasks; only the last 2 are searched. p(skip) of row l, task k by hand:
    logits = torch.tensor(
        [
            [[5.0, 0.0], [5.0, 0.0]],  # not searched: left out
            [[0.0, 0.0], [math.log(3.0), 0.0]],  # p(skip) = 1/2 and 1/4
            [[0.0, math.log(3.0)], [0.0, 0.0]],  # p(skip) = 3/4 and 1/2
        ]
    )
    task_a = -(math.log(1 / 2) + math.log(3 / 4)) / 2  # mean over the searched blocks
    task_b = -(math.log(1 / 4) + math.log(1 / 2)) / 2
    assert float(sparsity_loss(logits, 2)) == pytest.approx(task_a + task_b)  # sum over tasks
    # gradient per logit at p = 0.5: 0.5 / n_open, an 8th of the paper's form when 8 are open
    even = torch.zeros(8, 1, 2, requires_grad=True)
    (g,) = torch.autograd.grad(sparsity_loss(even, 8), [even])
    assert torch.allclose(g[..., 0], torch.full((8, 1), 0.5 / 8))


def test_sparsity_loss_in_the_papers_form() -> None:
    # Σ_{l,k} log p(select) over the searched blocks: p = 0.5 and σ(log 3) = 0.75
    logits = torch.tensor([[[7.0, 0.0]], [[0.0, 0.0]], [[math.log(3.0), 0.0]]])
    assert float(sparsity_loss_paper(logits, 2)) == pytest.approx(math.log(0.5) + math.log(0.75))


def test_sharing_loss_is_the_authors_hamming_loss_on_select_logits() -> None:
    # L = 2 blocks, K = 3 tasks; weights (l+1)/L = 1/2 (first block) and 1 (second block);
    # only the select logit (column 0) counts.
    logits = torch.zeros(2, 3, 2)
    logits[..., 0] = torch.tensor([[0.9, 0.5, 0.1], [0.2, 0.8, 0.5]])
    logits[..., 1] = torch.randn(2, 3)
    first = abs(0.9 - 0.5) + abs(0.9 - 0.1) + abs(0.5 - 0.1)
    second = abs(0.2 - 0.8) + abs(0.2 - 0.5) + abs(0.8 - 0.5)
    assert float(sharing_loss(logits)) == pytest.approx(0.5 * first + 1.0 * second)


def test_sharing_loss_in_the_papers_form() -> None:
    # weights (L − l)/L = 1/2 (l = 1) and 0 (l = 2) on p(select); p = σ(select − skip logit)
    alpha = torch.tensor([[0.9, 0.5, 0.1], [0.2, 0.8, 0.5]])
    logits = torch.stack([torch.log(alpha / (1 - alpha)), torch.zeros(2, 3)], dim=-1)
    pairs = abs(0.9 - 0.5) + abs(0.9 - 0.1) + abs(0.5 - 0.1)
    assert float(sharing_loss_paper(logits)) == pytest.approx(0.5 * pairs)
    assert float(sharing_loss_paper(torch.zeros(3, 2, 2))) == 0.0


class FakeData:
    def train_subset(self, fraction: float, seed: int, part: str) -> str:
        return part


class FakeCtx:
    """Records what the search asks of the runner, phase by phase, without training."""

    def __init__(self, model: PolicyModel) -> None:
        self.model, self.data, self.seed = model, FakeData(), 0
        self.seen: list[tuple[float, int]] = []
        self.calls: dict[str, dict] = {}

    def make_optimizer(self, params):  # type: ignore[no-untyped-def]
        return torch.optim.Adam(params, lr=0.003)

    def fit(self, name, epochs, on_epoch_start=None, **kwargs) -> float:  # type: ignore[no-untyped-def]
        self.calls[name] = {"epochs": epochs, **kwargs}
        for e in range(epochs):
            if on_epoch_start is not None:
                on_epoch_start(e)
                self.seen.append((self.model.tau, self.model.n_learnable))
        return 0.0


def test_schedule_is_set_per_policy_epoch() -> None:
    method, model = tiny_model()
    method.policy_epochs = 14
    ctx = FakeCtx(model)
    method._learn_policy(ctx, model)  # type: ignore[arg-type]
    assert [n for _, n in ctx.seen] == [1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 4, 4]
    assert [t for t, _ in ctx.seen] == pytest.approx([5.0 * 0.965**e for e in range(14)])
    # the best epoch may only be one after every block was searched for a whole round
    assert ctx.calls["policy"]["select_from"] == 4 * 3 + 1
    assert ctx.calls["policy"]["data"] == "rest"
    assert ctx.calls["policy"]["policy"].data == "held_out"
    assert ctx.calls["policy"]["policy"].alternate == "pass"
    assert model.n_learnable == 4


def test_each_phase_gets_the_authors_optimiser() -> None:
    method, model = tiny_model()
    ctx = FakeCtx(model)
    method._learn_policy(ctx, model)  # type: ignore[arg-type]
    weights = model.weight_parameters()
    warmup = method._warmup_optimizer(ctx)(weights)  # type: ignore[arg-type, misc]
    assert isinstance(warmup, torch.optim.Adam)
    assert warmup.defaults["betas"] == (0.5, 0.999) and warmup.defaults["weight_decay"] == 1e-4
    assert warmup.defaults["lr"] == 0.003  # optim.lr
    sgd = ctx.calls["policy"]["make_optimizer"](weights)
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.defaults["momentum"] == 0.9 and sgd.defaults["weight_decay"] == 1e-4
    assert sgd.defaults["lr"] == 0.003
    (alphas,) = ctx.calls["policy"]["extra_optimizers"]
    assert isinstance(alphas, torch.optim.Adam)
    assert alphas.defaults["lr"] == 0.01 and alphas.defaults["weight_decay"] == 5e-4
    assert alphas.param_groups[0]["params"] == [model.logits]
    method.authors_optimizers = False
    assert method._warmup_optimizer(ctx) is None  # type: ignore[arg-type]
    assert method._policy_phase_optimizer(ctx) is None  # type: ignore[arg-type]


def test_a_policy_step_moves_only_the_searched_logits() -> None:
    """Weights and the not-yet-searched blocks' p(select) stay as they were; the searched
    blocks' logits move (the task losses, sparsity and sharing terms reach them)."""
    method, model = tiny_model()
    ctx = FakeCtx(model)
    method._learn_policy(ctx, model)  # type: ignore[arg-type]
    policy: PolicyStep = ctx.calls["policy"]["policy"]
    model.train()
    model.n_learnable, model.tau = 2, 5.0
    weights = {n: p.detach().clone() for n, p in model.named_parameters() if n != "logits"}
    alpha = model.select_prob().detach().clone()
    assert policy.before is not None
    policy.before()
    out = model(torch.randn(4, 1, 28, 28))
    targets = {"a": torch.tensor([0, 1, 2, 3]), "b": torch.tensor([0, 1, 0, 1])}
    losses = {t: nn.functional.cross_entropy(out[t], targets[t]) for t in out}
    logs = policy.step(losses)
    assert model.policy_grad is False and logs["policy/searched"] == 2.0
    after = model.select_prob().detach()
    assert torch.equal(after[:2], alpha[:2])  # closed blocks: p(select) untouched
    assert not torch.allclose(after[2:], alpha[2:])  # searched blocks moved
    for n, p in model.named_parameters():
        if n != "logits":
            assert torch.equal(p, weights[n]), n
            assert p.grad is None, n


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
        AdaShare(
            tau0=0,
            policy_split=1.0,
            init_select=0.0,
            policy_epochs=0,
            curriculum_speed=0,
            sparsity_form="l1",
            alternate="epoch",
            retrain_samples=-1,
        )
    text = str(e.value)
    for key in ("tau0", "policy_split", "init_select", "policy_epochs", "retrain_samples"):
        assert f"`method.{key}`" in text
    assert "`method.policy_split` should be in (0, 1). Found `method.policy_split = 1.0`." in text
    assert "`method.curriculum_speed` should be an integer >= 1." in text
    assert "`method.sparsity_form` should be one of code, paper. Found" in text
    assert (
        "`method.alternate` should be one of pass, step. Found `method.alternate = epoch`." in text
    )


def test_too_few_policy_epochs_for_the_curriculum_are_refused() -> None:
    with pytest.raises(ConfigError) as e:
        AdaShare(policy_epochs=12, curriculum_speed=3).build(
            ResNet(input_spec=SPEC, layers=[1, 1, 1, 1], width=4), TASKS
        )
    assert str(e.value) == (
        "`method.policy_epochs` should be > 12 (4 skippable blocks × `method.curriculum_speed` 3)"
        ": the policy is chosen once every block has been searched (authors' train.py). "
        "Found `method.policy_epochs = 12`."
    )


def test_deviations_name_each_departure_from_the_authors_code() -> None:
    default = AdaShare().deviations
    assert any("not on the test split" in d for d in default)
    assert not any("paper's form" in d for d in default)
    assert not any("straight-through" in d for d in default)
    options = AdaShare(
        sparsity_form="paper",
        sharing_form="paper",
        alternate="step",
        hard_sampling=True,
        search_eval="argmax",
        authors_optimizers=False,
        retrain_samples=2,
    ).deviations
    assert len(options) == len(default) + 6


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


def phases(folder: Path) -> list[tuple[str, int]]:
    """(phase, epoch) of every history.csv row."""
    with (folder / "history.csv").open() as f:
        return [(row["phase"], int(row["epoch"])) for row in csv.DictReader(f)]


def test_tiny_run_alternates_whole_passes_and_retrains_the_chosen_policy(
    compose_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    forwards: list[tuple[int, bool]] = []  # (blocks searched, policy update?) of training calls
    original = PolicyModel.forward

    def spy(self, inputs, tasks=None):  # type: ignore[no-untyped-def]
        if self.training and self.mode == "search" and self.n_learnable:
            forwards.append((self.n_learnable, self.policy_grad))
        return original(self, inputs, tasks)

    monkeypatch.setattr(PolicyModel, "forward", spy)
    metrics = run(compose_cfg(RESNET_RUN), tmp_path)
    assert set(metrics["test"]) == {"mnist", "fashion"}
    search = metrics["search"]
    assert set(search["policy"]) == {"mnist", "fashion"}
    assert search["chosen"] in {s["name"] for s in search["samples"]}
    assert len(search["samples"]) == 3  # argmax + 2 drawn
    saved = json.loads((tmp_path / "policy.json").read_text())
    assert saved["blocks"] == ["layer1_0", "layer2_0", "layer3_0", "layer4_0"]
    expected = [("warmup", 1)] + [("policy", e) for e in range(1, 6)] + [("train", 1)]
    assert phases(tmp_path) == expected
    # 64 training images per task: the weights' 51 take 4 steps of 16, the policy's 13 one step;
    # one forward per task and step. Every policy epoch: a whole weight pass, then a whole policy
    # pass (train.py's default weight_iter_alternate = len(train1_loader),
    # alpha_iter_alternate = len(train2_loader)).
    per_epoch = [False] * 4 * 2 + [True] * 2
    searched = [1, 2, 3, 4, 4]  # curriculum_speed 1
    assert forwards == [(n, grad) for n in searched for grad in per_epoch]
    assert any("not on the test split" in d for d in metrics["fidelity"]["method"])


def test_step_alternation_interleaves_one_policy_step_per_weight_step(
    compose_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flags: list[bool] = []
    original = PolicyModel.forward

    def spy(self, inputs, tasks=None):  # type: ignore[no-untyped-def]
        if self.training and self.mode == "search" and self.n_learnable:
            flags.append(self.policy_grad)
        return original(self, inputs, tasks)

    monkeypatch.setattr(PolicyModel, "forward", spy)
    run(compose_cfg([*RESNET_RUN, "method.alternate=step"]), tmp_path)
    assert flags == [False, False, True, True] * 4 * 5  # per step: both tasks' forwards


def test_the_policy_phase_keeps_its_best_epoch_after_the_curriculum(
    compose_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Validation falls epoch by epoch: the best kept epoch is the first eligible one (5 = L·speed
    + 1), not epoch 1, and its logits are restored (not the last epoch's). Patience counts from
    the first eligible epoch: trainer.patience=1 does not end the curriculum early."""
    scores = iter([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1])
    monkeypatch.setattr(loop, "mean_primary", lambda metrics, tasks: next(scores))
    kept: dict[str, tuple[int, torch.Tensor]] = {}
    original = context.fit

    def spy(model, *args, **kwargs):  # type: ignore[no-untyped-def]
        state = original(model, *args, **kwargs)
        if kwargs["phase"].name == "policy":
            kept["policy"] = (state.best_epoch, state.best_model["logits"].clone())
            kept["last"] = (state.epoch, model.logits.detach().clone())
        return state

    monkeypatch.setattr(context, "fit", spy)
    overrides = [*RESNET_RUN, "method.policy_epochs=6", "method.n_samples=0", "trainer.patience=1"]
    metrics = run(compose_cfg(overrides), tmp_path)
    assert [e for p, e in phases(tmp_path) if p == "policy"] == [1, 2, 3, 4, 5, 6]
    best_epoch, best_logits = kept["policy"]
    assert best_epoch == 5  # epochs 1-4 scored higher but opened the blocks one by one
    assert kept["last"][0] == 6 and not torch.equal(best_logits, kept["last"][1])
    alpha = torch.softmax(best_logits, dim=-1)[..., 0]
    chosen = metrics["search"]["select_prob"]["mnist"]["layer1_0"]
    assert chosen == pytest.approx(float(alpha[0, 0]), abs=1e-6)


def test_retrain_samples_retrains_each_drawn_policy_and_keeps_the_best(
    compose_cfg, tmp_path: Path
) -> None:
    metrics = run(compose_cfg([*RESNET_RUN, "method.retrain_samples=2"]), tmp_path)
    names = [s["name"] for s in metrics["search"]["samples"]]
    assert names == ["sample1", "sample2"]
    best = max(metrics["search"]["samples"], key=lambda s: s["score"])
    assert metrics["search"]["chosen"] == best["name"]
    rows = phases(tmp_path)
    assert ("retrain/sample1", 1) in rows and ("retrain/sample2", 1) in rows
    assert rows[-1] == ("train", 1)


@pytest.mark.parametrize("into_epoch", [6, 9], ids=["weight_pass", "policy_pass"])
def test_a_search_stopped_in_the_policy_phase_resumes_to_the_same_result(
    compose_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, into_epoch: int
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
    overrides = RESNET_RUN
    straight = run(compose_cfg(overrides), tmp_path / "straight")
    # 64 training images per task: warm-up 4 steps × 2 tasks; a policy epoch 4 weight steps on
    # the weights' 51 and 1 policy step on the held-out 13 (× 2 tasks); retraining like warm-up.
    assert calls["n"] == 8 + 5 * 10 + 8
    calls.update(n=0, at=8 + 10 + into_epoch)  # 6: in the weight pass; 9: in the policy pass
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


def test_after_search_starts_from_the_search_networks_initial_weights() -> None:
    """re-train.py restores the initial snapshot (``load_snapshot(init_state)``) and fixes the
    policy; the searched weights are not kept."""
    method, model = tiny_model()
    w = "blocks.layer1_0.conv1.weight"
    initial = model.state_dict()[w].clone()
    with torch.no_grad():  # stands for the search's training
        for p in model.parameters():
            p.add_(1.0)
    policy = all_run(model)
    policy["b"]["layer4_0"] = False
    search = {"policy": policy}
    first, second = method.after_search(model, search), method.after_search(model, search)
    assert first is not model and first.mode == "fixed" and first.policy == policy
    assert torch.equal(first.state_dict()[w], initial)
    assert torch.equal(second.state_dict()[w], initial)
    rebuilt = method.rebuild(tiny_model()[1], search)
    assert rebuilt.policy == policy and rebuilt.param_counts() == first.param_counts()
