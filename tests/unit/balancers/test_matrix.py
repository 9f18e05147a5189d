"""Every balancer with every sharing method and both input kinds: a training step that moves the
shared weights, or a refusal at validation that names the key (METHODS §5: "say where it does
not make sense")."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mtlrun.config.validate import validate
from mtlrun.errors import ConfigError
from mtlrun.model.masked import MaskedModel
from mtlrun.run import build, setup
from mtlrun.training.loop import TrainSettings, train_epoch
from tests.conftest import TINY_TEXT, TOY_SMALL

METHODS = ["single", "hard", "soft", "hierarchical", "single_subnet", "sparse_imp", "sparse_ste"]
# Every YAML of conf/balancer is enrolled automatically, plus the representation-gradient forms.
SHIPPED = sorted(p.stem for p in (Path(__file__).parents[3] / "conf" / "balancer").glob("*.yaml"))
BALANCERS = [
    *([f"balancer={name}"] for name in SHIPPED),
    ["balancer=gradnorm", "balancer.on=z"],
    ["balancer=upgrad", "balancer.on=z"],
    ["balancer=graddrop", "balancer.on=z"],
]
REPRESENTATION = {"balancer.on=z", "balancer=mgda_ub"}
PER_TASK_OUTPUTS = {"soft", "single_subnet", "sparse_imp", "sparse_ste"}


def one_step(cfg) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, float]]:
    method = build(cfg.method)
    data, tasks, model, balancer, optimizer, _ = setup(cfg, method, torch.device("cpu"))
    if isinstance(model, MaskedModel):  # the masked phase, as after a search
        g = torch.Generator().manual_seed(0)
        params = dict(model.blocks.named_parameters())
        keys = {t.name: [k for k in model.maskable if k.split(".")[0] in model.paths[t.name]]
                for t in tasks}  # fmt: skip
        model.set_masks(
            {t: {k: (torch.rand(params[k].shape, generator=g) < 0.5).float() for k in ks}
             for t, ks in keys.items()}
        )  # fmt: skip
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    settings = TrainSettings(max_epochs=1, batch_size=8, steps_per_epoch=2, progress=False)
    row = train_epoch(model, data, balancer, optimizer, settings, 0, torch.device("cpu"))
    after = {n: p.detach() for n, p in model.named_parameters()}
    return before, after, row


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("balancer", BALANCERS, ids=lambda b: " ".join(b))
def test_text_balancer_with_method(compose_cfg, method: str, balancer: list[str]) -> None:
    cfg = compose_cfg([*TINY_TEXT, *TOY_SMALL, f"method={method}", *balancer])
    if REPRESENTATION & set(balancer) and method in PER_TASK_OUTPUTS:
        with pytest.raises(ConfigError, match=f"method={method} gives each task its own"):
            validate(cfg)
        return
    validate(cfg)
    before, after, row = one_step(cfg)
    changed = [n for n in before if not torch.equal(before[n], after[n])]
    assert any(n.startswith("blocks.embed") for n in changed), changed
    assert all(torch.isfinite(after[n]).all() for n in after)
    assert all(f"train/loss/{t}" in row for t in ("pos", "chunk", "ner"))
    assert row["time/balancer_s"] > 0


@pytest.mark.parametrize("balancer", BALANCERS, ids=lambda b: " ".join(b))
def test_image_balancer_on_separate_inputs(compose_cfg, balancer: list[str]) -> None:
    cfg = compose_cfg(
        ["data=mnist3", "data.tasks=[mnist,fashion]", "data.valid_size=16", *balancer]
    )
    if REPRESENTATION & set(balancer):
        with pytest.raises(ConfigError, match="data=mnist3 gives each task its own input"):
            validate(cfg)
        return
    validate(cfg)
    before, after, row = one_step(cfg)
    shared = [n for n in before if n.startswith("blocks.conv1")]
    assert shared and any(not torch.equal(before[n], after[n]) for n in shared)
    assert all(f"train/loss/{t}" in row for t in ("mnist", "fashion"))


ADASHARE = ["method=adashare", "backbone=resnet", "backbone.layers=[1,1,1,1]", "backbone.width=4",
            "method.warmup_epochs=1", "method.curriculum_speed=1", "method.policy_epochs=5",
            "method.n_samples=1"]  # fmt: skip
TREE = ["method=tree_search", "backbone=lenet_bn", "method.n_splits=1", "method.peel_epochs=1",
        "method.max_stationary_epochs=1", "method.similarity_batches=1",
        "method.stationary_share=0.0"]  # fmt: skip


@pytest.mark.parametrize("method", [ADASHARE, TREE], ids=["adashare", "tree_search"])
@pytest.mark.parametrize("balancer", ["upgrad", "famo", "moco"])
def test_search_methods_run_with_new_balancers(compose_cfg, tmp_path, method, balancer) -> None:
    """The phases of AdaShare (warm-up, policy search, retrain) and of the tree search (peels of
    one task, retraining) all step the balancer: a whole tiny run finishes with test metrics."""
    from mtlrun.run import run

    cfg = compose_cfg(["data=mnist3", "data.tasks=[mnist,fashion]", "data.valid_size=16",
                       "data.limit_train=32", "trainer.batch_size=16", "trainer.max_epochs=1",
                       "trainer.progress=false", "trainer.plots=false", *method,
                       f"balancer={balancer}"])  # fmt: skip
    metrics = run(cfg, tmp_path / "run")
    assert set(metrics["test"]) == {"mnist", "fashion"}
    assert "diverged" not in metrics and metrics["balancer"]["name"] == balancer
