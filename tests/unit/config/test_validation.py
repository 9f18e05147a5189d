"""Config errors: typos and types at compose time, values and combinations in validate()."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError, ValidationError

from mtlrun.config.validate import validate
from mtlrun.errors import ConfigError


def test_default_config_is_valid(compose_cfg) -> None:
    cfg = compose_cfg([])
    validate(cfg)
    assert cfg.data.name == "toy"
    assert cfg.method._target_.endswith("HardSharing")


def test_misspelt_key_is_rejected_with_its_full_name(compose_cfg) -> None:
    with pytest.raises((ConfigCompositionException, ConfigKeyError)) as info:
        compose_cfg(["trainer.max_epoch=3"])
    assert "trainer.max_epoch" in str(info.value) or "max_epoch" in str(info.value.__cause__)


def test_wrong_type_is_rejected(compose_cfg) -> None:
    with pytest.raises((ConfigCompositionException, ValidationError)) as info:
        compose_cfg(["trainer.batch_size=many"])
    text = str(info.value) + str(info.value.__cause__)
    assert "batch_size" in text


def test_unknown_option_lists_available(compose_cfg) -> None:
    with pytest.raises(Exception) as info:
        compose_cfg(["method=nonexistent"])
    assert "method/nonexistent" in str(info.value)
    assert "hard" in str(info.value) and "single" in str(info.value)


def test_bad_values_are_reported_together(compose_cfg) -> None:
    cfg = compose_cfg(["trainer.max_epochs=0", "trainer.device=gpu", "data.tasks=[pos,foo]"])
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    text = str(info.value)
    assert "`trainer.max_epochs` should be an integer >= 1. Found `trainer.max_epochs = 0`." in text
    assert (
        "`trainer.device` should be one of auto, cpu, cuda, cuda:N. Found `trainer.device = gpu`."
        in text
    )
    assert "`data.tasks` should be a non-empty subset of ['pos', 'chunk', 'ner']" in text


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["data=conll", "backbone=lenet_bn"], "Allowed backbones for data=conll: ['cnn_bilstm']"),
        (
            ["data=mnist3", "backbone=cnn_bilstm"],
            "Allowed backbones for data=mnist3: ['lenet_bn', 'resnet']",
        ),
        (["optim.nesterov=true"], "`optim.nesterov=true` needs `optim.momentum` > 0"),
        (
            ["data=mnist3", "data.missing_train=skip"],
            "`data.missing_train` should be one of error, split_test",
        ),
        (["balancer.weights={foo: 2.0}"], "`balancer.weights` has keys ['foo']"),
        (
            ["data.batching=sorted"],
            "`data.batching` should be one of random, buckets. Found `data.batching = sorted`.",
        ),
        (
            ["data=conll", "data.buckets=0"],
            "`data.buckets` should be an integer >= 1. Found `data.buckets = 0`.",
        ),
        (["optim.lr=-1"], "`optim.lr` should be > 0. Found `optim.lr = -1.0`."),
        (
            ["optim=adam", "optim.betas=[0.5,1.0]"],
            "`optim.betas` should be two numbers in [0, 1). Found `optim.betas = [0.5, 1.0]`.",
        ),
        (
            ["data=mnist3", "method=soft"],
            "`method=soft` couples BiLSTM layers: it needs backbone=cnn_bilstm",
        ),
    ],
)
def test_golden_error_texts(compose_cfg, overrides: list[str], fragment: str) -> None:
    cfg = compose_cfg(overrides)
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    assert fragment in str(info.value)


def test_data_group_picks_a_fitting_backbone_and_batch_size(compose_cfg) -> None:
    assert compose_cfg(["data=mnist3"]).backbone._target_.endswith("LeNetBN")
    assert compose_cfg(["data=mnist3", "backbone=resnet"]).backbone._target_.endswith("ResNet")
    assert compose_cfg(["data=conll"]).trainer.batch_size == 10
    assert compose_cfg(["data=conll", "trainer.batch_size=7"]).trainer.batch_size == 7


def test_data_root_follows_mtlrun_data(compose_cfg, fake_data_root) -> None:
    cfg = compose_cfg(["data=conll"])
    assert cfg.data.root == f"{fake_data_root}/conll2003"
    assert compose_cfg(["data=mnist3"]).data.root == str(fake_data_root)


def test_keys_added_with_plus_are_refused_with_the_nearest_valid_key(compose_cfg) -> None:
    """``+key=value`` (Hydra's own hint for a misspelt key) gets past the schema: refuse it."""
    cfg = compose_cfg(["+trainer.max_epoch=3", "+method.keep_ratoi=0.3", "+balancer.solvr=exact"])
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    text = str(info.value)
    assert (
        "`trainer.max_epoch` is not a key of this config; did you mean `trainer.max_epochs`?"
        in text
    )
    assert "`balancer.solvr` is not a key of this config" in text
    assert "`method.keep_ratoi` is not a key of this config (allowed: name)" in text
    cfg = compose_cfg(["method=sparse_ste", "+method.keep_ratoi=0.3", "+notes2=x"])
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    assert "did you mean `method.keep_ratio`?" in str(info.value)
    assert "`notes2` is not a key of this config; did you mean `notes`?" in str(info.value)


def test_adam_betas_reach_the_optimiser(compose_cfg) -> None:
    """experiment=adashare_mnist3 trains with AdaShare's β = (0.5, 0.999) (define_optimizer)."""
    import torch

    from mtlrun.run import build

    cfg = compose_cfg(["experiment=adashare_mnist3", "data.missing_train=split_test"])
    optimizer = build(cfg.optim)([torch.nn.Parameter(torch.zeros(2))])
    group = optimizer.param_groups[0]
    assert tuple(group["betas"]) == (0.5, 0.999)
    assert group["weight_decay"] == 1e-4
    plain = build(compose_cfg(["optim=adam"]).optim)([torch.nn.Parameter(torch.zeros(2))])
    assert tuple(plain.param_groups[0]["betas"]) == (0.9, 0.999)


PROBLEMS = "invalid configuration:\n  - "


@pytest.mark.parametrize(
    ("overrides", "line"),
    [
        (["data.n_train=0"], "`data.n_train` should be an integer >= 1. Found `data.n_train = 0`."),
        (
            ["trainer.seed=-1"],
            "`trainer.seed` should be an integer in [0, 4294967295] (numpy's seed range, "
            "2**32 - 1 at most). Found `trainer.seed = -1`.",
        ),
        (
            ["trainer.seed=99999999999999999999"],
            "`trainer.seed` should be an integer in [0, 4294967295] (numpy's seed range, "
            "2**32 - 1 at most). Found `trainer.seed = 99999999999999999999`.",
        ),
        (
            ["data=mnist3", "backbone=resnet", "method=adashare", "data.limit_train=1"],
            "`data.limit_train` should be >= 2 with method=adashare: `method.policy_split` (0.2) "
            "holds part of the training set out for the policy, and both parts need at least one "
            "example. Found `data.limit_train = 1`. Raise `data.limit_train` (or set it to null), "
            "or use a method without a policy split (e.g. method=hard).",
        ),
    ],
)
def test_values_that_failed_with_a_traceback_are_one_line_naming_the_key(
    compose_cfg, overrides: list[str], line: str
) -> None:
    cfg = compose_cfg(overrides)
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    assert str(info.value) == f"{PROBLEMS}{line}"


def test_seeds_at_the_ends_of_numpys_range_are_valid(compose_cfg) -> None:
    """The bounds validate accepts are the ones every generator a run seeds accepts."""
    from mtlrun.run import seed_everything

    for seed in (0, 2**32 - 1):
        cfg = compose_cfg([f"trainer.seed={seed}"])
        validate(cfg)
        seed_everything(cfg.trainer.seed)
        first = (torch.rand(1).item(), np.random.rand())
        seed_everything(cfg.trainer.seed)
        assert (torch.rand(1).item(), np.random.rand()) == first  # seeded, reproducibly
    with pytest.raises(ValueError):
        np.random.seed(2**32)  # one past the bound: numpy refuses it


def test_an_empty_mtlrun_data_is_refused_naming_it(compose_cfg, monkeypatch) -> None:
    """``MTLRUN_DATA=`` resolved ``data.root`` to ``/conll2003``, the file system's root."""
    for data, root in (("conll", "/conll2003"), ("mnist3", "")):
        cfg = compose_cfg([f"data={data}"])
        monkeypatch.setenv("MTLRUN_DATA", "")
        with pytest.raises(ConfigError) as info:
            validate(cfg)
        assert str(info.value) == PROBLEMS + (
            "`MTLRUN_DATA` should be a folder, or unset for the default `data` folder. Found "
            f"`MTLRUN_DATA = ''`, which makes `data.root = '{root}'`. Set it to the folder "
            "holding conll2003/ and MNIST/, unset it, or pass data.root=PATH."
        )
    validate(compose_cfg(["data=conll", "data.root=elsewhere"]))  # not read from MTLRUN_DATA
    validate(compose_cfg([]))  # toy data reads no folder
    monkeypatch.delenv("MTLRUN_DATA")
    validate(compose_cfg(["data=conll"]))
