"""``data=python``: one's own tasks from a Python function (docs/data-python.md).

The example module, tests/helpers/my_tasks.py, is the one docs/data-python.md shows verbatim.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch

from mtlrun.data.custom import SharedTensors, TaskTensors, load_factory, python_data
from mtlrun.data.images import ImageTasksData
from mtlrun.data.mnist3 import ImageSplits
from mtlrun.data.shared_images import SharedImageData
from mtlrun.errors import ConfigError, DataError
from mtlrun.run import run
from tests.helpers import my_tasks as example

DOC = Path(__file__).resolve().parents[3] / "docs" / "data-python.md"
QUICK = ["trainer.progress=false", "trainer.plots=false", "trainer.save_predictions=false"]


@pytest.fixture()
def my_tasks(tmp_path: Path) -> Path:
    """The example module as a user has it: a file ``my_tasks.py`` of their own."""
    path = tmp_path / "my_tasks.py"
    path.write_text(Path(example.__file__).read_text())
    return path


def test_the_documentation_shows_the_example_module_verbatim() -> None:
    (code,) = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert code == Path(example.__file__).read_text()


def test_the_documented_example_trains_end_to_end(compose_cfg, my_tasks, tmp_path) -> None:
    cfg = compose_cfg(
        ["data=python", f"data.factory={my_tasks}:make_tasks", "data.args={n_train:160}"]
        + ["trainer.max_epochs=2", *QUICK]
    )
    assert cfg.backbone._target_.endswith("LeNetBN")  # data=python picks an image backbone
    metrics = run(cfg, tmp_path / "run")
    assert metrics["data"]["sizes"]["train"] == {"quadrant": 160, "size": 160}
    assert metrics["data"]["sizes"]["test"] == {"quadrant": 60, "size": 60}
    assert metrics["test"]["quadrant"]["accuracy"] > 0.6  # chance: 0.25
    assert metrics["test"]["size"]["accuracy"] > 0.75  # chance: 0.5


def test_a_module_on_the_path_and_a_task_subset(compose_cfg, my_tasks, monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(my_tasks.parent))
    monkeypatch.delitem(sys.modules, "my_tasks", raising=False)
    cfg = compose_cfg(
        ["data=python", "data.factory=my_tasks:make_tasks", "data.tasks=[size]"]
        + ["data.args={n_train:40,n_eval:20}", "data.limit_train=30", "trainer.max_epochs=1"]
        + QUICK
    )
    metrics = run(cfg, tmp_path / "run")
    assert set(metrics["test"]) == {"size"}
    assert metrics["data"]["sizes"]["train"] == {"size": 30}
    assert metrics["data"]["deviations"] == [
        "train of size cut to the first 30 images (data.limit_train)"
    ]


def test_shared_images_train_in_one_group_and_take_mgda_ub(compose_cfg, my_tasks, tmp_path):
    cfg = compose_cfg(
        ["data=python", f"data.factory={my_tasks}:make_shared", "balancer=mgda_ub"]
        + ["data.args={n_train:64,n_eval:20}", "trainer.max_epochs=1", *QUICK]
    )
    metrics = run(cfg, tmp_path / "run")
    assert metrics["data"]["sizes"] == {
        "train": {"images": 64},
        "valid": {"images": 20},
        "test": {"images": 20},
    }
    assert set(metrics["test"]) == {"quadrant", "size"}


def test_tensors_become_the_tasks_they_describe() -> None:
    raw = example.make_tasks(n_train=20, n_eval=8)
    data = python_data("tests.helpers.my_tasks:make_tasks", {"n_train": 20, "n_eval": 8})
    assert isinstance(data, ImageTasksData)
    assert [(t.name, t.labels) for t in data.tasks] == [
        ("quadrant", ("top left", "top right", "bottom left", "bottom right")),
        ("size", ("small", "large")),
    ]
    x, y = data.data["valid"]["size"]
    assert torch.equal(x, raw["size"].valid[0])  # float images are kept as they are
    assert torch.equal(y, raw["size"].valid[1])
    assert data.input_spec.channels == 1 and data.input_spec.height == 16

    shared = python_data("tests.helpers.my_tasks:make_shared", {"n_train": 20, "n_eval": 8})
    assert isinstance(shared, SharedImageData)
    ((images, targets),) = next(shared.train_steps(8, epoch=0, seed=0))
    assert images.shape == (8, 1, 16, 16) and set(targets) == {"quadrant", "size"}
    groups = list(shared.eval_groups("test", 5))
    assert [len(x) for x, _ in groups] == [5, 3]


def test_uint8_images_are_scaled_and_labels_named_by_default() -> None:
    images = torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1).expand(2, 1, 8, 8)
    pair = (images.contiguous(), torch.tensor([0, 2]))

    def factory() -> dict[str, TaskTensors]:
        return {"t": TaskTensors(pair, pair, pair)}

    data = _call(factory)
    assert data.tasks[0].labels == ("0", "1", "2")
    x = data.data["train"]["t"][0]
    assert x.dtype == torch.float32 and x[0].unique().tolist() == [-1.0]
    assert x[1].unique().tolist() == [1.0]


def _call(function, **kwargs):  # noqa: ANN001, ANN202
    """python_data on a function defined in a test (published under a module of its own)."""
    module = type(sys)("mtlrun_test_factories")
    module.factory = function  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    try:
        return python_data("mtlrun_test_factories:factory", **kwargs)
    finally:
        del sys.modules[module.__name__]


def _pair(n: int = 4, shape: tuple[int, ...] = (1, 8, 8), top: int = 1):  # noqa: ANN202
    return torch.rand(n, *shape), torch.arange(n) % (top + 1)


@pytest.mark.parametrize(
    ("value", "error", "text"),
    [
        (lambda: [1, 2], ConfigError, "returned a list, which lacks name, tasks"),
        (lambda: {"t": (1, 2)}, DataError, "task t is a tuple, not a mtlrun.data.custom.TaskTensors"),
        (
            lambda: {"t": TaskTensors(_pair(), _pair(), (torch.rand(4, 8, 8), torch.tensor([0, 1, 2, -1])))},
            DataError,
            "t test labels should be in 0..2 (3 classes); found -1..2",
        ),
        (
            lambda: {"t": TaskTensors(_pair(), _pair(), _pair(top=2), classes=["a", "b"])},
            DataError,
            "t test labels should be in 0..1 (2 classes); found 0..2",
        ),
        (
            lambda: {"t": TaskTensors(_pair(), _pair(shape=(3, 8, 8)), _pair())},
            DataError,
            "t valid images are (3, 8, 8) but its train images are (1, 8, 8)",
        ),
        (
            lambda: {"t": TaskTensors(_pair(), (torch.rand(3, 1, 8, 8), torch.arange(4)), _pair())},
            DataError,
            "t valid holds 3 images and 4 labels",
        ),
        (
            lambda: {"t": TaskTensors(_pair(), (torch.rand(4, 1, 8, 8), torch.rand(4)), _pair())},
            DataError,
            "t valid labels should be integers (N,); found torch.float32 (4,)",
        ),
        (
            lambda: SharedTensors(_pair(), _pair(), _pair()),
            DataError,
            "SharedTensors.train should be a pair (images, {task: labels})",
        ),
    ],
)  # fmt: skip
def test_a_wrong_return_value_is_named(value, error, text: str) -> None:
    with pytest.raises(error, match=re.escape(text)):
        _call(value)


def test_images_of_different_shapes_across_tasks_are_refused() -> None:
    def factory() -> dict[str, TaskTensors]:
        small = TaskTensors(_pair(), _pair(), _pair())
        big = TaskTensors(*[_pair(shape=(1, 16, 16))] * 3)
        return {"small": small, "big": big}

    with pytest.raises(DataError) as info:
        _call(factory)
    assert str(info.value) == (
        "big: images are 16x16 but small images are 8x8; the tasks share one backbone input"
    )


def test_factory_and_argument_errors_name_the_key(tmp_path: Path) -> None:
    cases = {
        None: "`data.factory` should be `package.module:function` or `path/to/file.py:function`. "
        "Found `data.factory = None`.",
        "nomodule": "`data.factory` should be `package.module:function`",
        "no_such_module_xyz:f": "`data.factory = no_such_module_xyz:f`: importing "
        "no_such_module_xyz failed (No module named 'no_such_module_xyz'). Put its folder on "
        "PYTHONPATH, or name the file: data.factory=path/to/no_such_module_xyz.py:f.",
        "mtlrun.data.custom:nothing_here": "`data.factory = mtlrun.data.custom:nothing_here`: "
        "mtlrun.data.custom has no function nothing_here.",
        f"{tmp_path}/absent.py:f": f"`data.factory = {tmp_path}/absent.py:f`: no file "
        f"{tmp_path}/absent.py.",
    }
    for factory, text in cases.items():
        with pytest.raises(ConfigError) as info:
            load_factory(factory)
        assert str(info.value).startswith(text), str(info.value)


def test_args_tasks_and_modality_are_checked(my_tasks: Path) -> None:
    factory = f"{my_tasks}:make_tasks"
    with pytest.raises(ConfigError, match=r"`data.args` do not fit `data.factory = .*make_tasks`: "
                       r"got an unexpected keyword argument 'n'"):  # fmt: skip
        python_data(factory, {"n": 3})
    with pytest.raises(ConfigError) as info:
        python_data(factory, {"n_train": 8, "n_eval": 4}, tasks=["size", "colour"])
    assert str(info.value) == (
        "`data.tasks` should be null or a non-empty subset of ['quadrant', 'size'] (the tasks "
        "`data.factory` returned) without repeats. Found `data.tasks = ['size', 'colour']`."
    )
    with pytest.raises(ConfigError, match="`data.modality` should be image for dict"):
        python_data(factory, {"n_train": 8, "n_eval": 4}, modality="text")


def test_a_multitaskdata_object_is_used_as_it_is() -> None:
    pair = (torch.rand(6, 1, 8, 8), torch.arange(6) % 3)
    own = ImageTasksData("mine", {"t": ImageSplits(pair, pair, pair)})
    assert _call(lambda: own) is own
    with pytest.raises(ConfigError) as info:
        _call(lambda: own, modality="text")
    assert str(info.value).startswith("`data.modality` should be image, the modality of the data")
    with pytest.raises(ConfigError, match=r"`data.limit_train` applies to TaskTensors"):
        _call(lambda: own, limit_train=3)
    with pytest.raises(ConfigError, match=r"`data.tasks` should be null or \['t'\]"):
        _call(lambda: own, tasks=["u"])
