"""Seconds per training step of each gradient balancer against equal weighting, on the seed 001
image set-up (lenet_bn on mnist3) and the text set-up (cnn_bilstm on conll), same batches.

    python scripts/bench_balancers.py                           # generated data, CPU or the GPU
    MTLRUN_DATA=../shared/data python scripts/bench_balancers.py --data both --steps 100

Data: without MTLRUN_DATA, mnist3 reads tiny idx files written to a temporary folder (random
pixels: the cost of a step does not depend on them) and the text case uses data=toy. With
MTLRUN_DATA, the real files: mnist3 (data.missing_train=split_test when KMNIST lacks training
images) and conll when ``conll2003/`` is there, else toy.

Rows: equal, uncertainty, gradnorm (on=params, on=z), mgda (projection, frank_wolfe), mgda_ub,
hybrid in each of its phases (its MGDA phase is reached by two epoch ends without progress), then
every other balancer YAML under conf/balancer with its defaults (enrolled automatically).
Representation-gradient rows are refused on mnist3 (no shared input) and say so; a balancer
missing from this tree is skipped with a note. The Pareto-stationarity monitor is off
(``balancer.kkt_every=0``) wherever a balancer has that key. Goals (issue 5): mgda_ub at most
1.3x equal on cnn_bilstm; mgda (projection) at most 2x equal on lenet_bn.
A benchmark, not a test: it prints a markdown table and asserts nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import struct
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from mtlrun.config.source import compose_config
from mtlrun.config.validate import validate
from mtlrun.data.mnist3 import FOLDERS, MNIST3_TASKS, TEST_FILES, TRAIN_FILES
from mtlrun.errors import MtlrunError
from mtlrun.run import build
from mtlrun.training.device import pick_device
from mtlrun.training.loop import TrainSettings, train_epoch


@dataclass(frozen=True)
class Row:
    """One balancer setting to time; ``mgda_phase``: push hybrid into its MGDA phase first."""

    label: str
    overrides: tuple[str, ...]
    mgda_phase: bool = False


ROWS = (
    Row("equal", ("balancer=equal",)),
    Row("uncertainty", ("balancer=uncertainty",)),
    Row("gradnorm on=params", ("balancer=gradnorm", "balancer.on=params")),
    Row("gradnorm on=z", ("balancer=gradnorm", "balancer.on=z")),
    Row("mgda projection", ("balancer=mgda", "balancer.solver=projection")),
    Row("mgda frank_wolfe", ("balancer=mgda", "balancer.solver=frank_wolfe")),
    Row("mgda_ub", ("balancer=mgda_ub",)),
    Row("hybrid (gradnorm phase)", ("balancer=hybrid",)),
    Row("hybrid (mgda phase)", ("balancer=hybrid",), mgda_phase=True),
)
# Every other YAML of conf/balancer is enrolled as it is (one row each, its defaults).
CONF = Path(__file__).resolve().parents[1] / "conf" / "balancer"
_COVERED = {"equal", "uncertainty", "gradnorm", "mgda", "mgda_ub", "hybrid"}
ROWS += tuple(
    Row(p.stem, (f"balancer={p.stem}",)) for p in sorted(CONF.glob("*.yaml"))
    if p.stem not in _COVERED
)  # fmt: skip
# (backbone, row label) -> at most this many times equal's seconds per step.
GOALS = {("cnn_bilstm", "mgda_ub"): 1.3, ("lenet_bn", "mgda projection"): 2.0}


def write_tiny_mnist3(root: Path, n_train: int = 512, n_test: int = 128) -> Path:
    """Random 28x28 images and labels as torchvision's raw idx files for the three tasks."""
    g = torch.Generator().manual_seed(0)
    for task in MNIST3_TASKS:
        raw = root / FOLDERS[task] / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        for (images, labels), n in ((TRAIN_FILES, n_train), (TEST_FILES, n_test)):
            pixels = torch.randint(0, 256, (n, 28, 28), generator=g, dtype=torch.uint8)
            targets = (torch.arange(n) % 10).to(torch.uint8)
            header = struct.pack(">iiii", 2051, n, 28, 28)
            (raw / images).write_bytes(header + pixels.numpy().tobytes())
            (raw / labels).write_bytes(struct.pack(">ii", 2049, n) + targets.numpy().tobytes())
    return root


def data_setups(choice: str, tmp: Path) -> list[tuple[str, list[str], str]]:
    """(data label, overrides, note) for each requested set-up."""
    real = os.environ.get("MTLRUN_DATA")
    setups = []
    if choice in ("mnist3", "both"):
        if real and (Path(real) / "MNIST").is_dir():
            extra = []
            if not (Path(real) / "KMNIST" / "raw" / TRAIN_FILES[0]).is_file():
                extra = ["data.missing_train=split_test"]
            setups.append(("mnist3", ["data=mnist3", *extra], "real files under MTLRUN_DATA"))
        else:
            root = write_tiny_mnist3(tmp / "mnist3")
            overrides = ["data=mnist3", f"data.root={root}", "data.valid_size=64"]
            setups.append(("mnist3", overrides, "tiny generated idx files"))
    if choice in ("conll", "both"):
        if real and (Path(real) / "conll2003").is_dir():
            setups.append(("conll", ["data=conll"], "real files under MTLRUN_DATA"))
        else:
            setups.append(("toy", ["data=toy"], "toy text in place of conll (no MTLRUN_DATA)"))
    return setups


_DATA: dict[str, Any] = {}  # composed data config -> built data, shared by a set-up's rows


def build_parts(cfg: DictConfig, device: torch.device) -> tuple[Any, list, Any, Any, Any]:
    """As ``mtlrun.run.setup``, but each data set is built once (loading CoNLL takes seconds)."""
    key = OmegaConf.to_yaml(cfg.data, resolve=True)
    if key not in _DATA:
        _DATA[key] = build(cfg.data)
    data = _DATA[key]
    method = build(cfg.method)
    backbone = build(cfg.backbone, runtime={"input_spec": data.input_spec})
    torch.manual_seed(cfg.trainer.seed)
    model = method.build(backbone=backbone, tasks=data.tasks).to(device)
    balancer = build(cfg.balancer, tasks=[t.name for t in data.tasks])
    optimizer = build(cfg.optim)(model.weight_parameters())
    return data, data.tasks, model, balancer, optimizer


def time_row(
    cfg: DictConfig, row: Row, steps: int, warmup: int, repeats: int, device: torch.device
) -> float:
    """Median over ``repeats`` of the mean seconds per step of ``steps`` steps, after warm-up."""
    data, tasks, model, balancer, optimizer = build_parts(cfg, device)
    settings = TrainSettings(
        max_epochs=1, batch_size=cfg.trainer.batch_size, seed=cfg.trainer.seed, progress=False
    )

    def epoch(index: int, n: int) -> dict[str, float]:
        run = TrainSettings(**{**settings.__dict__, "steps_per_epoch": n})
        return train_epoch(model, data, balancer, optimizer, run, index, device)

    out = epoch(0, warmup)
    if row.mgda_phase:
        losses = {t.name: out[f"train/loss/{t.name}"] for t in tasks}
        balancer.epoch_end(0, losses)
        balancer.epoch_end(1, losses)  # no progress in an epoch: Algorithm 1 switches to MGDA
        if balancer.summary().get("switch_epoch") is None:
            raise MtlrunError("hybrid did not switch to its MGDA phase")
    seconds = []
    for k in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        epoch(k + 1, steps)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds.append((time.perf_counter() - start) / steps)
    return statistics.median(seconds)


def bench(
    base: list[str], row: Row, args: argparse.Namespace, device: torch.device
) -> tuple[float | None, str, DictConfig | None]:
    """Seconds per step of one row, or ``None`` and why it was skipped."""
    try:
        cfg = compose_config([*base, *row.overrides])
    except HydraException as err:
        return None, f"not in this tree: {str(err).splitlines()[0]}", None
    # The balancer's own key, or each phase's of a hybrid (balancer.first / balancer.then).
    off = [
        f"balancer.{path}kkt_every=0"
        for path, node in [("", cfg.balancer)]
        + [(f"{k}.", cfg.balancer[k]) for k in ("first", "then") if k in cfg.balancer]
        if isinstance(node, DictConfig) and "kkt_every" in node
    ]
    monitor = bool(off)
    if monitor:
        cfg = compose_config([*base, *row.overrides, *off])
    try:
        validate(cfg)
        sec = time_row(cfg, row, args.steps, args.warmup, args.repeats, device)
    except MtlrunError as err:
        return None, f"refused: {str(err).splitlines()[-1].strip(' -')}", cfg
    return sec, "" if monitor else "monitor key absent", cfg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="both", choices=["mnist3", "conll", "both"])
    parser.add_argument("--steps", type=int, default=50, help="timed steps per repeat")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--repeats", type=int, default=3, help="timed blocks (median taken)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the data's own")
    parser.add_argument(
        "--balancers",
        default=None,
        help="comma list of balancer names: only their rows (default: every row)",
    )
    args = parser.parse_args()
    device = pick_device(args.device)
    results: list[tuple[str, str, str, float | None, str]] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for data_label, overrides, note in data_setups(args.data, Path(tmp)):
            notes.append(f"{data_label}: {note}")
            base = [*overrides, "method=hard", f"trainer.device={args.device}"]
            base += ["trainer.progress=false", "trainer.plots=false"]
            if args.batch_size:
                base.append(f"trainer.batch_size={args.batch_size}")
            # equal runs first and again last: the first timed row also pays the device's warm-up
            # (clocks, cuDNN autotuning), so the faster of its two timings is the baseline.
            chosen = args.balancers.split(",") if args.balancers else None
            rows = [r for r in ROWS if chosen is None or r.overrides[0].split("=")[1] in chosen]
            for row in [*rows, dataclasses.replace(ROWS[0], label="equal (again, last)")]:
                sec, why, cfg = bench(base, row, args, device)
                backbone = _backbone(cfg) if cfg is not None else "?"
                results.append((data_label, backbone, row.label, sec, why))
                status = f"{1000 * sec:.2f} ms/step" if sec is not None else f"skipped ({why})"
                print(f"{data_label} {row.label}: {status}", flush=True)
    _print_table(results, notes, args, device)


def _backbone(cfg: DictConfig) -> str:
    target = str(cfg.backbone._target_)
    return {"LeNetBN": "lenet_bn", "CNNBiLSTM": "cnn_bilstm", "ResNet": "resnet"}.get(
        target.rsplit(".", 1)[-1], target.rsplit(".", 1)[-1]
    )


def _print_table(
    results: list[tuple[str, str, str, float | None, str]],
    notes: list[str],
    args: argparse.Namespace,
    device: torch.device,
) -> None:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"\nsteps {args.steps} x {args.repeats} (median), warm-up {args.warmup}, device {device} "
        f"({name}), torch {torch.__version__}, {torch.get_num_threads()} threads; "
        "Pareto-stationarity monitor off (balancer.kkt_every=0)\n"
    )
    print("× equal: against the faster of equal's two timings (first row and last row).\n")
    print("| data | backbone | balancer | s/step | × equal | goal | met? |")
    print("|---|---|---|---:|---:|---|---|")
    equal: dict[tuple[str, str], float] = {}
    for d, b, label, s, _ in results:
        if label.startswith("equal") and s:
            equal[(d, b)] = min(s, equal.get((d, b), s))
    reasons: list[str] = []  # why rows were skipped, numbered in the table
    for data, backbone, label, sec, why in results:
        goal = GOALS.get((backbone, label))
        base = equal.get((data, backbone))
        ratio = sec / base if sec is not None and base else None
        if sec is None:
            if why not in reasons:
                reasons.append(why)
            timing = f"skipped [{reasons.index(why) + 1}]"
        else:
            timing = f"{sec:.4f}"
        cells = [
            data,
            backbone,
            label + (f" ({why})" if why and sec is not None else ""),
            timing,
            f"{ratio:.2f}" if ratio is not None else "–",
            f"≤ {goal}x" if goal else "–",
            ("yes" if ratio <= goal else "no") if goal and ratio is not None else "–",
        ]
        print("| " + " | ".join(cells) + " |")
    print()
    for k, why in enumerate(reasons, 1):
        print(f"[{k}] {why}")
    print("\n".join(f"- {n}" for n in notes))


if __name__ == "__main__":
    main()
