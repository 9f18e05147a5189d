"""Same seed, same numbers; an interrupted run resumed ends where an uninterrupted one does."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from mtlrun.errors import ConfigError
from mtlrun.run import run
from tests.conftest import TINY_TEXT, TOY_SMALL

BASE = [*TINY_TEXT, *TOY_SMALL, "trainer.progress=false", "trainer.plots=false", "optim.lr=0.5"]
VOLATILE = ("time", "run")  # wall-clock seconds and the command line differ between runs


def stable(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in VOLATILE}


def test_same_seed_gives_identical_metrics_json(compose_cfg, tmp_path: Path) -> None:
    cfg = compose_cfg([*BASE, "trainer.max_epochs=2"])
    run(cfg, tmp_path / "a")
    run(cfg, tmp_path / "b")
    a = json.loads((tmp_path / "a" / "metrics.json").read_text())
    b = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert stable(a) == stable(b)
    c = run(compose_cfg([*BASE, "trainer.max_epochs=2", "trainer.seed=1"]), tmp_path / "c")
    assert stable(c)["valid"] != stable(a)["valid"]


def test_resume_reaches_the_uninterrupted_result(compose_cfg, tmp_path: Path) -> None:
    straight = run(compose_cfg([*BASE, "trainer.max_epochs=3"]), tmp_path / "straight")
    # "Interrupted" after epoch 2: its checkpoints/last.pt holds epoch 2.
    run(compose_cfg([*BASE, "trainer.max_epochs=2"]), tmp_path / "outputs" / "first")
    resumed = run(
        compose_cfg(
            [
                *BASE,
                "trainer.max_epochs=3",
                "trainer.resume=true",
                f"trainer.resume_dir={tmp_path / 'outputs' / 'first'}",
            ]
        ),
        tmp_path / "outputs" / "second",
    )
    assert resumed["run"]["resumed_from"].endswith("first/checkpoints/last.pt")
    assert stable(resumed) == stable(straight)
    history = (tmp_path / "outputs" / "second" / "history.csv").read_text().splitlines()
    assert len(history) == 1 + 3  # header + the two restored epochs + the resumed one


def test_resume_finds_the_newest_unfinished_matching_run(compose_cfg, tmp_path: Path) -> None:
    run(compose_cfg([*BASE, "trainer.max_epochs=1"]), tmp_path / "outputs" / "killed")
    (tmp_path / "outputs" / "killed" / "metrics.json").unlink()  # as if killed hard
    run(compose_cfg([*BASE, "trainer.max_epochs=1"]), tmp_path / "outputs" / "finished")
    resumed = run(
        compose_cfg([*BASE, "trainer.max_epochs=2", "trainer.resume=true"]),
        tmp_path / "outputs" / "two",
    )
    assert resumed["epochs"]["trained"] == 2
    # the finished run is newer but never picked: only unfinished runs are continued
    assert "killed/checkpoints/last.pt" in resumed["run"]["resumed_from"]
    assert resumed["run"]["resumed_from_dir"] == str((tmp_path / "outputs" / "killed").resolve())


def test_resume_refuses_a_different_configuration(compose_cfg, tmp_path: Path) -> None:
    run(compose_cfg([*BASE, "trainer.max_epochs=1"]), tmp_path / "outputs" / "one")
    cfg = compose_cfg(
        [
            *BASE,
            "trainer.max_epochs=2",
            "optim.lr=0.1",
            "trainer.resume=true",
            f"trainer.resume_dir={tmp_path / 'outputs' / 'one'}",
        ]
    )
    with pytest.raises(ConfigError, match=r"different values of optim.lr \(saved 0.5, now 0.1\)"):
        run(cfg, tmp_path / "outputs" / "two")


LEARNS = [
    "backbone.word_dim=32",
    "backbone.char_dim=8",
    "backbone.char_filters=8",
    "backbone.hidden=32",
    "backbone.dropout=0.1",
    "data.n_train=300",
    "data.n_valid=50",
    "data.n_test=50",
    "trainer.max_epochs=10",  # the authors' (fastNLP) initialisation starts slower
    "optim.lr=0.3",
    "trainer.progress=false",
    "trainer.plots=false",
    "trainer.batch_size=8",
]


def test_toy_hard_sharing_learns(compose_cfg, tmp_path: Path) -> None:
    metrics = run(compose_cfg(LEARNS), tmp_path)
    # Chance POS accuracy on toy is about 1/12; a trained tagger is far above it.
    assert metrics["test"]["pos"]["accuracy"] > 0.5
    assert metrics["test"]["chunk"]["f1"] > 0.5
    assert metrics["epochs"]["best"] >= 3


def test_sigterm_keeps_the_result_and_resume_finishes_it(
    compose_cfg, tmp_path: Path, sigterm_at: dict
) -> None:
    """A SIGTERM in epoch 2 of 3: the run stops after that mini-batch, tests the best whole
    epoch and writes metrics.json marked interrupted; resuming ends as the uninterrupted run."""
    import signal

    from mtlrun.training.interrupt import STOP

    calls = sigterm_at
    straight = run(compose_cfg([*BASE, "trainer.max_epochs=3"]), tmp_path / "straight")
    per_epoch = calls["n"] // 3
    calls.update(n=0, at=per_epoch + 4)  # a few mini-batches into epoch 2
    cut = run(compose_cfg([*BASE, "trainer.max_epochs=3"]), tmp_path / "outputs" / "first")
    assert cut["interrupted"]["signal"] == "SIGTERM"
    assert cut["epochs"] == {"trained": 1, "best": 1, "phases": {"train": 1}}
    assert set(cut["test"]) == {"pos", "chunk", "ner"}
    on_disk = json.loads((tmp_path / "outputs" / "first" / "metrics.json").read_text())
    assert on_disk["interrupted"]["signal"] == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handler is gone again
    calls["at"] = None
    resumed = run(
        compose_cfg([*BASE, "trainer.max_epochs=3", "trainer.resume=true",
                     f"trainer.resume_dir={tmp_path / 'outputs' / 'first'}"]),
        tmp_path / "outputs" / "second",
    )  # fmt: skip
    assert not STOP.requested and "interrupted" not in resumed
    assert stable(resumed) == stable(straight)


def test_the_fast_kernel_keeps_a_learning_runs_metrics(compose_cfg, tmp_path: Path) -> None:
    """The padded BiLSTM kernel (default) and the packed one: same run, same metrics up to the
    drift of float rounding through training (stated tolerance: 0.02 on every metric, 0.1 % on
    every epoch's losses; measured: equal to 6 digits), with the KKT monitor on, so that its
    reused gradients are part of the run."""
    runs = {}
    for kernel in ("packed", "auto"):
        cfg = compose_cfg([*LEARNS, "trainer.max_epochs=3", f"backbone.lstm_kernel={kernel}"])
        runs[kernel] = run(cfg, tmp_path / kernel)
    packed, fast = runs["packed"], runs["auto"]
    assert packed["test"]["pos"]["accuracy"] > 0.3  # it learned: the comparison means something
    for split in ("valid", "test"):
        for task, scores in packed[split].items():
            for name, value in scores.items():
                assert fast[split][task][name] == pytest.approx(value, abs=0.02), (split, task)
    assert fast["epochs"]["best"] == packed["epochs"]["best"]
    histories = [
        list(csv.DictReader((tmp_path / k / "history.csv").open())) for k in ("packed", "auto")
    ]
    assert len(histories[0]) == len(histories[1]) == 3
    for a, b in zip(*histories, strict=True):
        for key in (k for k in a if "/loss/" in k):
            assert float(b[key]) == pytest.approx(float(a[key]), rel=1e-3), key


def test_length_buckets_learn_and_are_recorded(compose_cfg, tmp_path: Path) -> None:
    """data.batching=buckets changes which sentences share a batch: the run still learns, and
    metrics.json says so under data.deviations."""
    cfg = compose_cfg([*LEARNS, "data.batching=buckets", "data.buckets=5"])
    metrics = run(cfg, tmp_path)
    assert metrics["test"]["pos"]["accuracy"] > 0.5
    assert metrics["test"]["chunk"]["f1"] > 0.5
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert any(
        "5 length buckets (data.batching=buckets" in d for d in on_disk["data"]["deviations"]
    )


def test_a_resumed_searched_run_counts_the_parameters_of_its_searched_structure(
    compose_cfg, tmp_path: Path
) -> None:
    """The main phase resumed from last.pt restores the masks before counting `params`, so
    `params.used` is the masked count of the run that searched, not the dense supernet's."""
    imp = [*BASE, "method=sparse_imp", "method.rounds=2", "method.final_density=0.5",
           "method.keep_ratio=0.5", "method.prune_epochs=1", "method.warmup_epochs=0"]  # fmt: skip
    straight = run(compose_cfg([*imp, "trainer.max_epochs=2"]), tmp_path / "straight")
    run(compose_cfg([*imp, "trainer.max_epochs=1"]), tmp_path / "outputs" / "first")
    resumed = run(
        compose_cfg([*imp, "trainer.max_epochs=2", "trainer.resume=true",
                     f"trainer.resume_dir={tmp_path / 'outputs' / 'first'}"]),
        tmp_path / "outputs" / "second",
    )  # fmt: skip
    assert resumed["run"]["resumed_from"].endswith("first/checkpoints/last.pt")
    assert resumed["params"] == straight["params"]
    assert resumed["params"]["used"] < resumed["params"]["supernet"]
