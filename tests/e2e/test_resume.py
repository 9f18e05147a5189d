"""Resume does what the README says: which run, from which file, and what a stop writes."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from mtlrun.cli import objective
from mtlrun.errors import ConfigError
from mtlrun.run import run
from tests.conftest import TINY_TEXT, TOY_SMALL

BASE = [*TINY_TEXT, *TOY_SMALL, "trainer.progress=false", "trainer.plots=false", "optim.lr=0.5"]
# Resuming is tested on its own: no run here loads a search another run stored (test_search_cache).
BASE += ["trainer.search_cache=null"]
STE = ["method=sparse_ste", "method.warmup_epochs=1", "method.search_epochs=2"]
STE += ["method.finetune_epochs=1"]
IMP = ["method=sparse_imp", "method.warmup_epochs=1", "method.rounds=2", "method.prune_epochs=1"]
IMP += ["method.final_density=0.25", "method.keep_ratio=0.5", "trainer.max_epochs=1"]
VOLATILE = ("time", "run")


def stable(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in VOLATILE}


def test_resume_dir_alone_resumes_that_folder(compose_cfg, tmp_path: Path) -> None:
    first = tmp_path / "outputs" / "first"
    run(compose_cfg([*BASE, "trainer.max_epochs=1"]), first)
    resumed = run(
        compose_cfg([*BASE, "trainer.max_epochs=2", f"trainer.resume_dir={first}"]),
        tmp_path / "outputs" / "second",
    )
    assert resumed["epochs"]["trained"] == 2
    assert resumed["run"]["resumed_from_dir"] == str(first.resolve())
    with pytest.raises(ConfigError, match="already trained 2 epochs .* raise trainer.max_epochs"):
        run(
            compose_cfg(
                [*BASE, "trainer.max_epochs=2", f"trainer.resume_dir={tmp_path}/outputs/second"]
            ),
            tmp_path / "outputs" / "third",
        )


def test_auto_resume_skips_a_truncated_checkpoint_with_a_warning_naming_it(
    compose_cfg, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for name in ("older", "newer"):
        run(compose_cfg([*BASE, "trainer.max_epochs=1"]), tmp_path / "outputs" / name)
        (tmp_path / "outputs" / name / "metrics.json").unlink()  # killed hard
    broken = tmp_path / "outputs" / "newer" / "checkpoints" / "last.pt"
    broken.write_bytes(broken.read_bytes()[:100])
    with caplog.at_level(logging.WARNING):
        resumed = run(
            compose_cfg([*BASE, "trainer.max_epochs=2", "trainer.resume=true"]),
            tmp_path / "outputs" / "again",
        )
    assert resumed["run"]["resumed_from_dir"] == str((tmp_path / "outputs" / "older").resolve())
    assert f"cannot read checkpoint {broken}" in caplog.text


def test_a_stop_before_the_first_whole_epoch_writes_no_test_metrics(
    compose_cfg, tmp_path: Path, sigterm_at: dict
) -> None:
    sigterm_at["at"] = 2
    folder = tmp_path / "outputs" / "early"
    metrics = run(compose_cfg([*BASE, "trainer.max_epochs=2"]), folder)
    assert "test" not in metrics and "valid" not in metrics
    assert metrics["interrupted"]["signal"] == "SIGTERM"
    assert "nothing to resume" in metrics["interrupted"]["note"]
    assert not (folder / "checkpoints" / "last.pt").exists()  # the note is true


@pytest.mark.parametrize(
    ("method", "cut"),
    [(STE, "search epoch 2"), (IMP, "round 1 of task chunk")],
    ids=["sparse_ste", "sparse_imp"],
)
def test_a_stopped_search_resumes_to_the_uninterrupted_result(
    compose_cfg, tmp_path: Path, sigterm_at: dict, method: list[str], cut: str
) -> None:
    straight = run(compose_cfg([*BASE, *method]), tmp_path / "straight")
    total = sigterm_at["n"]
    per_epoch = 9  # 3 tasks x 3 steps on the small toy set
    # sparse_ste: warm-up epoch, search epoch 1, then 2 steps into search epoch 2.
    # sparse_imp: warm-up, pos rounds 0-2 (one task, 3 losses an epoch), chunk round 0, then 1.
    sigterm_at.update(n=0, at=2 * per_epoch + 5 if method is STE else per_epoch + 4 * 3 + 2)
    assert sigterm_at["at"] < total
    folder = tmp_path / "outputs" / "cut"
    stopped = run(compose_cfg([*BASE, *method]), folder)
    assert "test" not in stopped, cut
    assert "trainer.resume=true continues the search" in stopped["interrupted"]["note"]
    assert any((folder / "checkpoints" / "search").glob("phase_*.pt"))
    sigterm_at["at"] = None
    resumed = run(compose_cfg([*BASE, *method, "trainer.resume=true"]), tmp_path / "outputs" / "on")
    assert resumed["run"]["resumed_from_dir"] == str(folder.resolve())
    assert stable(resumed) == stable(straight)
    assert not (tmp_path / "outputs" / "on" / "checkpoints" / "search").exists()  # cleaned up


TREE = ["method=tree_search", "data=mnist3", "data.tasks=[mnist,fashion]", "data.valid_size=16"]
TREE += ["backbone=lenet_bn", "method.n_splits=1", "method.peel_epochs=2"]
TREE += ["method.max_stationary_epochs=1", "method.similarity_batches=1", "trainer.max_epochs=1"]


def test_a_stopped_tree_search_resumes_to_the_uninterrupted_result(
    compose_cfg, tmp_path: Path, sigterm_at: dict
) -> None:
    """Stopped while fine-tuning a peel: the peel phases replay and the tree is the same."""
    base = ["trainer.progress=false", "trainer.plots=false"]
    straight = run(compose_cfg([*base, *TREE]), tmp_path / "straight")
    total = sigterm_at["n"]
    sigterm_at.update(n=0, at=total // 2)  # inside the peels' fine-tuning
    folder = tmp_path / "outputs" / "cut"
    stopped = run(compose_cfg([*base, *TREE]), folder)
    assert "test" not in stopped
    assert "trainer.resume=true continues the search" in stopped["interrupted"]["note"]
    sigterm_at["at"] = None
    resumed = run(compose_cfg([*base, *TREE, "trainer.resume=true"]), tmp_path / "outputs" / "on")
    assert resumed["run"]["resumed_from_dir"] == str(folder.resolve())
    assert resumed["search"]["tree"]["paths"] == straight["search"]["tree"]["paths"]
    assert stable(resumed) == stable(straight)


def test_sparse_ste_states_its_phases_and_refuses_trainer_max_epochs(
    compose_cfg, tmp_path: Path
) -> None:
    metrics = run(compose_cfg([*BASE, *STE]), tmp_path / "ste")
    assert metrics["epochs"]["phases"] == {"warmup": 1, "search": 2, "train": 1}
    assert set(metrics["time"]["phases"]) == {"warmup", "search", "train"}
    assert all(s > 0 for s in metrics["time"]["phases"].values())
    cfg = compose_cfg([*BASE, *STE, "trainer.max_epochs=5"])
    with pytest.raises(ConfigError, match="`trainer.max_epochs` is not used by method=sparse_ste"):
        run(cfg, tmp_path / "refused", overrides=["method=sparse_ste", "trainer.max_epochs=5"])
    assert not (tmp_path / "refused").exists()


def test_the_sweep_objective_is_the_mean_primary_validation_metric() -> None:
    metrics = {
        "valid": {
            "pos": {"accuracy": 0.9},
            "ner": {"precision": 0.8, "f1": 0.5, "recall": 0.4},  # f1 is not listed first
        },
        "primary": {"pos": "accuracy", "ner": "f1"},
    }
    assert objective(metrics) == pytest.approx((0.9 + 0.5) / 2)
    assert objective({"valid": {}}) is None


def test_a_truncated_checkpoint_in_the_runs_own_folder_says_the_way_on(
    compose_cfg, tmp_path: Path
) -> None:
    """A run restarted into its folder whose last.pt is damaged cannot continue it: the error
    says what to delete, and after that the run trains again in that folder."""
    folder = tmp_path / "outputs" / "job"
    run(compose_cfg([*BASE, "trainer.max_epochs=2"]), folder)
    (folder / "metrics.json").unlink()  # killed hard after its checkpoint
    last = folder / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:100])
    again = [*BASE, "trainer.max_epochs=2", "trainer.resume=true"]
    with pytest.raises(ConfigError, match=rf"cannot read checkpoint .*delete {folder} and"):
        run(compose_cfg(again), folder)
    shutil.rmtree(folder)
    metrics = run(compose_cfg([*BASE, "trainer.max_epochs=2"]), folder)
    assert metrics["epochs"]["trained"] == 2 and metrics["run"]["resumed_from"] is None
