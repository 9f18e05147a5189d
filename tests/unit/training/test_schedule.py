"""The scheduler group: each option's learning rates by hand, per phase, across a resume, and the
former ``trainer.lr_decay``'s learning rates kept bit for bit (lr_pins.json)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch

from mtlrun.backbones.cnn_bilstm import CNNBiLSTM
from mtlrun.balancers.equal import Equal
from mtlrun.config.validate import validate
from mtlrun.data.tagging import TaggingData, toy_data
from mtlrun.errors import ConfigError
from mtlrun.methods.hard import HardSharing
from mtlrun.run import build, run
from mtlrun.training import checkpoint
from mtlrun.training.loop import FitState, Phase, TrainSettings, fit, restore
from mtlrun.training.schedule import (
    Constant,
    Cosine,
    InverseTime,
    Plateau,
    Schedule,
    Step,
    Warmup,
)
from tests.conftest import TINY_TEXT, TOY_SMALL

CPU = torch.device("cpu")
PINS = json.loads((Path(__file__).parent / "lr_pins.json").read_text())["cases"]


def lrs(schedule: Schedule, epochs: int, lr: float = 0.1, scores: list[float] | None = None):
    """The lr of each epoch of one phase, stepped as fit() steps it."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=lr)
    scheduler = schedule.build(optimizer, epochs)
    out = []
    for e in range(epochs):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step(scores[e]) if schedule.uses_score else scheduler.step()  # type: ignore[arg-type]
    return out


# ------------------------------------------------------------------ each option by hand


@pytest.mark.parametrize("decay", [0.0, 0.05, 0.1, 0.3, 0.5, 1.0])
@pytest.mark.parametrize("lr", [0.1, 0.3, 1e-3, 0.015])
def test_inverse_time_is_the_former_lr_decay_bit_for_bit(lr: float, decay: float) -> None:
    """loop.py computed ``lr / (1.0 + lr_decay * epoch)`` before; the same floats, not close."""
    assert lrs(InverseTime(decay), 30, lr) == [lr / (1.0 + decay * e) for e in range(30)]


def test_constant_is_the_learning_rate_itself() -> None:
    assert lrs(Constant(), 5, 0.015) == [0.015] * 5


def test_step_multiplies_by_gamma_every_step_size_epochs() -> None:
    assert lrs(Step(step_size=2, gamma=0.5), 6) == pytest.approx(
        [0.1, 0.1, 0.05, 0.05, 0.025, 0.025]
    )


def test_warmup_rises_linearly_then_stays() -> None:
    # start 0.1·lr, + (1 − 0.1)/3 of lr per epoch, lr from epoch 3 on
    assert lrs(Warmup(epochs=3, start_factor=0.1), 5) == pytest.approx([0.01, 0.04, 0.07, 0.1, 0.1])


def test_cosine_anneals_over_the_phase() -> None:
    expected = [0.1 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(4)]
    assert expected == pytest.approx([0.1, 0.0853553, 0.05, 0.0146447], rel=1e-5)
    assert lrs(Cosine(), 4) == pytest.approx(expected)


def test_cosine_with_warmup_anneals_what_is_left_of_the_phase() -> None:
    warm = [0.01, 0.055]  # 2 warm-up epochs from 0.1·lr
    anneal = [0.02 + (0.1 - 0.02) * (1 + math.cos(math.pi * k / 4)) / 2 for k in range(4)]
    got = lrs(Cosine(eta_min=0.02, warmup_epochs=2, warmup_start_factor=0.1), 6)
    assert got == pytest.approx(warm + anneal)


def test_plateau_reduces_after_patience_epochs_without_a_better_score() -> None:
    scores = [0.5, 0.6, 0.6, 0.6, 0.6, 0.7, 0.7]
    # epoch 1 improves; 2 and 3 do not (2 > patience 1): epoch 4 trains at 0.1·0.5
    assert lrs(Plateau(factor=0.5, patience=1), 7, scores=scores) == pytest.approx(
        [0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05]
    )
    # a relative threshold of 20 %: 0.6 is not better than 0.5 (needs > 0.6)
    got = lrs(Plateau(factor=0.5, patience=0, threshold=0.2), 3, scores=[0.5, 0.6, 0.9])
    assert got == pytest.approx([0.1, 0.1, 0.05])


def test_bad_scheduler_keys_are_named_together() -> None:
    with pytest.raises(ConfigError) as e:
        Step(step_size=0, gamma=1.5)
    assert "`scheduler.step_size` should be an integer >= 1. Found `scheduler.step_size = 0`." in (
        str(e.value)
    )
    assert "`scheduler.gamma` should be in (0, 1]. Found `scheduler.gamma = 1.5`." in str(e.value)
    with pytest.raises(ConfigError, match=r"`scheduler.factor` should be in \(0, 1\)"):
        Plateau(factor=1.0)
    with pytest.raises(ConfigError, match=r"`scheduler.decay` should be >= 0"):
        InverseTime(-0.1)
    with pytest.raises(ConfigError, match=r"`scheduler.warmup_epochs` should be an integer >= 0"):
        Cosine(warmup_epochs=-1)


def test_a_bad_scheduler_key_stops_the_run_before_training(compose_cfg, tmp_path: Path) -> None:
    cfg = compose_cfg([*TINY_TEXT, *TOY_SMALL, "scheduler=warmup", "scheduler.start_factor=0"])
    with pytest.raises(ConfigError, match=r"`scheduler.start_factor` should be in \(0, 1\]"):
        run(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_misspelt_scheduler_key_is_refused_at_compose_time(compose_cfg) -> None:
    with pytest.raises(Exception, match="gama"):
        compose_cfg(["scheduler=step", "scheduler.gama=0.5"])


# ------------------------------------------------------------------ through fit()


@pytest.fixture(scope="module")
def data() -> TaggingData:
    return toy_data(n_train=24, n_valid=8, n_test=8)


def parts(data: TaggingData, seed: int = 0) -> tuple:
    torch.manual_seed(seed)
    model = HardSharing().build(CNNBiLSTM(input_spec=data.input_spec, **TINY), data.tasks)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    return model, optimizer, Equal([t.name for t in data.tasks], kkt_every=0)


TINY = {"word_dim": 8, "char_dim": 4, "char_filters": 4, "hidden": 6}


def fit_lrs(
    data: TaggingData,
    directory: Path,
    schedule: Schedule,
    epochs: int,
    objects: tuple | None = None,
    state: FitState | None = None,
    stop_after: int | None = None,
) -> tuple[list[float], FitState]:
    """The lr of every epoch of a fit(); ``stop_after``: the process dies after that epoch's
    checkpoint (the phase keeps its length ``epochs``)."""
    model, optimizer, balancer = objects or parts(data)
    settings = TrainSettings(
        max_epochs=epochs, batch_size=8, steps_per_epoch=1, progress=False, scheduler=schedule
    )

    def on_epoch(s: FitState) -> None:
        if s.epoch == stop_after:
            raise Killed

    try:
        state = fit(model, data, data.tasks, balancer, optimizer, settings, CPU, directory, state, on_epoch=on_epoch, phase=Phase())  # fmt: skip
    except Killed:
        return [], FitState()
    return [row["lr"] for row in state.history], state


class Killed(Exception):
    pass


def test_fit_trains_each_epoch_at_the_schedules_lr(data: TaggingData, tmp_path: Path) -> None:
    got, _ = fit_lrs(data, tmp_path, Cosine(eta_min=0.1, warmup_epochs=1), 4)
    assert got == pytest.approx(lrs(Cosine(eta_min=0.1, warmup_epochs=1), 4, lr=0.5))
    assert got[0] == pytest.approx(0.05) and got[1] == pytest.approx(0.5)


def test_each_phase_starts_its_schedule_afresh(data: TaggingData, tmp_path: Path) -> None:
    """Two phases sharing one optimiser (tree_search's epochs of training to stationarity) each
    start at optim.lr, as trainer.lr_decay did; so does an lr that a plateau reduced."""
    objects = parts(data)
    first, _ = fit_lrs(data, tmp_path / "a", Step(step_size=1, gamma=0.5), 3, objects)
    second, _ = fit_lrs(data, tmp_path / "b", Step(step_size=1, gamma=0.5), 2, objects)
    assert first == pytest.approx([0.5, 0.25, 0.125]) and second == pytest.approx([0.5, 0.25])
    never_better = Plateau(factor=0.5, patience=0, threshold=100.0)
    reduced, _ = fit_lrs(data, tmp_path / "c", never_better, 3, objects)
    again, _ = fit_lrs(data, tmp_path / "d", never_better, 2, objects)
    # the first epoch sets the best score; each later one is "not better": lr halves after it
    assert reduced == pytest.approx([0.5, 0.5, 0.25]) and again == pytest.approx([0.5, 0.5])
    assert objects[1].param_groups[0]["lr"] == pytest.approx(0.25)  # stepped after the last


@pytest.mark.parametrize(
    "schedule",
    [
        Cosine(eta_min=0.05, warmup_epochs=2),
        Step(step_size=1, gamma=0.7),
        Plateau(factor=0.5, patience=0, threshold=100.0),  # its state (best, counts) matters
    ],
    ids=["cosine_warmup", "step", "plateau"],
)
def test_a_restored_checkpoint_continues_the_schedule(
    data: TaggingData, tmp_path: Path, schedule: Schedule
) -> None:
    """Killed after epoch 2 of 5, restored into fresh objects: the same 5 learning rates (the
    saved scheduler state is loaded). A finished 2-epoch phase continued to 5 epochs replays
    the 5-epoch schedule over its 2 epochs and gives them too."""
    straight, _ = fit_lrs(data, tmp_path / "straight", schedule, 5)
    assert len(set(straight)) > 1  # the schedule moves
    fit_lrs(data, tmp_path / "killed", schedule, 5, stop_after=2)
    fit_lrs(data, tmp_path / "short", schedule, 2)
    for folder in ("killed", "short"):
        fresh = parts(data, seed=9)
        fresh[1].param_groups[0]["lr"] = 0.01  # the restored optimiser's lr wins over it
        state, payload = restore(tmp_path / folder / "last.pt", *fresh)
        saved = payload["fit"]["scheduler"]
        assert saved["epochs"] == (5 if folder == "killed" else 2)
        assert saved["state"]["last_epoch"] == 2
        resumed, _ = fit_lrs(data, tmp_path / folder, schedule, 5, fresh, state)
        assert resumed == straight, folder


def test_a_checkpoint_without_scheduler_state_is_replayed(
    data: TaggingData, tmp_path: Path
) -> None:
    """A last.pt written before schedulers were saved continues at the right epoch."""
    schedule = Plateau(factor=0.5, patience=0, threshold=100.0)
    straight, _ = fit_lrs(data, tmp_path / "straight", schedule, 4)
    fit_lrs(data, tmp_path / "old", schedule, 2)
    payload = checkpoint.load(tmp_path / "old" / "last.pt")
    del payload["fit"]["scheduler"]
    checkpoint.save(tmp_path / "old" / "last.pt", payload)
    fresh = parts(data, seed=9)
    state, _ = restore(tmp_path / "old" / "last.pt", *fresh)
    resumed, _ = fit_lrs(data, tmp_path / "old", schedule, 4, fresh, state)
    assert resumed == straight


# ------------------------------------------------------------------ whole runs

BASE = [*TINY_TEXT, *TOY_SMALL, "trainer.progress=false", "trainer.plots=false"]
BASE += ["trainer.search_cache=null"]


def history_lr(run_dir: Path) -> list[tuple[str, str, str]]:
    with (run_dir / "history.csv").open() as f:
        return [(r["phase"], r["epoch"], r["lr"]) for r in csv.DictReader(f)]


OPTIONS = sorted(p.stem for p in (Path(__file__).parents[3] / "conf" / "scheduler").glob("*.yaml"))


@pytest.mark.parametrize("option", OPTIONS)
def test_every_scheduler_option_composes_and_trains(
    compose_cfg, tmp_path: Path, option: str
) -> None:
    """Each conf/scheduler/ YAML (enrolled automatically) composes, validates and trains; the
    epochs' learning rates in history.csv are its schedule's (the plateau's from the scores)."""
    cfg = compose_cfg([*BASE, f"scheduler={option}", "trainer.max_epochs=3", "optim.lr=0.5"])
    validate(cfg)
    run(cfg, tmp_path / "run")
    schedule = build(cfg.scheduler)
    with (tmp_path / "run" / "history.csv").open() as f:
        rows = list(csv.DictReader(f))
    scores = [float(r["valid/score"]) for r in rows]
    expected = lrs(schedule, 3, lr=0.5, scores=scores)
    assert [float(r["lr"]) for r in rows] == pytest.approx(expected, rel=1e-5)


STE = ["method=sparse_ste", "method.warmup_epochs=1", "method.search_epochs=4"]
STE += ["method.finetune_epochs=1"]


@pytest.mark.parametrize(
    "schedule",
    [
        ["scheduler=plateau", "scheduler.factor=0.5", "scheduler.patience=0",
         "scheduler.threshold=100", "trainer.max_epochs=4"],
        ["scheduler=cosine", "scheduler.warmup_epochs=1", "scheduler.eta_min=0.01",
         "trainer.max_epochs=4"],
        [*STE, "scheduler=step", "scheduler.step_size=1", "scheduler.gamma=0.5"],
    ],
    ids=["plateau", "cosine_warmup", "sparse_ste_search"],
)  # fmt: skip
def test_trainer_resume_gives_the_same_lr_sequence(
    compose_cfg, tmp_path: Path, sigterm_at: dict, schedule: list[str]
) -> None:
    """Stopped by SIGTERM in the middle of epoch 3 of 4 (sparse_ste: search epoch 2 of 4, a
    search phase's checkpoint), then trainer.resume=true: the same history, lr column too."""
    overrides = [*BASE, *schedule, "optim.lr=0.5"]
    straight = tmp_path / "straight"
    run(compose_cfg(overrides), straight)
    per_epoch = sigterm_at["n"] // len(history_lr(straight))
    sigterm_at.update(n=0, at=2 * per_epoch + per_epoch // 2)
    cut = tmp_path / "outputs" / "cut"
    stopped = run(compose_cfg(overrides), cut)
    assert stopped["interrupted"]["signal"] == "SIGTERM" and len(history_lr(cut)) == 2
    sigterm_at["at"] = None
    on = tmp_path / "outputs" / "on"
    resumed = run(compose_cfg([*overrides, "trainer.resume=true"]), on)
    assert resumed["run"]["resumed_from_dir"] == str(cut.resolve())
    assert history_lr(on) == history_lr(straight)
    assert len({lr for _, _, lr in history_lr(on)}) > 1


@pytest.mark.parametrize("case", sorted(PINS))
def test_the_former_lr_decay_runs_keep_their_learning_rates(
    compose_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    """Runs recorded with trainer.lr_decay before the scheduler group (lr_pins.json) give the
    same learning rates, phase by phase (each phase restarts; tree_search's one-epoch phases
    of training to stationarity stay at optim.lr), as exact floats and in history.csv."""
    import mtlrun.run as run_module
    import mtlrun.training.context as context

    pin = PINS[case]
    seen: list[list] = []

    def recording(fit_function):  # noqa: ANN001, ANN202
        def wrapper(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            state = fit_function(*args, **kwargs)
            seen.extend([r["phase"], r["epoch"], repr(r["lr"])] for r in state.history)
            return state

        return wrapper

    monkeypatch.setattr(run_module, "fit", recording(run_module.fit))
    monkeypatch.setattr(context, "fit", recording(context.fit))
    decay = pin["lr_decay"]
    schedule = ["scheduler=inverse_time", f"scheduler.decay={decay}"] if decay else []
    run(compose_cfg([*pin["overrides"], *schedule]), tmp_path / "run")
    assert seen == pin["lr"]
    assert [list(row) for row in history_lr(tmp_path / "run")] == pin["history_csv"]
