"""fit(): history, checkpoints, best-on-valid, lr schedule, early stopping, determinism, resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mtlrun.backbones.cnn_bilstm import CNNBiLSTM
from mtlrun.backbones.lenet_bn import LeNetBN
from mtlrun.balancers.equal import Equal
from mtlrun.data.images import ImageTasksData
from mtlrun.data.mnist3 import load_image_task
from mtlrun.data.tagging import TaggingData, toy_data
from mtlrun.methods.hard import HardSharing
from mtlrun.model.paths import MultiTaskModel
from mtlrun.training import checkpoint
from mtlrun.training.evaluate import evaluate
from mtlrun.training.loop import FitState, TrainSettings, fit, restore
from mtlrun.training.metrics import mean_primary
from mtlrun.training.schedule import InverseTime
from tests.helpers.fakedata import write_mnist_family

CPU = torch.device("cpu")
TINY = {"word_dim": 8, "char_dim": 4, "char_filters": 4, "hidden": 6}
TASKS = ("pos", "chunk", "ner")


@pytest.fixture(scope="module")
def data() -> TaggingData:
    return toy_data(n_train=60, n_valid=20, n_test=20)


Parts = tuple[MultiTaskModel, torch.optim.Optimizer, Equal]


def build(data: TaggingData, lr: float = 0.5, seed: int = 0, momentum: float = 0.0) -> Parts:
    torch.manual_seed(seed)
    model = HardSharing().build(CNNBiLSTM(input_spec=data.input_spec, **TINY), data.tasks)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    return model, optimizer, Equal([t.name for t in data.tasks])


def run(
    data: TaggingData,
    directory: Path,
    parts: Parts | None = None,
    state: FitState | None = None,
    **settings: object,
) -> tuple[FitState, Parts]:
    model, optimizer, balancer = parts or build(data)
    options: dict[str, object] = {"max_epochs": 3, "batch_size": 8, "progress": False}
    options.update(settings)
    result = fit(
        model,
        data,
        data.tasks,
        balancer,
        optimizer,
        TrainSettings(**options),  # type: ignore[arg-type]
        CPU,
        directory,
        state=state,
    )
    return result, (model, optimizer, balancer)


def without_time(history: list[dict[str, object]]) -> list[dict[str, object]]:
    return [{k: v for k, v in row.items() if not k.startswith("time/")} for row in history]


# ------------------------------------------------------------------------ history


def test_fit_history_checkpoints_and_best_epoch(data: TaggingData, tmp_path: Path) -> None:
    state, (model, _, _) = run(data, tmp_path / "checkpoints")
    history = state.history
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert state.epoch == 3
    expected = {"phase", "epoch", "lr", "valid/score", "time/epoch_s", "time/train_s"}
    expected |= {
        "time/balancer_s",
        "kkt/stationary",
        "kkt/checked",
        "kkt/ratio",
    }  # the equal balancer's monitor
    for t in TASKS:
        expected |= {f"train/loss/{t}", f"valid/loss/{t}", f"weight/{t}"}
    expected |= {"valid/pos/accuracy"}
    for t in ("chunk", "ner"):
        expected |= {f"valid/{t}/{m}" for m in ("f1", "precision", "recall", "accuracy")}
    for row in history:
        assert set(row) == expected
        assert row["lr"] == 0.5
        assert row["weight/pos"] == 1.0
        assert row["time/epoch_s"] >= row["time/train_s"] > row["time/balancer_s"] > 0
        assert 0.0 <= row["kkt/stationary"] <= 1.0 and row["kkt/checked"] >= 1
        assert 0.0 <= row["kkt/ratio"] <= 1.0
        primary = (row["valid/pos/accuracy"] + row["valid/chunk/f1"] + row["valid/ner/f1"]) / 3
        assert row["valid/score"] == pytest.approx(primary)
    assert state.train_s == pytest.approx(sum(r["time/train_s"] for r in history))

    for t in TASKS:
        assert history[2][f"train/loss/{t}"] < history[0][f"train/loss/{t}"], t

    assert (tmp_path / "checkpoints" / "last.pt").is_file()
    assert (tmp_path / "checkpoints" / "best.pt").is_file()
    scores = [row["valid/score"] for row in history]
    assert state.best_epoch == scores.index(max(scores)) + 1
    assert state.best_score == max(scores)

    best = checkpoint.load(tmp_path / "checkpoints" / "best.pt")
    assert best["epoch"] == state.best_epoch and best["score"] == state.best_score
    assert state.best_model is not None
    assert all(torch.equal(best["model"][k], v) for k, v in state.best_model.items())
    last = checkpoint.load(tmp_path / "checkpoints" / "last.pt")
    assert last["fit"]["epoch"] == 3 and len(last["fit"]["history"]) == 3
    assert all(torch.equal(last["model"][k], v) for k, v in model.state_dict().items())


def test_best_model_is_the_weights_of_the_best_epoch(data: TaggingData, tmp_path: Path) -> None:
    state, (model, _, _) = run(data, tmp_path)
    assert state.best_model is not None
    model.load_state_dict(state.best_model)
    again = evaluate(model, data, "valid", data.tasks, 256, CPU)
    assert mean_primary(again.metrics, data.tasks) == pytest.approx(state.best_score)


def test_inverse_time_schedule(data: TaggingData, tmp_path: Path) -> None:
    state, (_, optimizer, _) = run(data, tmp_path, scheduler=InverseTime(0.5))
    lrs = [row["lr"] for row in state.history]
    assert lrs == pytest.approx([0.5 / (1 + 0.5 * (e - 1)) for e in (1, 2, 3)])
    assert lrs == pytest.approx([0.5, 1 / 3, 0.25])
    assert optimizer.param_groups[0]["initial_lr"] == 0.5


def test_patience_stops_a_model_that_cannot_improve(data: TaggingData, tmp_path: Path) -> None:
    parts = build(data, lr=0.0)
    before = {k: v.clone() for k, v in parts[0].state_dict().items()}
    state, _ = run(data, tmp_path, parts=parts, max_epochs=5, patience=1)
    assert [row["epoch"] for row in state.history] == [1, 2]
    assert state.best_epoch == 1
    assert state.history[0]["valid/score"] == state.history[1]["valid/score"]
    assert all(torch.equal(before[k], v) for k, v in parts[0].state_dict().items())


def test_patience_does_not_stop_an_improving_run(data: TaggingData, tmp_path: Path) -> None:
    state, _ = run(data, tmp_path, patience=3)
    assert len(state.history) == 3


def test_same_seed_same_history(data: TaggingData, tmp_path: Path) -> None:
    first, (model_a, _, _) = run(data, tmp_path / "a", parts=build(data, seed=7), seed=7)
    second, (model_b, _, _) = run(data, tmp_path / "b", parts=build(data, seed=7), seed=7)
    assert without_time(first.history) == without_time(second.history)
    assert all(torch.equal(v, model_b.state_dict()[k]) for k, v in model_a.state_dict().items())
    other, _ = run(data, tmp_path / "c", parts=build(data, seed=7), seed=8)
    assert without_time(other.history) != without_time(first.history)  # the seed matters


def test_resume_equals_an_uninterrupted_run(data: TaggingData, tmp_path: Path) -> None:
    """3 epochs straight == 2 epochs, restore(last.pt) into fresh objects, 1 more epoch.

    Momentum and an lr schedule make the optimizer and scheduler states matter; dropout (0.5)
    makes the RNG state matter; the fresh objects have other weights, lr and RNG.
    """
    schedule = {"scheduler": InverseTime(0.1)}
    straight, (model_a, optimizer_a, _) = run(
        data, tmp_path / "straight", parts=build(data, momentum=0.9), **schedule
    )

    run(data, tmp_path / "cut", parts=build(data, momentum=0.9), max_epochs=2, **schedule)
    fresh = build(data, lr=0.1, seed=999, momentum=0.9)
    state, payload = restore(tmp_path / "cut" / "last.pt", *fresh)
    assert state.epoch == 2 and len(state.history) == 2
    assert set(payload) >= {"model", "optimizer", "balancer", "fit", "rng"}
    resumed, (model_b, optimizer_b, _) = run(
        data, tmp_path / "cut", parts=fresh, state=state, **schedule
    )

    a, b = model_a.state_dict(), model_b.state_dict()
    assert list(a) == list(b)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["valid/score"] for r in resumed.history] == [
        r["valid/score"] for r in straight.history
    ]
    assert without_time(resumed.history) == without_time(straight.history)
    assert resumed.best_epoch == straight.best_epoch
    assert optimizer_b.param_groups[0]["lr"] == optimizer_a.param_groups[0]["lr"]
    # the scheduler steps after every epoch: the optimiser holds the lr of a 4th epoch
    assert optimizer_b.param_groups[0]["lr"] == 0.5 / (1.0 + 0.1 * 3)


# -------------------------------------------------------------------- image tasks


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> ImageTasksData:
    root = write_mnist_family(tmp_path_factory.mktemp("mnist3"), n_train=64, n_test=40)
    splits = {t: load_image_task(root, t, valid_size=16) for t in ("mnist", "fashion", "kmnist")}
    return ImageTasksData("mnist3", splits)


def test_image_step_draws_one_group_per_task(images: ImageTasksData) -> None:
    assert images.sizes()["train"] == {"mnist": 48, "fashion": 48, "kmnist": 48}
    assert images.steps_per_epoch(10) == 5
    steps = list(images.train_steps(10, epoch=0, seed=0))
    assert len(steps) == 5
    for groups in steps:
        assert [list(targets) for _, targets in groups] == [["mnist"], ["fashion"], ["kmnist"]]
        for x, targets in groups:
            (y,) = targets.values()
            assert x.shape == (10, 1, 28, 28) and y.shape == (10,)
    # The first pass of each task visits every training image once (48 = 4 full batches + 8).
    seen = torch.cat([steps[k][0][1]["mnist"] for k in range(4)] + [steps[4][0][1]["mnist"][:8]])
    assert sorted(seen.tolist()) == sorted(images.data["train"]["mnist"][1].tolist())


def test_lenet_learns_the_image_tasks(images: ImageTasksData, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = HardSharing().build(LeNetBN(input_spec=images.input_spec), images.tasks)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    before = evaluate(model, images, "valid", images.tasks, 256, CPU)
    settings = TrainSettings(max_epochs=3, batch_size=8, progress=False)
    balancer = Equal([t.name for t in images.tasks])
    state = fit(model, images, images.tasks, balancer, optimizer, settings, CPU, tmp_path)
    last = state.history[-1]
    assert {f"train/loss/{t}" for t in ("mnist", "fashion", "kmnist")} <= set(last)
    for t in ("mnist", "fashion", "kmnist"):
        assert last[f"valid/{t}/accuracy"] > 0.5, t  # chance is 0.1
        assert last[f"valid/{t}/accuracy"] > before.metrics[t]["accuracy"], t
        assert last[f"valid/loss/{t}"] < before.loss[t], t
