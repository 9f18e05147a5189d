"""Milliseconds per training step of mtlrun against a plain PyTorch loop over the same model and
batches, for every sharing method of seed 000 Table 4.2 and the seed 001 image set-up (issue 11).

    python scripts/bench_speed.py --data toy --steps 10            # no data files needed
    MTLRUN_DATA=../shared/data OMP_NUM_THREADS=2 python scripts/bench_speed.py --device cpu --steps 30
    MTLRUN_DATA=../shared/data python scripts/bench_speed.py --device cuda --steps 200
    python scripts/bench_speed.py --rows hard,lenet_bn/mnist3 --repeats 3
    python scripts/bench_speed.py --rows hard,single --batching buckets   # length-bucketed batches

Rows: hard, single, soft, hierarchical (the ``dml_t42_<row>`` presets), sparse_ste search (π
sampled every step, straight-through, Adam on π) and fixed masks (θ ⊙ M_t, random masks at the
preset's keep ratio), all cnn_bilstm on ``--data conll`` (needs MTLRUN_DATA) or ``toy``; and
lenet_bn/mnist3 (``experiment=thesis_fig6``, hard sharing, equal weighting) on the real files
under MTLRUN_DATA (``data.missing_train=split_test`` when KMNIST lacks training images), else on
tiny generated idx files (random pixels; the step cost does not depend on them).

mtlrun column: ``train_epoch`` itself (the real training path: balancer=equal with the preset's
Pareto-stationarity monitor unless ``--kkt-every`` says otherwise, trainer.grad_clip as the
preset, progress bar off, ``backbone.lstm_kernel`` auto unless ``--kernel`` says otherwise).
Plain column: the loop a researcher would write, over the same model built from the same seed
(so the same parameters) with the textbook kernels (a ``pack_padded_sequence`` BiLSTM) and the
same batches: forward each task, sum of cross-entropies (plus the model's regulariser, soft sharing's L2 coupling), one
backward, clip_grad_norm_, optimiser step(s). Both run ``--steps`` steps after 5 warm-up steps,
interleaved, ``--repeats`` times; the faster block counts. Epoch seconds are ms/step times the
data's steps per epoch (extrapolated, not measured). A benchmark, not a test: it asserts nothing.

Peer rows: LibMTL (a separate environment, never a dependency of mtlrun; see
scripts/peer_libmtl.py) on the same lenet_bn/mnist3 set-up, EW against mtlrun's equal and MGDA
against mtlrun's mgda, when ``--peer-python PATH`` (or this interpreter) can import it.
``--peer-rounds R`` alternates the two sides R times (LibMTL's weightings, then mtlrun's same
balancers), so that a change of the machine's speed during the bench moves both sides; each side
keeps its fastest round, and the per-round ratios are printed beside.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from bench_balancers import write_tiny_mnist3
from omegaconf import DictConfig, OmegaConf

from mtlrun.config.source import compose_config
from mtlrun.data.mnist3 import TRAIN_FILES
from mtlrun.methods.sparse_ste import BernoulliMasks
from mtlrun.run import build, git_commit
from mtlrun.training.device import pick_device, to_device
from mtlrun.training.evaluate import task_loss
from mtlrun.training.loop import Phase, TrainSettings, train_epoch

WARMUP = 5


@dataclass(frozen=True)
class Row:
    """One set-up to time: its preset, method overrides and mode (dense, search, fixed)."""

    label: str
    overrides: tuple[str, ...]
    mode: str = "dense"
    images: bool = False


ROWS = (
    Row("hard", ("experiment=dml_t42_hard",)),
    Row("single", ("experiment=dml_t42_single",)),
    Row("soft", ("experiment=dml_t42_soft",)),
    Row("hierarchical", ("experiment=dml_t42_hierarchical",)),
    Row("sparse_ste search", ("experiment=dml_t42_sparse_ste",), mode="search"),
    Row("fixed masks", ("experiment=dml_t42_sparse_ste",), mode="fixed"),
    # mtlrun's earlier LeNet (6/16 channels, conv -> BN -> ReLU -> pool): the net the LibMTL peer
    # builds and the README's measured ratios used; the default is now the authors' 20/50 net.
    Row(
        "lenet_bn/mnist3",
        (
            "experiment=thesis_fig6",
            "balancer=equal",
            "backbone.layout=bn_relu_pool",
            "backbone.channels=[6,16]",
        ),
        images=True,
    ),
)


@dataclass
class Parts:
    """One trainable copy of a row: what ``train_epoch`` and the plain loop both need."""

    model: Any
    balancer: Any
    optimizer: torch.optim.Optimizer
    phase: Phase = field(default_factory=Phase)  # search: π's optimiser and clamp


Block = Callable[[Parts, Any, TrainSettings, int], None]


@dataclass
class Result:
    row: str
    batch: int
    steps_per_epoch: int
    mtlrun_s: float
    plain_s: float


_DATA: dict[str, Any] = {}  # composed data config -> built data (loading CoNLL takes seconds)


def data_of(cfg: DictConfig) -> Any:
    key = OmegaConf.to_yaml(cfg.data, resolve=True)
    if key not in _DATA:
        _DATA[key] = build(cfg.data)
    return _DATA[key]


def masks_for(model: Any, tasks: list[str], keep: float, seed: int) -> dict:
    """Random {0,1} masks at ``keep`` density over the model's maskable parameters (seeded)."""
    g = torch.Generator().manual_seed(seed)
    params = dict(model.blocks.named_parameters())
    return {
        t: {k: (torch.rand(params[k].shape, generator=g) < keep).float() for k in model.maskable}
        for t in tasks
    }


def make_parts(cfg: DictConfig, mode: str, device: torch.device) -> Parts:
    """Model, balancer and optimiser as ``mtlrun.run.setup`` builds them, in the row's mode."""
    data, method = data_of(cfg), build(cfg.method)
    backbone = build(cfg.backbone, runtime={"input_spec": data.input_spec})
    torch.manual_seed(cfg.trainer.seed)
    model = method.build(backbone=backbone, tasks=data.tasks).to(device)
    balancer = build(cfg.balancer, tasks=[t.name for t in data.tasks])
    parts = Parts(model, balancer, build(cfg.optim)(model.weight_parameters()))
    names = [t.name for t in data.tasks]
    if mode == "search":  # as SparseSTE.search after its warm-up (seed 000 Algorithm 1)
        params = dict(model.blocks.named_parameters())
        shapes = {t: {k: params[k].shape for k in model.maskable} for t in names}
        torch.manual_seed(cfg.trainer.seed + 1)
        sampler = BernoulliMasks(shapes, method.pi_init, method.pi_init_value).to(device)
        model.set_source(sampler.sample, lambda t: method.discretise(sampler, t), sampler)
        pi_opt = torch.optim.Adam(
            sampler.parameters(), lr=method.pi_lr, weight_decay=method.pi_weight_decay
        )
        parts.phase = Phase("search", extra_optimizers=[pi_opt], after_step=sampler.clamp_)
    elif mode == "fixed":
        masks = masks_for(model, names, method.keep_ratio, cfg.trainer.seed)
        model.set_masks({t: {k: m.to(device) for k, m in per.items()} for t, per in masks.items()})
    return parts


def mtlrun_block(parts: Parts, data: Any, settings: TrainSettings, epoch: int) -> None:
    """``settings.steps_per_epoch`` steps of mtlrun's own training loop."""
    p = parts
    train_epoch(p.model, data, p.balancer, p.optimizer, settings, epoch, device_of(p), p.phase)


def plain_block(parts: Parts, data: Any, settings: TrainSettings, epoch: int) -> None:
    """The reference loop: the same batches, forward, summed cross-entropy, backward, step."""
    model, device = parts.model, device_of(parts)
    optimizers = [parts.optimizer, *parts.phase.extra_optimizers]
    params = [p for p in model.weight_parameters() if p.requires_grad]
    model.train()
    batches = data.train_steps(settings.batch_size, epoch, settings.seed, settings.steps_per_epoch)
    for groups in batches:
        loss = torch.zeros((), device=device)
        for inputs, targets in groups:
            outputs = model(to_device(inputs, device), tasks=list(targets))
            for task, logits in outputs.items():
                loss = loss + task_loss(logits, targets[task].to(device))
        reg = model.regularizer()
        if reg is not None:
            loss = loss + reg
        loss.backward()
        if settings.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, settings.grad_clip)
        for opt in optimizers:
            opt.step()
            opt.zero_grad(set_to_none=True)
        if parts.phase.after_step is not None:
            parts.phase.after_step()


def reference(cfg: DictConfig) -> DictConfig:
    """The plain loop's model: the textbook kernels (a packed BiLSTM), same parameters."""
    if "lstm_kernel" not in cfg.backbone:
        return cfg
    out = cfg.copy()
    out.backbone.lstm_kernel = "packed"
    return out


def device_of(parts: Parts) -> torch.device:
    return next(parts.model.parameters()).device


def timed(block: Block, parts: Parts, data: Any, settings: TrainSettings, epoch: int) -> float:
    """Seconds per step of one block (the GPU's queue drained before and after)."""
    device = device_of(parts)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    block(parts, data, settings, epoch)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / (settings.steps_per_epoch or 1)


def time_row(cfg: DictConfig, row: Row, args: argparse.Namespace, device: torch.device) -> Result:
    """Faster of ``repeats`` interleaved blocks of mtlrun and the plain loop, seconds per step."""
    data = data_of(cfg)
    ours, plain = make_parts(cfg, row.mode, device), make_parts(reference(cfg), row.mode, device)
    base = TrainSettings(
        max_epochs=1,
        batch_size=cfg.trainer.batch_size,
        seed=cfg.trainer.seed,
        grad_clip=cfg.trainer.grad_clip,
        progress=False,
    )

    def steps(n: int) -> TrainSettings:
        return TrainSettings(**{**base.__dict__, "steps_per_epoch": n})

    mtlrun_block(ours, data, steps(WARMUP), 0)
    plain_block(plain, data, steps(WARMUP), 0)
    best_ours, best_plain = float("inf"), float("inf")
    for k in range(1, args.repeats + 1):  # epoch k: both see the same batches in a block
        best_ours = min(best_ours, timed(mtlrun_block, ours, data, steps(args.steps), k))
        best_plain = min(best_plain, timed(plain_block, plain, data, steps(args.steps), k))
    n = data.steps_per_epoch(base.batch_size)
    return Result(row.label, base.batch_size, n, best_ours, best_plain)


def row_overrides(row: Row, args: argparse.Namespace, tmp: Path) -> tuple[list[str], str]:
    """The row's overrides and a note on its data."""
    out = [*row.overrides, f"trainer.device={args.device}", "trainer.progress=false"]
    if args.batch:
        out.append(f"trainer.batch_size={args.batch}")
    if args.kkt_every is not None:
        out.append(f"balancer.kkt_every={args.kkt_every}")
    if not row.images:
        kernel = [f"backbone.lstm_kernel={args.kernel}"] if args.kernel else []
        batching = [f"data.batching={args.batching}"] if args.batching != "random" else []
        note = args.data + (f" ({args.batching})" if batching else "")
        return [*out, *kernel, f"data={args.data}", *batching], note
    real = os.environ.get("MTLRUN_DATA")
    if real and (Path(real) / "MNIST").is_dir():
        if not (Path(real) / "KMNIST" / "raw" / TRAIN_FILES[0]).is_file():
            return [*out, "data.missing_train=split_test"], "mnist3 (KMNIST train: split_test)"
        return out, "mnist3"
    root = tmp / "mnist3"
    if not root.is_dir():
        write_tiny_mnist3(root)
    return [*out, f"data.root={root}", "data.valid_size=64"], "mnist3 (tiny generated files)"


@dataclass(frozen=True)
class Goal:
    """A goal of issue 11 on one device type: ``value(results)`` against ``limit``."""

    text: str
    device: str
    rows: tuple[str, ...]
    value: Callable[[dict[str, Result]], float]
    limit: float
    at_least: bool = False


GOALS = (
    Goal("hard mtlrun step ≤ 4 ms", "cuda", ("hard",), lambda r: 1e3 * r["hard"].mtlrun_s, 4.0),
    Goal(
        "sparse_ste search step ≤ 2× hard",
        "cuda",
        ("hard", "sparse_ste search"),
        lambda r: r["sparse_ste search"].mtlrun_s / r["hard"].mtlrun_s,
        2.0,
    ),
    Goal(
        "fixed masks step ≤ 1.2× hard",
        "cuda",
        ("hard", "fixed masks"),
        lambda r: r["fixed masks"].mtlrun_s / r["hard"].mtlrun_s,
        1.2,
    ),
    Goal(
        "hard: plain/mtlrun ≥ 1.3 (2 cores)",
        "cpu",
        ("hard",),
        lambda r: r["hard"].plain_s / r["hard"].mtlrun_s,
        1.3,
        at_least=True,
    ),
    Goal(
        "lenet_bn/mnist3: plain/mtlrun ≥ 1.3 (2 cores)",
        "cpu",
        ("lenet_bn/mnist3",),
        lambda r: r["lenet_bn/mnist3"].plain_s / r["lenet_bn/mnist3"].mtlrun_s,
        1.3,
        at_least=True,
    ),
)


def goal_status(goal: Goal, results: dict[str, Result], device: torch.device) -> str:
    if goal.device != device.type:
        return f"not measured here (needs {goal.device})"
    if any(r not in results for r in goal.rows):
        return "not measured (row not selected)"
    value = goal.value(results)
    met = value >= goal.limit if goal.at_least else value <= goal.limit
    return f"{value:.2f}: {'met' if met else 'NOT met'}"


def print_header(args: argparse.Namespace, device: torch.device) -> None:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    kkt = args.kkt_every
    if kkt is None:
        kkt = f"{compose_config(['balancer=equal']).balancer.kkt_every} (the preset's)"
    print(
        f"device {device} ({name}), torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"data {args.data} (batching {args.batching}), commit {git_commit()}\n"
        f"{args.steps} timed steps x {args.repeats} repeats (faster kept), {WARMUP} warm-up "
        f"steps, mtlrun and plain interleaved; balancer=equal, kkt_every {kkt}; mtlrun's "
        f"lstm_kernel {args.kernel or 'auto (the default)'}, plain loop's packed\n"
    )


def print_table(results: list[Result], notes: dict[str, str]) -> None:
    print(
        "| row | data | batch | steps/epoch | mtlrun ms/step | plain ms/step | plain/mtlrun "
        "| mtlrun epoch s (extrap.) | plain epoch s (extrap.) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        cells = [
            r.row,
            notes[r.row],
            str(r.batch),
            str(r.steps_per_epoch),
            f"{1e3 * r.mtlrun_s:.2f}",
            f"{1e3 * r.plain_s:.2f}",
            f"{r.plain_s / r.mtlrun_s:.2f}",
            f"{r.mtlrun_s * r.steps_per_epoch:.1f}",
            f"{r.plain_s * r.steps_per_epoch:.1f}",
        ]
        print("| " + " | ".join(cells) + " |")
    print("\nplain/mtlrun > 1: mtlrun's step is faster than the plain loop's.")


def print_goals(results: list[Result], device: torch.device) -> None:
    by_row = {r.row: r for r in results}
    print("\nGoals of issue 11 (this device):\n")
    for goal in GOALS:
        print(f"- [{goal.device}] {goal.text}: {goal_status(goal, by_row, device)}")


PEER_GOAL = 0.67  # mtlrun's ms/step at most this times LibMTL's (issue 11): EW and MGDA
# LibMTL weighting -> mtlrun balancer (every one LibMTL has; `--peer-weightings` picks some).
PEER_ROWS = {
    "EW": "equal", "MGDA": "mgda", "UW": "uncertainty", "GradNorm": "gradnorm", "DWA": "dwa",
    "GLS": "gls", "RLW": "rlw", "PCGrad": "pcgrad", "GradVac": "gradvac",
    "GradDrop": "graddrop", "IMTL": "imtl", "CAGrad": "cagrad", "Nash_MTL": "nash_mtl",
    "MoCo": "moco", "Aligned_MTL": "aligned_mtl", "DB_MTL": "db_mtl", "STCH": "stch",
    "ExcessMTL": "excess_mtl", "FairGrad": "fairgrad", "FAMO": "famo", "MoDo": "modo",
    "SDMGrad": "sdmgrad", "UPGrad": "upgrad",
}  # fmt: skip
# Goals per weighting: ≤ PEER_GOAL where issue 11 set it, ≤ 1 (at most LibMTL's cost) elsewhere.
PEER_GOALS = {"EW": PEER_GOAL, "MGDA": PEER_GOAL}


def peer_python(args: argparse.Namespace) -> str | None:
    """The interpreter that can import LibMTL: ``--peer-python``, else this one if it can."""
    if args.peer_python:
        return str(args.peer_python)
    return sys.executable if importlib.util.find_spec("LibMTL") is not None else None


def run_peer(python: str, args: argparse.Namespace, device: torch.device, random: bool) -> list:
    """LibMTL's ms/step from scripts/peer_libmtl.py (run by ``python``), one dict per weighting."""
    script = Path(__file__).with_name("peer_libmtl.py")
    command = [python, str(script), "--device", device.type, "--steps", str(args.steps)]
    weightings = args.peer_weightings.split(",") if args.peer_weightings else ["EW", "MGDA"]
    command += ["--repeats", str(args.repeats), "--weighting", ",".join(weightings)]
    if random:
        command.append("--random")
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-3:]
        print(f"\nLibMTL peer failed (exit {done.returncode}): {' | '.join(tail)}")
        return []
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def peer_section(args: argparse.Namespace, device: torch.device, tmp: Path) -> None:
    """LibMTL against mtlrun on lenet_bn/mnist3 hard sharing, equal and MGDA (same batches)."""
    python = peer_python(args)
    if python is None:
        print(
            "\nLibMTL not importable (give its environment with --peer-python PATH): "
            "peer rows skipped"
        )
        return
    row = next(r for r in ROWS if r.images)
    base, note = row_overrides(row, args, tmp)
    # Rounds alternate the two sides (LibMTL's weightings, then mtlrun's same balancers), so a
    # change of the machine's speed during the bench moves both; each side keeps its fastest.
    peer_ms: dict[str, list[float]] = {}
    ours_ms: dict[str, list[float]] = {}
    peers: list = []
    for _ in range(args.peer_rounds):
        peers = run_peer(python, args, device, random="generated" in note)
        if not peers:
            return
        for peer in peers:
            balancer = PEER_ROWS[peer["weighting"]]
            cfg = compose_config([*base, f"balancer={balancer}"])
            if "kkt_every" in cfg.balancer:  # both sides without the Pareto-stationarity monitor
                cfg = compose_config([*base, f"balancer={balancer}", "balancer.kkt_every=0"])
            peer_ms.setdefault(peer["weighting"], []).append(peer["ms_per_step"])
            ours_ms.setdefault(peer["weighting"], []).append(
                1e3 * time_row(cfg, row, args, device).mtlrun_s
            )
    rounds = args.peer_rounds
    print(f"\nPeer: LibMTL {peers[0]['version']} ({python}), {note}, batch {peers[0]['batch']}")
    print(f"{rounds} round(s), each LibMTL then mtlrun; ms/step: each side's fastest round\n")
    spread = " | per-round ratios" if rounds > 1 else ""
    print(f"| weighting | LibMTL ms/step | mtlrun ms/step | mtlrun/LibMTL{spread} | goal | met? |")
    print("|---|---:|---:|---:" + ("|---" if rounds > 1 else "") + "|---|---|")
    for peer in peers:
        name, balancer = peer["weighting"], PEER_ROWS[peer["weighting"]]
        theirs, ours = min(peer_ms[name]), min(ours_ms[name])
        ratio = ours / theirs
        goal = PEER_GOALS.get(name, 1.0)
        met = "met" if ratio <= goal else "NOT met"
        extra = " (3 batches per step)" if peer.get("batches_per_step", 1) > 1 else ""
        per_round = [o / t for o, t in zip(ours_ms[name], peer_ms[name], strict=True)]
        column = f" | {' '.join(f'{r:.2f}' for r in per_round)}" if rounds > 1 else ""
        print(
            f"| {name}{extra} (mtlrun balancer={balancer}) "
            f"| {theirs:.2f} | {ours:.2f} | {ratio:.2f}{column} | ≤ {goal} | {met} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default_data = "conll" if os.environ.get("MTLRUN_DATA") else "toy"
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--steps", type=int, default=50, help="timed steps per block")
    parser.add_argument("--repeats", type=int, default=2, help="timed blocks (faster kept)")
    parser.add_argument("--data", default=default_data, choices=["conll", "toy"])
    parser.add_argument("--rows", default=None, help="comma list of row labels (default all)")
    parser.add_argument("--batch", type=int, default=None, help="default: each preset's own")
    parser.add_argument("--kkt-every", type=int, default=None, help="default: the preset's")
    parser.add_argument(
        "--kernel",
        default=None,
        choices=["auto", "padded", "packed"],
        help="mtlrun's backbone.lstm_kernel (default: the config's, auto); the plain loop "
        "always runs the textbook packed BiLSTM",
    )
    parser.add_argument(
        "--batching",
        default="random",
        choices=["random", "buckets"],
        help="data.batching of the text rows, for mtlrun and the plain loop alike (buckets: "
        "length-bucketed batches, less padding)",
    )
    parser.add_argument(
        "--peer-python",
        type=Path,
        default=None,
        help="python of a separate environment with LibMTL (scripts/peer_libmtl.py's docstring)",
    )
    parser.add_argument("--no-peer", action="store_true", help="skip the LibMTL rows")
    parser.add_argument(
        "--peer-rounds",
        type=int,
        default=1,
        help="alternate LibMTL and mtlrun this many times (each side keeps its fastest round)",
    )
    parser.add_argument(
        "--peer-weightings",
        default=None,
        help="comma list of LibMTL weightings to time against mtlrun (default EW,MGDA; "
        f"any of {', '.join(PEER_ROWS)})",
    )
    args = parser.parse_args()
    device = pick_device(args.device)
    wanted = [s.strip() for s in args.rows.split(",")] if args.rows else [r.label for r in ROWS]
    unknown = sorted(set(wanted) - {r.label for r in ROWS})
    if unknown:
        parser.error(f"unknown rows {unknown}; rows: {', '.join(r.label for r in ROWS)}")
    print_header(args, device)
    results, notes = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for row in (r for r in ROWS if r.label in wanted):
            overrides, notes[row.label] = row_overrides(row, args, Path(tmp))
            result = time_row(compose_config(overrides), row, args, device)
            results.append(result)
            print(
                f"{row.label}: mtlrun {1e3 * result.mtlrun_s:.2f} ms/step, "
                f"plain {1e3 * result.plain_s:.2f} ms/step",
                flush=True,
            )
        print()
        print_table(results, notes)
        print_goals(results, device)
        if not args.no_peer:
            peer_section(args, device, Path(tmp))


if __name__ == "__main__":
    main()
