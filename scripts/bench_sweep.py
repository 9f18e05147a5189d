"""Wall time of one toy sweep run one job after another and as parallel jobs on one box.

    python scripts/bench_sweep.py                       # 12 jobs, the three variants below
    python scripts/bench_sweep.py --jobs 4 --n-train 500 --variants sequential,joblib2

Variants: ``sequential`` (Hydra's basic launcher, torch's default threads), ``joblib2`` (the
joblib launcher, 2 jobs at once, each taking its share of the cores: trainer.threads left at
its default) and ``joblib2_all_threads`` (the same with trainer.threads = every core, i.e. what
two jobs with torch's default threads do to each other). The jobs are ``trainer.seed=0..N-1`` of
``mtlrun`` on the generated toy set (``--n-train`` sentences, ``--epochs`` epochs). The table
gives the sweep's wall time, the mean of the jobs' training seconds (``metrics.json``
``time.train_s``) and the speed-up against sequential. A benchmark: it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = {
    "sequential": [],
    "joblib2": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
    "joblib2_all_threads": [
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        f"trainer.threads={len(os.sched_getaffinity(0))}",
    ],
}


def run_variant(name: str, args: argparse.Namespace, root: Path) -> dict[str, float]:
    out = root / name
    seeds = ",".join(str(k) for k in range(args.jobs))
    command = [
        sys.executable, "-m", "mtlrun", "-m", *VARIANTS[name], f"hydra.sweep.dir={out}",
        f"trainer.seed={seeds}", f"trainer.max_epochs={args.epochs}",
        f"data.n_train={args.n_train}", "trainer.progress=false", "trainer.plots=false",
        "trainer.save_predictions=false",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        print(f"{name}: exit {done.returncode}\n{done.stderr[-1500:]}", file=sys.stderr)
    metrics = [json.loads(p.read_text()) for p in out.glob("*/metrics.json")]
    train = [m["time"]["train_s"] for m in metrics]
    threads = sorted({m["run"].get("threads") for m in metrics})
    return {
        "wall": wall,
        "train": sum(train) / len(train) if train else float("nan"),
        "done": len(metrics),
        "threads": threads[0] if len(threads) == 1 else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--n-train", type=int, default=2000)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    names = [v.strip() for v in args.variants.split(",")]
    cores = len(os.sched_getaffinity(0))
    print(
        f"{args.jobs} toy jobs ({args.n_train} training sentences, {args.epochs} epoch(s)) "
        f"on {cores} cores\n"
    )
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            rows[name] = run_variant(name, args, Path(tmp))
            print(f"{name}: {rows[name]['wall']:.1f} s", flush=True)
    base = rows.get("sequential", {}).get("wall")
    print(
        "\n| variant | jobs done | threads per job | sweep wall s | mean job train s | speed-up |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        speedup = f"{base / r['wall']:.2f}" if base else "–"
        print(
            f"| {name} | {r['done']}/{args.jobs} | {r['threads']} | {r['wall']:.1f} "
            f"| {r['train']:.1f} | {speedup} |"
        )


if __name__ == "__main__":
    main()
