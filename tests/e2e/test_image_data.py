"""Image data end to end: ``data=mnist3`` keeps its numbers, ``data=vision`` trains."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mtlrun.data.images import mnist3_data
from mtlrun.errors import DataError
from mtlrun.run import run
from tests.helpers.fakedata import write_mnist_family
from tests.helpers.fakevision import write_cifar10

# Recorded on the code before data=mnist3 became a preset of data=vision (same files, seed,
# overrides): the preset must give these numbers exactly (losses to float32 rounding).
MNIST3_PIN = [
    "data=mnist3",
    "data.valid_size=16",
    "data.missing_train=split_test",
    "data.random_affine={kmnist:20}",
    "trainer.max_epochs=2",
    "trainer.progress=false",
    "trainer.plots=false",
    "trainer.save_predictions=false",
    "trainer.seed=3",
]
PINNED_TEST = {
    "accuracy": {"mnist": 1.0, "fashion": 0.825, "kmnist": 0.5},
    "loss": {
        "mnist": 2.1564369201660156,
        "fashion": 2.136770820617676,
        "kmnist": 2.217740058898926,
    },
}
PINNED_VALID = {
    "accuracy": {"mnist": 1.0, "fashion": 0.75, "kmnist": 0.25},
    "loss": {
        "mnist": 2.181661367416382,
        "fashion": 2.1759414672851562,
        "kmnist": 2.210822582244873,
    },
}
PINNED_TRAIN_LOSS = [  # history.csv train/loss/<task> of epochs 1 and 2
    {"mnist": 2.31794, "fashion": 2.42209, "kmnist": 2.4297},
    {"mnist": 1.24325, "fashion": 1.2269, "kmnist": 1.54829},
]
# (sum of the float images, sum of label * position) per split/task: the same tensors
PINNED_SUMS = {
    "train/mnist": (-35327.404532, 9016),
    "train/fashion": (-35300.581004, 9008),
    "train/kmnist": (-17672.878736, 2745),
    "valid/mnist": (-8818.533487, 461),
    "valid/fashion": (-8832.64329, 499),
    "valid/kmnist": (-2205.090234, 10),
    "test/mnist": (-22069.639598, 3618),
    "test/fashion": (-22087.474891, 3171),
    "test/kmnist": (-2216.690234, 7),
}
PINNED_STEPS = [  # image sums of the first two training steps (seed 3, epoch 1, batch 8)
    [-4418.7844, -4393.4981, -4530.0707],
    [-4401.302, -4408.7765, -4524.8863],
]


@pytest.fixture()
def mnist3_root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    write_mnist_family(root, n_train=80, n_test=40, missing={"kmnist": ["train-images-idx3-ubyte"]})
    return root


def test_mnist3_tensors_are_the_pinned_ones(mnist3_root: Path) -> None:
    data = mnist3_data(
        str(mnist3_root), valid_size=16, missing_train="split_test", random_affine={"kmnist": 20}
    )
    assert data.sizes() == {
        "train": {"mnist": 64, "fashion": 64, "kmnist": 32},
        "valid": {"mnist": 16, "fashion": 16, "kmnist": 4},
        "test": {"mnist": 40, "fashion": 40, "kmnist": 4},
    }
    assert data.deviations == [
        "kmnist: train images missing; train/valid/test = 32/4/4 stratified split of the "
        "official test set (seed 0)",
        "data.random_affine augments training batches only (the authors' toy.py also passes "
        "the test images through the RandomAffine)",
    ]
    for split, tasks in data.data.items():
        for task, (x, y) in tasks.items():
            image_sum, label_sum = PINNED_SUMS[f"{split}/{task}"]
            assert x.shape[1:] == (1, 28, 28)
            assert float(x.double().sum()) == pytest.approx(image_sum, abs=1e-4)
            assert int((y * torch.arange(len(y))).sum()) == label_sum
    steps = list(data.train_steps(8, epoch=1, seed=3))[:2]
    got = [[float(x.double().sum()) for x, _ in groups] for groups in steps]
    assert got == [[pytest.approx(v, abs=1e-3) for v in row] for row in PINNED_STEPS]


def test_mnist3_run_gives_the_pinned_metrics(compose_cfg, mnist3_root, monkeypatch, tmp_path):
    monkeypatch.setenv("MTLRUN_DATA", str(mnist3_root))
    metrics = run(compose_cfg(MNIST3_PIN), tmp_path / "run")
    for split, pinned in (("test", PINNED_TEST), ("valid", PINNED_VALID)):
        assert {t: m["accuracy"] for t, m in metrics[split].items()} == pinned["accuracy"]
        assert metrics["loss"][split] == pytest.approx(pinned["loss"], rel=1e-5)
    with (tmp_path / "run" / "history.csv").open() as f:
        rows = list(csv.DictReader(f))
    train_loss = [
        {t: float(r[f"train/loss/{t}"]) for t in ("mnist", "fashion", "kmnist")} for r in rows
    ]
    assert train_loss == [pytest.approx(row, rel=1e-4) for row in PINNED_TRAIN_LOSS]
    assert metrics["params"]["used"] == 25710


VISION_QUICK = ["trainer.progress=false", "trainer.plots=false", "trainer.save_predictions=false"]


@pytest.mark.parametrize(
    ("backbone", "encoder_params"),
    [
        # LeNetBN on 3x32x32: conv1 3·20·5·5+20, BN 2·20, conv2 20·50·5·5+50, BN 2·50
        (["backbone=lenet_bn"], 1520 + 40 + 25050 + 100),
        (["backbone=resnet", "backbone.layers=[1,1,1,1]", "backbone.width=4"], None),
    ],
)
def test_a_cifar10_shaped_rgb_set_trains_through_torchvision(
    compose_cfg, monkeypatch, tmp_path: Path, backbone: list[str], encoder_params: int | None
) -> None:
    write_cifar10(tmp_path / "data", n_train=200, n_test=60)
    monkeypatch.setenv("MTLRUN_DATA", str(tmp_path / "data"))
    cfg = compose_cfg(
        ["data=vision", "data.tasks={cifar:CIFAR10}", "data.verify=false", "data.valid_size=40"]
        + ["trainer.max_epochs=3", "trainer.batch_size=16", *backbone, *VISION_QUICK]
    )
    metrics = run(cfg, tmp_path / "run")
    assert metrics["data"]["sizes"] == {
        "train": {"cifar": 160},
        "valid": {"cifar": 40},
        "test": {"cifar": 60},
    }
    assert metrics["data"]["deviations"] == [
        "cifar: torchvision.datasets.CIFAR10 files read without torchvision's checksum check "
        "(data.verify=false)"
    ]
    assert metrics["test"]["cifar"]["accuracy"] > 0.5  # chance: 0.1
    if encoder_params is not None:  # the first conv reads 3 channels, the head 50·5·5 features
        assert metrics["params"]["used"] == encoder_params


def test_cifar_and_mnist_train_together_once_converted(compose_cfg, monkeypatch, tmp_path):
    root = tmp_path / "data"
    write_cifar10(root, n_train=60, n_test=20)
    write_mnist_family(root, tasks=("mnist",), n_train=60, n_test=20)
    monkeypatch.setenv("MTLRUN_DATA", str(root))
    tasks = ["data=vision", "data.tasks={digits:MNIST,cifar:CIFAR10}", "data.verify=false"]
    cfg = compose_cfg([*tasks, "data.valid_size=10", "trainer.max_epochs=1", *VISION_QUICK])
    with pytest.raises(DataError, match=r"Convert them with data.channels=1 and data.size"):
        run(cfg, tmp_path / "refused")
    cfg = compose_cfg(
        [*tasks, "data.valid_size=10", "data.channels=3", "data.size=[32,32]"]
        + ["trainer.max_epochs=1", *VISION_QUICK]
    )
    metrics = run(cfg, tmp_path / "run")
    assert set(metrics["test"]) == {"digits", "cifar"}
    assert (
        "digits: images converted from 1 to 3 channel(s) (data.channels=3)"
        in (metrics["data"]["deviations"])
    )


@pytest.mark.realdata
def test_the_real_mnist_family_through_vision(compose_cfg, monkeypatch, real_data, tmp_path):
    monkeypatch.setenv("MTLRUN_DATA", str(real_data))
    cfg = compose_cfg(
        ["data=vision", "data.tasks={mnist:MNIST,fashion:FashionMNIST,kmnist:KMNIST}"]
        + ["data.missing_train=split_test", "data.limit_train=512", "data.limit_eval=256"]
        + ["trainer.max_epochs=1", *VISION_QUICK]
    )
    metrics = run(cfg, tmp_path / "run")
    assert metrics["data"]["sizes"]["train"] == {"mnist": 512, "fashion": 512, "kmnist": 512}
    assert metrics["data"]["deviations"][0].startswith(
        "kmnist: train images missing; train/valid/test = 8000/1000/1000"
    )
    assert metrics["test"]["mnist"]["accuracy"] > 0.5  # chance: 0.1


@pytest.mark.slow
def test_the_command_names_a_missing_key_in_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "MTLRUN_DATA": str(tmp_path)}
    mtlrun = str(Path(sys.executable).parent / "mtlrun")
    for option, line in (
        ("data=vision", "mtlrun: error: `data.tasks` should map task names to torchvision data "
         "sets, e.g. {cifar: CIFAR10, svhn: {dataset: SVHN, root: PATH}}. Found `data.tasks = "
         "None`."),
        ("data=python", "mtlrun: error: `data.factory` should be `package.module:function` or "
         "`path/to/file.py:function`. Found `data.factory = None`."),
    ):  # fmt: skip
        out = subprocess.run(
            [mtlrun, option], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
        assert out.returncode == 2, out.stderr
        assert out.stderr.strip().splitlines()[-1] == line
        assert "Traceback" not in out.stderr
