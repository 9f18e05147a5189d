"""``data.random_affine``: the authors' RandomAffine augmentation of training batches
(hav4ik/Hydra configs/trinist/*.yaml: degrees = shear = 10, KMNIST 20), off by default."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision.transforms import RandomAffine

from mtlrun.data.images import mnist3_data, random_affine
from mtlrun.errors import ConfigError
from tests.helpers.fakedata import write_mnist_family


def test_each_image_goes_through_torchvisions_random_affine() -> None:
    images = torch.rand(6, 1, 28, 28) * 2 - 1
    got = random_affine(images, 20.0, generator_seed=7)
    torch.manual_seed(7)
    affine = RandomAffine(degrees=20.0, shear=20.0, fill=-1.0)
    expected = torch.stack([affine(img) for img in images])
    assert torch.equal(got, expected)
    assert not torch.equal(got, images)
    # one draw per image, not one for the batch: two copies of an image come out different
    same = random_affine(images[:1].repeat(2, 1, 1, 1), 20.0, generator_seed=7)
    assert not torch.equal(same[0], same[1])
    state = torch.get_rng_state()
    random_affine(images, 10.0, generator_seed=1)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is left alone


def _data(tmp_path: Path, **kwargs: object):  # noqa: ANN202
    root = write_mnist_family(tmp_path, tasks=("mnist", "fashion"), n_train=64, n_test=40)
    return mnist3_data(str(root), tasks=["mnist", "fashion"], valid_size=16, **kwargs)


def test_off_by_default_and_per_task_when_on(tmp_path: Path) -> None:
    plain = _data(tmp_path)
    assert plain.affine == {} and not any("random_affine" in d for d in plain.deviations)
    raw = {t: x for t, (x, _) in plain.data["train"].items()}
    step = next(plain.train_steps(8, epoch=1, seed=0))
    for x, labels in step:
        (task,) = labels
        assert any(torch.equal(x[0], img) for img in raw[task])

    aug = _data(tmp_path, random_affine={"mnist": 10})
    assert aug.affine == {"mnist": 10.0}
    assert any("random_affine augments training batches only" in d for d in aug.deviations)
    first = next(aug.train_steps(8, epoch=1, seed=0))
    again = next(aug.train_steps(8, epoch=1, seed=0))
    plain_step = next(plain.train_steps(8, epoch=1, seed=0))
    for (xa, ya), (xb, _), (xp, yp) in zip(first, again, plain_step, strict=True):
        assert torch.equal(xa, xb)  # reproducible for a seed and epoch
        (task,) = ya
        assert torch.equal(ya[task], yp[task])
        assert torch.equal(xa, xp) == (task == "fashion")  # only mnist is augmented
    assert torch.equal(aug.data["valid"]["mnist"][0], plain.data["valid"]["mnist"][0])


def test_bad_random_affine_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"`data.random_affine` should map tasks of "
                       r"`data.tasks` to degrees >= 0. Found `data.random_affine = "
                       r"\{'kmnist': 20\}`"):  # fmt: skip
        _data(tmp_path, random_affine={"kmnist": 20})


def test_random_affine_is_set_from_the_command_line(compose_cfg) -> None:
    """Off by default; a command-line dict composes (a null default would not merge)."""
    base = ["data=mnist3", "data.missing_train=split_test"]
    assert compose_cfg(base).data.random_affine is None
    cfg = compose_cfg([*base, "data.random_affine={mnist:5,kmnist:20}"])
    assert dict(cfg.data.random_affine) == {"mnist": 5.0, "kmnist": 20.0}


@pytest.mark.parametrize("value", [5, "ten", {"mnist": "ten"}, {"mnist": -1}])
def test_a_random_affine_that_is_not_task_degrees_names_the_key(tmp_path: Path, value) -> None:
    with pytest.raises(ConfigError, match=r"`data.random_affine` should map tasks of `data.tasks`"):
        _data(tmp_path, random_affine=value)
