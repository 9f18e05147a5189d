"""Milliseconds per training step of LibMTL (a public MTL library) on mtlrun's lenet_bn/mnist3
hard-sharing set-up: the peer column of ``scripts/bench_speed.py``.

What it measures. LibMTL's own per-iteration code path, as ``LibMTL.Trainer.train`` runs it in
``multi_input`` mode: for each task ``Trainer._process_data`` (batch to the device), the model's
forward for that task, ``Trainer.process_preds``, ``Trainer._compute_loss`` (LibMTL's CELoss,
which also records ``loss.item()``) and ``meter.update`` (accuracy, ``.item()``); then
``optimizer.zero_grad()``, ``model.backward(losses, **weight_args)`` (the weighting's backward:
EW or MGDA) and ``optimizer.step()``. ``Trainer.train`` itself cannot be timed step by step (its
loop body is not a method, and every epoch ends in ``test``), so :func:`libmtl_step` calls those
same methods in the loop body's order; ``--check`` shows that a few such steps leave the model
bit-for-bit where ``Trainer.train`` leaves it from the same start and batches.

Set-up (mtlrun ``experiment=thesis_fig6``): tasks mnist, fashion, kmnist, each with its own
batch of ``--batch`` 1x28x28 images per step, scaled as mtlrun does (uint8 / 127.5 - 1, in
[-1, 1]); encoder = trimmed LeNet+BN (Conv2d(1, 6, 5, padding=2), BN, ReLU, MaxPool2; Conv2d(6,
16, 5), BN, ReLU, MaxPool2) shared by all tasks (LibMTL architecture HPS); heads Flatten ->
Linear(400, 10); SGD lr 1e-3, momentum 0.9, Nesterov. Images are the idx files under
``<root>/{MNIST,FashionMNIST,KMNIST}/raw/`` (train files, else t10k: KMNIST has no train
images in shared/data), or random tensors with ``--random`` (on a CPU random pixels step
slower than real ones, so bench_speed.py passes ``--random`` only when mtlrun's row uses
generated files too). ``--steps`` timed steps follow 5 warm-up steps; the weightings' blocks
are interleaved ``--repeats`` times and the faster block counts. CUDA is synchronised around timed blocks; torch
threads follow OMP_NUM_THREADS when set. Output: one JSON line per weighting on stdout, human
lines (and LibMTL's own prints) on stderr.

Separate environment. LibMTL is a peer, never a dependency of mtlrun, and this script does not
import mtlrun. LibMTL 1.1.5 (PyPI's latest) pins nothing useful for torch 2.x, so install it
without its dependencies:

    python3 -m venv peer && peer/bin/pip install torch torchvision
    peer/bin/pip install --no-deps LibMTL && peer/bin/pip install numpy scipy
    OMP_NUM_THREADS=2 MTLRUN_DATA=../shared/data peer/bin/python scripts/peer_libmtl.py \
        --device cpu --steps 30

(scipy: ``LibMTL.weighting`` imports CAGrad, which needs it.) bench_speed.py runs this file
with the interpreter given by ``--peer-python PATH`` and reads the JSON lines.

Compatibility shims (LibMTL 1.1.5 predates torch 2; nothing here changes what a step computes):
``torchvision.models.utils`` (gone from torchvision) is aliased to ``torch.hub`` for LibMTL's
import of pretrained-ResNet loading, never called here; ``Trainer`` hard-codes ``cuda:0``, so
:func:`build_trainer` sets the device before the model is built; ``_process_data`` calls the
Python 2 iterator method ``.next()``, so batches come from :class:`Batches`, whose iterator has
it; ``zero_grad_share_params`` zeroes the shared gradients in place (torch 1.x
``zero_grad()``), because with torch 2's ``set_to_none`` default MGDA's ``_reset_grad`` fails on
``param.grad is None``.

Differences from mtlrun's step that matter when reading the two columns:
- EW sums the task losses with weight 1 (its docstring says 1/T; the code sums), as mtlrun's
  balancer=equal does. mtlrun's equal also checks Pareto-stationarity on one step in 10 (per-task
  gradients and a min-norm solve), which LibMTL does not do.
- MGDA (``mgda_gn='none'``, no loss rescaling, as mtlrun's ``normalize=none``): LibMTL solves one
  min-norm problem over all shared parameters concatenated (conv1 and conv2 together), with Sener
  & Koltun's Frank-Wolfe-style solver in float32 (stop at an L1 change < 1e-5; its 250-iteration
  cap never fires because the counter is never incremented). mtlrun solves one problem per shared
  block (conv1, conv2), in float64, with its ``projection`` solver (at most 250 iterations),
  and records Pareto-stationarity every step. LibMTL gets per-task gradients with one
  ``backward`` per task (graph retained), copying each into a CPU vector and then onto the device;
  mtlrun uses ``torch.autograd.grad``. Both give each head its own task's unweighted gradient.
- mtlrun clips the global gradient norm at 5 (trainer.grad_clip) before the optimiser step;
  LibMTL does not clip.
- LibMTL syncs with the host every step (``loss.item()`` and an accuracy ``.item()`` per task;
  MGDA also reads each loss), which costs on CUDA; mtlrun keeps running losses on the device.
- Batches: both move a CPU batch per task to the device each step; here they are pre-sliced
  (no DataLoader), like mtlrun's index slices.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import sys
import time
import types
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

TASKS = {"mnist": "MNIST", "fashion": "FashionMNIST", "kmnist": "KMNIST"}
WEIGHTINGS = ("EW", "MGDA")
N_CLASSES = 10
IMAGE_SIZE = 28
WARMUP = 5

Batch = tuple[Tensor, Tensor]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def import_libmtl() -> types.ModuleType:
    """``import LibMTL`` after aliasing the removed ``torchvision.models.utils`` to torch.hub."""
    try:
        import torchvision.models.utils  # noqa: F401
    except ImportError:
        shim = types.ModuleType("torchvision.models.utils")
        shim.__dict__.update(load_state_dict_from_url=torch.hub.load_state_dict_from_url)
        sys.modules["torchvision.models.utils"] = shim
    import LibMTL

    return LibMTL


# ---------------------------------------------------------------------- model


def conv_block(in_channels: int, out_channels: int, padding: int) -> nn.Sequential:
    """Conv2d(kernel 5) -> BatchNorm2d -> ReLU -> MaxPool2d(2), as mtlrun's lenet_bn block."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 5, padding=padding),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )


class LeNetBNEncoder(nn.Module):
    """The shared trunk: (B, 1, 28, 28) -> (B, 6, 14, 14) -> (B, 16, 5, 5)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = conv_block(1, 6, padding=2)
        self.conv2 = conv_block(6, 16, padding=0)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(self.conv1(x))


def make_decoders() -> nn.ModuleDict:
    """One Flatten -> Linear(400, 10) head per task."""
    return nn.ModuleDict(
        {t: nn.Sequential(nn.Flatten(), nn.Linear(16 * 5 * 5, N_CLASSES)) for t in TASKS}
    )


def build_trainer(libmtl: types.ModuleType, weighting: str, device: torch.device) -> Any:
    """A ``LibMTL.Trainer`` (HPS, multi_input, SGD lr 1e-3 Nesterov 0.9) on ``device``."""
    from LibMTL.loss import CELoss
    from LibMTL.metrics import AccMetric

    trainer_base: Any = libmtl.Trainer
    hps_base: Any = libmtl.architecture.HPS

    class PeerTrainer(trainer_base):
        def _prepare_model(self, *args: Any) -> None:
            self.device = device  # Trainer.__init__ hard-codes cuda:0 just before this call
            super()._prepare_model(*args)

    class HPS(hps_base):
        def zero_grad_share_params(self) -> None:
            self.encoder.zero_grad(set_to_none=False)  # torch 1.x semantics LibMTL relies on

    task_dict = {
        t: {"metrics": ["Acc"], "metrics_fn": AccMetric(), "loss_fn": CELoss(), "weight": [1]}
        for t in TASKS
    }
    with contextlib.redirect_stdout(sys.stderr):  # LibMTL prints parameter counts, log format
        return PeerTrainer(
            task_dict=task_dict,
            weighting=getattr(libmtl.weighting, weighting),
            architecture=HPS,
            encoder_class=LeNetBNEncoder,
            decoders=make_decoders(),
            rep_grad=False,
            multi_input=True,
            optim_param={"optim": "sgd", "lr": 1e-3, "momentum": 0.9, "nesterov": True},
            scheduler_param=None,
            weight_args={"mgda_gn": "none"} if weighting == "MGDA" else {},
            arch_args={},
        )


# ---------------------------------------------------------------------- data


def to_float(images: Tensor) -> Tensor:
    """uint8 (N, H, W) -> float (N, 1, H, W) in [-1, 1], as mtlrun.data.images does."""
    return (images.float().unsqueeze(1) / 127.5) - 1.0


def read_task(root: Path, folder: str) -> tuple[Tensor, Tensor, str]:
    """Images (uint8) and labels of ``<root>/<folder>/raw``: train files, else t10k."""
    from torchvision.datasets.mnist import read_image_file, read_label_file

    raw = root / folder / "raw"
    for prefix in ("train", "t10k"):
        images, labels = raw / f"{prefix}-images-idx3-ubyte", raw / f"{prefix}-labels-idx1-ubyte"
        if images.is_file() and labels.is_file():
            return read_image_file(str(images)), read_label_file(str(labels)), prefix
    raise FileNotFoundError(f"no train or t10k images+labels idx files under {raw}")


def draw_batches(x: Tensor, y: Tensor, batch: int, count: int, gen: torch.Generator) -> list[Batch]:
    """``count`` batches from shuffled passes over (x, y), sliced ahead of time (CPU)."""
    passes = -(-count * batch // len(y))
    order = torch.cat([torch.randperm(len(y), generator=gen) for _ in range(passes)])
    return [
        (x[order[k * batch : (k + 1) * batch]], y[order[k * batch : (k + 1) * batch]])
        for k in range(count)
    ]


def make_pools(
    root: str | None, random_data: bool, batch: int, count: int, seed: int
) -> tuple[dict[str, list[Batch]], str]:
    """Per-task batch pools and a word for the data used (real or random)."""
    gen = torch.Generator().manual_seed(seed)
    pools: dict[str, list[Batch]] = {}
    if random_data or not root:
        if not random_data:
            log("no --root / MTLRUN_DATA: random images (the step cost does not depend on them)")
        for t in TASKS:
            x = torch.rand(count * batch, 1, IMAGE_SIZE, IMAGE_SIZE, generator=gen) * 2 - 1
            y = torch.randint(0, N_CLASSES, (count * batch,), generator=gen)
            pools[t] = draw_batches(x, y, batch, count, gen)
        return pools, "random"
    for t, folder in TASKS.items():
        images, labels, prefix = read_task(Path(root), folder)
        log(f"{t}: {len(labels)} {prefix} images from {Path(root) / folder / 'raw'}")
        pools[t] = draw_batches(to_float(images), labels.long(), batch, count, gen)
    return pools, "real"


class Batches:
    """A re-iterable list of batches standing in for a DataLoader in ``Trainer._process_data``,
    whose iterator also answers the Python 2 ``.next()`` that LibMTL 1.1.5 calls."""

    def __init__(self, batches: Sequence[Batch]) -> None:
        self.batches = list(batches)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[Batch]:
        return _Cursor(self.batches)


class _Cursor:
    def __init__(self, batches: list[Batch]) -> None:
        self.batches, self.k = batches, 0

    def __iter__(self) -> _Cursor:
        return self

    def __next__(self) -> Batch:
        if self.k >= len(self.batches):
            raise StopIteration
        self.k += 1
        return self.batches[self.k - 1]

    next = __next__


# ---------------------------------------------------------------------- the step


def libmtl_step(trainer: Any, loaders: dict[str, list]) -> Any:
    """One iteration of ``Trainer.train``'s multi_input loop body, through LibMTL's methods."""
    train_losses = torch.zeros(trainer.task_num).to(trainer.device)
    for tn, task in enumerate(trainer.task_name):
        train_input, train_gt = trainer._process_data(loaders[task])
        train_pred = trainer.model(train_input, task)
        train_pred = train_pred[task]
        train_pred = trainer.process_preds(train_pred, task)
        train_losses[tn] = trainer._compute_loss(train_pred, train_gt, task)
        trainer.meter.update(train_pred, train_gt, task)
    trainer.optimizer.zero_grad()
    weights = trainer.model.backward(train_losses, **trainer.kwargs["weight_args"])
    trainer.optimizer.step()
    return weights


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_block(trainer: Any, loaders: dict[str, list], steps: int, device: torch.device) -> float:
    """Seconds for ``steps`` steps (the meter's per-epoch records are cleared afterwards)."""
    sync(device)
    started = time.perf_counter()
    for _ in range(steps):
        libmtl_step(trainer, loaders)
    sync(device)
    elapsed = time.perf_counter() - started
    trainer.meter.reinit()
    return elapsed


def check_against_train(
    libmtl: types.ModuleType, weighting: str, pools: dict[str, list[Batch]], device: torch.device
) -> bool:
    """Do 3 :func:`libmtl_step` calls leave the model where ``Trainer.train`` (one epoch of the
    same 3 batches per task) does, from the same initial parameters?"""
    train_batches = {t: Batches(pool[:3]) for t, pool in pools.items()}
    test_batches = {t: Batches(pool[:1]) for t, pool in pools.items()}
    torch.manual_seed(0)
    reference = build_trainer(libmtl, weighting, device)
    torch.manual_seed(0)
    ours = build_trainer(libmtl, weighting, device)
    with contextlib.redirect_stdout(sys.stderr):
        reference.train(train_batches, test_batches, epochs=1)
    ours.model.train()
    loaders, _ = ours._prepare_dataloaders(train_batches)
    for _ in range(3):
        libmtl_step(ours, loaders)
    a, b = reference.model.state_dict(), ours.model.state_dict()
    same = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    log(
        f"--check {weighting}: libmtl_step x3 {'matches' if same else 'DIFFERS FROM'} "
        "Trainer.train (parameters and BN buffers)"
    )
    return same


# ---------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--steps", type=int, default=30, help="timed steps per block")
    p.add_argument("--repeats", type=int, default=1, help="timed blocks; the faster counts")
    p.add_argument("--weighting", default=",".join(WEIGHTINGS), help="comma list of EW, MGDA")
    p.add_argument("--batch", type=int, default=64, help="images per task per step")
    p.add_argument("--root", default=os.environ.get("MTLRUN_DATA"), help="default $MTLRUN_DATA")
    p.add_argument("--random", action="store_true", help="random images instead of idx files")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--check", action="store_true", help="first check libmtl_step against Trainer.train"
    )
    args = p.parse_args(argv)
    args.weightings = [w.strip() for w in args.weighting.split(",") if w.strip()]
    unknown = [w for w in args.weightings if w not in WEIGHTINGS]
    if unknown or not args.weightings:
        p.error(f"--weighting should be a comma list of {list(WEIGHTINGS)}; got {args.weighting!r}")
    if args.steps < 1 or args.repeats < 1 or args.batch < 1:
        p.error("--steps, --repeats and --batch should be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    if args.device == "cuda" and not torch.cuda.is_available():
        log("--device cuda: CUDA is not available")
        return 2
    device = torch.device(args.device)
    libmtl = import_libmtl()
    version = importlib.metadata.version("LibMTL")
    pools, data = make_pools(
        args.root, args.random, args.batch, min(WARMUP + args.steps, 200), args.seed
    )
    if args.check and not all(
        check_against_train(libmtl, w, pools, device) for w in args.weightings
    ):
        return 1

    trainers, loaders = {}, {}
    for w in args.weightings:
        torch.manual_seed(args.seed)
        trainers[w] = build_trainer(libmtl, w, device)
        trainers[w].model.train()
        loaders[w], _ = trainers[w]._prepare_dataloaders({t: Batches(p) for t, p in pools.items()})
        timed_block(trainers[w], loaders[w], WARMUP, device)
    best = {w: float("inf") for w in args.weightings}
    for _ in range(args.repeats):
        for w in args.weightings:  # interleaved, so drifts in machine load hit every weighting
            best[w] = min(best[w], timed_block(trainers[w], loaders[w], args.steps, device))

    log(
        f"LibMTL {version}, torch {torch.__version__}, {args.device}, "
        f"{torch.get_num_threads()} threads, {data} data, batch {args.batch} per task"
    )
    for w in args.weightings:
        ms = 1000 * best[w] / args.steps
        log(f"  {w:5s} {ms:8.2f} ms/step (best of {args.repeats} x {args.steps} steps)")
        row = {
            "peer": "LibMTL",
            "version": version,
            "weighting": w,
            "device": args.device,
            "batch": args.batch,
            "ms_per_step": round(ms, 4),
            "steps": args.steps,
            "repeats": args.repeats,
            "data": data,
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
        }
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
