"""Wall time of a keep-ratio sweep that searches once (trainer.search_cache) against the same
levels run as independent runs that each search (trainer.search_cache=null).

    MTLRUN_DATA=../shared/data python scripts/bench_search_reuse.py
    python scripts/bench_search_reuse.py --data toy --methods sparse_ste --levels 0.1,0.5,0.9

Both variants run the levels one after another (Hydra's basic launcher) with the same threads,
on reduced CoNLL-2003 (``--limit-train`` sentences, the tiny search of the reduced reproduce
scripts) or on the generated toy set. The table gives each variant's total wall time, the
summed search seconds the jobs report (``time.search_s``), how many search phases the sweep
loaded instead of training (``search.reused_from``), and the speed-up. It also checks that both
variants give every level the same test scores (the reuse changes no result). A benchmark: it
asserts nothing.
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

METHODS = {
    "sparse_ste": [
        "method.warmup_epochs=1", "method.search_epochs=3",
        "method.finetune_epochs=1",
    ],
    "sparse_imp": [
        "method.warmup_epochs=1", "method.rounds=8", "method.final_density=0.1",
        "method.prune_epochs=1", "trainer.max_epochs=1",
    ],
}  # fmt: skip


def data_args(method: str, args: argparse.Namespace) -> list[str]:
    """Toy: the method on generated data; CoNLL: its Table 4.2 preset, data cut."""
    if args.data == "toy":
        return [f"method={method}", "data=toy", f"data.n_train={args.limit_train}"]
    return [
        f"experiment=dml_t42_{method}", f"data.limit_train={args.limit_train}",
        f"data.limit_eval={args.limit_eval}",
    ]  # fmt: skip


def sweep(method: str, cached: bool, args: argparse.Namespace, root: Path) -> dict[str, object]:
    name = f"{method}_{'once' if cached else 'independent'}"
    out = root / name
    cache = (
        f"trainer.search_cache={root / 'cache' / name}" if cached else "trainer.search_cache=null"
    )
    command = [
        sys.executable, "-m", "mtlrun", "-m", f"hydra.sweep.dir={out}", *data_args(method, args),
        *METHODS[method], f"method.keep_ratio={args.levels}", cache,
        f"trainer.threads={args.threads}", "trainer.progress=false", "trainer.plots=false",
        "trainer.save_predictions=false",
    ]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=os.environ)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        print(f"{name}: exit {done.returncode}\n{done.stderr[-1500:]}", file=sys.stderr)
    runs = {}
    for path in out.glob("*/metrics.json"):
        m = json.loads(path.read_text())
        runs[m["config"]["method_args"]["keep_ratio"]] = m
    loaded = sum(
        len(m.get("search", {}).get("reused_from", {}).get("phases", [])) for m in runs.values()
    )
    return {
        "wall": wall,
        "search": sum(m["time"]["search_s"] or 0.0 for m in runs.values()),
        "loaded": loaded,
        "done": len(runs),
        "test": {k: m["test"] for k, m in runs.items()},
        "jobs": {
            k: (
                m["time"]["search_s"] or 0.0,
                len(m.get("search", {}).get("reused_from", {}).get("phases", [])),
            )
            for k, m in sorted(runs.items())
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="sparse_ste,sparse_imp")
    parser.add_argument("--levels", default="0.1,0.3,0.5,0.7,0.9")
    parser.add_argument("--data", choices=["conll", "toy"], default="conll")
    parser.add_argument("--limit-train", type=int, default=500)
    parser.add_argument("--limit-eval", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.data == "conll" and not os.environ.get("MTLRUN_DATA"):
        parser.error("--data conll needs MTLRUN_DATA (or use --data toy)")
    levels = len(args.levels.split(","))
    print(f"{levels} keep ratios ({args.levels}), {args.data}, {args.threads} thread(s)\n")
    print(
        "| method | variant | jobs | wall s | search s (summed) | phases loaded | speed-up | same scores |"
    )
    print("|---|---|---|---|---|---|---|---|")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods.split(","):
            alone = sweep(method, False, args, Path(tmp))
            once = sweep(method, True, args, Path(tmp))
            same = "yes" if alone["test"] == once["test"] else "NO"
            results.append((method, alone, once))
            for variant, r, speed in (
                ("independent", alone, "1.00"),
                ("search once", once, f"{alone['wall'] / once['wall']:.2f}"),  # type: ignore[operator]
            ):
                print(
                    f"| {method} | {variant} | {r['done']} | {r['wall']:.0f} | {r['search']:.0f} "
                    f"| {r['loaded']} | {speed} | {same if variant != 'independent' else ''} |"
                )
    per_job(results)


def per_job(results: list) -> None:
    """Search seconds of each level, independent against shared (phases it loaded)."""
    print(
        "\n| method | keep ratio | search s, independent | search s, search once | phases loaded |"
    )
    print("|---|---|---|---|---|")
    for method, alone, once in results:
        for ratio, (seconds, _) in alone["jobs"].items():
            shared, loaded = once["jobs"].get(ratio, (float("nan"), 0))
            print(f"| {method} | {ratio:g} | {seconds:.0f} | {shared:.0f} | {loaded} |")


if __name__ == "__main__":
    main()
