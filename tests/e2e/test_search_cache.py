"""Search once, discretise many times (trainer.search_cache): runs that differ only in what their
search never reads share one search, and get exactly what a fresh search would give them."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import torch

from mtlrun.run import run
from mtlrun.training import checkpoint
from mtlrun.training.search_cache import SearchCache
from tests.conftest import TINY_TEXT, TOY_SMALL
from tests.e2e.test_sweeps import mtlrun, needs, results

BASE = [*TINY_TEXT, *TOY_SMALL, "trainer.progress=false", "trainer.plots=false", "optim.lr=0.5"]
STE = ["method=sparse_ste", "method.warmup_epochs=1", "method.search_epochs=2"]
STE += ["method.finetune_epochs=1"]
IMP = ["method=sparse_imp", "method.warmup_epochs=1", "method.rounds=4", "method.prune_epochs=1"]
IMP += ["method.final_density=0.1", "trainer.max_epochs=1"]
VOLATILE = ("time", "run", "search")


def stable(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in VOLATILE}


def masks(folder: Path) -> dict[str, dict[str, torch.Tensor]]:
    return torch.load(folder / "masks.pt")


def same_masks(a: Path, b: Path) -> bool:
    ma, mb = masks(a), masks(b)
    return ma.keys() == mb.keys() and all(
        ma[t].keys() == mb[t].keys() and all(torch.equal(ma[t][k], mb[t][k]) for k in ma[t])
        for t in ma
    )


def entries(cache: Path) -> list[Path]:
    return sorted(p for p in cache.iterdir() if p.is_dir()) if cache.is_dir() else []


def phase_files(cache: Path) -> list[str]:
    return sorted(p.name for e in entries(cache) for p in (e / "phases").iterdir())


def test_two_runs_differing_only_in_keep_ratio_search_once_and_match_a_fresh_search(
    compose_cfg, tmp_path: Path, own_search_cache: Path
) -> None:
    first = run(compose_cfg([*BASE, *STE, "method.keep_ratio=0.3"]), tmp_path / "k03")
    assert "reused_from" not in first.get("search", {})
    assert phase_files(own_search_cache) == ["search.pt", "warmup.pt"]
    second = run(compose_cfg([*BASE, *STE, "method.keep_ratio=0.7"]), tmp_path / "k07")
    reused = second["search"]["reused_from"]
    assert reused["phases"] == ["warmup", "search"]
    assert reused["runs"] == [str(tmp_path / "k03")]
    assert len(entries(own_search_cache)) == 1  # nothing new was searched
    # the discretisation is the second run's own: 70 % of the entries per task
    assert second["masks"]["density"] == pytest.approx(
        {t: 0.7 for t in ("pos", "chunk", "ner")}, abs=0.01
    )
    # and everything equals a run that searched for itself
    fresh = run(
        compose_cfg([*BASE, *STE, "method.keep_ratio=0.7", "trainer.search_cache=null"]),
        tmp_path / "fresh",
    )
    assert same_masks(tmp_path / "k07", tmp_path / "fresh")
    assert stable(second) == stable(fresh)
    history = (tmp_path / "k07" / "history.csv").read_text().splitlines()
    assert len(history) == len((tmp_path / "fresh" / "history.csv").read_text().splitlines())


@pytest.mark.parametrize(
    "change",
    ["trainer.seed=1", "optim.lr=0.4", "data.n_train=36", "method.search_epochs=1"],
)
def test_a_changed_input_of_the_search_searches_again(
    compose_cfg, tmp_path: Path, own_search_cache: Path, change: str
) -> None:
    run(compose_cfg([*BASE, *STE]), tmp_path / "a")
    other = run(compose_cfg([*BASE, *STE, "method.keep_ratio=0.3", change]), tmp_path / "b")
    assert "reused_from" not in other.get("search", {})
    assert len(entries(own_search_cache)) == 2


def test_imp_runs_for_two_densities_share_their_rounds_and_match_fresh_searches(
    compose_cfg, tmp_path: Path, own_search_cache: Path
) -> None:
    # 4 rounds down to 0.1: scheduled densities 1, .56, .32, .18, .1; keep 0.56 stops at round 1,
    # keep 0.18 at round 3: it loads the warm-up and round 0 of every task and trains the rest.
    shallow = run(compose_cfg([*BASE, *IMP, "method.keep_ratio=0.56"]), tmp_path / "shallow")
    assert "reused_from" not in shallow.get("search", {})
    deep = run(compose_cfg([*BASE, *IMP, "method.keep_ratio=0.18"]), tmp_path / "deep")
    reused = deep["search"]["reused_from"]["phases"]
    assert reused == ["warmup", "imp/pos/round0", "imp/chunk/round0", "imp/ner/round0"]
    fresh = run(
        compose_cfg([*BASE, *IMP, "method.keep_ratio=0.18", "trainer.search_cache=null"]),
        tmp_path / "fresh",
    )
    assert same_masks(tmp_path / "deep", tmp_path / "fresh")
    assert stable(deep) == stable(fresh)
    # the shallow run again: every round it needs is stored now, and it ends as it did
    again = run(compose_cfg([*BASE, *IMP, "method.keep_ratio=0.56"]), tmp_path / "again")
    assert len(again["search"]["reused_from"]["phases"]) == 4
    assert stable(again) == stable(shallow)


def test_a_stopped_search_stores_only_its_finished_phases(
    compose_cfg, tmp_path: Path, own_search_cache: Path, sigterm_at: dict
) -> None:
    per_epoch = 9  # 3 tasks x 3 steps on the small toy set
    sigterm_at["at"] = per_epoch + 5  # inside the first search epoch, after the warm-up
    stopped = run(compose_cfg([*BASE, *STE]), tmp_path / "cut")
    assert "test" not in stopped and stopped["interrupted"]["signal"] == "SIGTERM"
    stored = [p.name for e in entries(own_search_cache) for p in (e / "phases").iterdir()]
    assert stored == ["warmup.pt"]  # no file of the cut phase, not even a temporary one
    sigterm_at["at"] = None
    later = run(compose_cfg([*BASE, *STE]), tmp_path / "later")
    assert later["search"]["reused_from"]["phases"] == ["warmup"]
    assert phase_files(own_search_cache) == ["search.pt", "warmup.pt"]


def test_a_damaged_phase_file_is_trained_again(
    compose_cfg, tmp_path: Path, own_search_cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run(compose_cfg([*BASE, *STE]), tmp_path / "a")
    (search,) = [e / "phases" / "search.pt" for e in entries(own_search_cache)]
    search.write_bytes(search.read_bytes()[:200])
    b = run(compose_cfg([*BASE, *STE, "method.keep_ratio=0.3"]), tmp_path / "b")
    assert b["search"]["reused_from"]["phases"] == ["warmup"]
    assert "search cache: ignoring" in caplog.text
    assert checkpoint.load(search)["name"] == "search"  # stored again, whole


def test_the_lock_makes_a_second_searcher_wait(tmp_path: Path) -> None:
    material = {"config": {"a": 1}}
    first = SearchCache(tmp_path, material, tmp_path / "r1")
    second = SearchCache(tmp_path, material, tmp_path / "r2")
    order: list[str] = []
    entered = threading.Event()

    def wait_for_lock() -> None:
        entered.set()
        with second.locked():
            order.append("second")

    with first.locked():
        waiter = threading.Thread(target=wait_for_lock)
        waiter.start()
        entered.wait()
        waiter.join(timeout=0.5)
        assert waiter.is_alive()  # blocked while the first holds the entry
        order.append("first")
    waiter.join(timeout=10)
    assert order == ["first", "second"]


def test_an_unwritable_cache_folder_is_one_error_naming_the_key(
    compose_cfg, tmp_path: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    from mtlrun.errors import ConfigError

    with pytest.raises(ConfigError, match="trainer.search_cache"):
        run(compose_cfg([*BASE, *STE, f"trainer.search_cache={blocker}/cache"]), tmp_path / "r")


def test_a_parallel_keep_ratio_sweep_searches_once(tmp_path: Path) -> None:
    needs("hydra_plugins.hydra_joblib_launcher")
    out = tmp_path / "sweep"
    done = mtlrun(
        "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={out}",
        *BASE, *STE, "method.keep_ratio=0.3,0.7", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    runs = results(out)
    assert len(runs) == 2
    reused = [m.get("search", {}).get("reused_from") for m in runs.values()]
    assert sorted(r is None for r in reused) == [False, True]  # one searched, one waited
    (used,) = [r for r in reused if r is not None]
    assert used["phases"] == ["warmup", "search"]
    entry = Path(used["entry"])
    assert json.loads((entry / "key.json").read_text())["config"]["trainer.seed"] == 0
