"""Milliseconds per training step of LibMTL (a public MTL library) on mtlrun's lenet_bn/mnist3
hard-sharing set-up, for any of LibMTL's weightings: the peer column of ``scripts/bench_speed.py``.

What it measures. LibMTL's own per-iteration code path, as ``Trainer.train_singlelevel`` runs it
in ``multi_input`` mode: for each task ``Trainer._process_data`` (batch to the device), then
``Trainer.forward4loss`` (the model's forward per task, ``process_preds``, ``_compute_loss`` with
LibMTL's CELoss, which records ``loss.item()``), ``meter.update`` per task (accuracy,
``.item()``), ``optimizer.zero_grad(set_to_none=False)``, ``model.backward(losses,
**weight_args)`` (the weighting's backward) and ``optimizer.step()``; MoDo and SDMGrad draw three
batches per task per step (three forwards, as the trainer does); FAMO runs the same batches
forward again under ``no_grad`` after the step and calls ``update_w``. ``Trainer.train`` itself
cannot be timed step by step (its loop body is not a method, and every epoch ends in ``test``),
so :func:`libmtl_step` calls those same methods in the loop body's order; ``--check`` shows that
a few such steps leave the model bit-for-bit where ``Trainer.train`` leaves it from the same
start, batches and seeds (epoch 0).

Weightings. ``--weighting NAME`` (repeatable, or a comma list; ``all``: every weighting in
``LibMTL.weighting.__all__``, 23 at the mirrored GitHub commit). Each gets LibMTL's own defaults
as its ``weight_args``: ``LibMTL.config.prepare_args`` on the defaults of ``LibMTL_args`` (e.g.
MGDA ``mgda_gn='none'``, DWA ``T=2``, GradVac beta 0.5 on the whole model, CAGrad calpha 0.5
rescale 1, Nash-MTL max_norm 1, STCH mu 1 warm-up 4 epochs, MoDo gamma 1e-3 rho 0.1, SDMGrad
lambda 0.3 20 iterations, UPGrad eps 1e-4). GradDrop runs with ``rep_grad=True`` (LibMTL's
GradDrop raises on parameter gradients: it drops signs of the gradients at the encoder output, a
(16, 5, 5) map per image here); every other weighting runs on the shared parameters'
gradients (``rep_grad=False``). Weightings that read the epoch (GradNorm from epoch 1, DWA from
epoch 2, STCH after its 4 warm-up epochs) are timed in their steady state: the warm-up steps run
as epoch 4 (STCH's warm-up epoch, whose losses set its reference point) and the timed steps as
epoch 5, with ``train_loss_buffer`` (the per-epoch mean losses that GradNorm and DWA read) set to
1 (the values do not change a step's cost). ``--check`` uses epoch 0, as ``Trainer.train`` does.
A weighting that raises in this set-up is skipped with its error on stderr (no JSON line); at
the mirrored commit with the shims below none is skipped.

Set-up (mtlrun ``experiment=thesis_fig6``): tasks mnist, fashion, kmnist, each with its own
batch of ``--batch`` 1x28x28 images per step, scaled as mtlrun does (uint8 / 127.5 - 1, in
[-1, 1]); encoder = trimmed LeNet+BN (Conv2d(1, 6, 5, padding=2), BN, ReLU, MaxPool2; Conv2d(6,
16, 5), BN, ReLU, MaxPool2) shared by all tasks (LibMTL architecture HPS); heads Flatten ->
Linear(400, 10); SGD lr 1e-3, momentum 0.9, Nesterov. Images are the idx files under
``<root>/{MNIST,FashionMNIST,KMNIST}/raw/`` (train files, else t10k: KMNIST has no train
images in shared/data), or random tensors with ``--random`` (on a CPU random pixels step
slower than real ones, so bench_speed.py passes ``--random`` only when mtlrun's row uses
generated files too). ``--steps`` timed steps follow 5 warm-up steps; the weightings' blocks
are interleaved ``--repeats`` times and the faster block counts. CUDA is synchronised around
timed blocks; torch threads follow OMP_NUM_THREADS when set. Output: one JSON line per timed
weighting on stdout (``peer``, ``version``, ``weighting``, ``device``, ``batch``,
``ms_per_step``, ``steps``, ``repeats``, ``data``, ``threads``, ``torch``, and ``rep_grad`` /
``batches_per_step`` where they differ from False / 1), human lines (and everything LibMTL
prints) on stderr.

Separate environment. LibMTL is a peer, never a dependency of mtlrun, and this script does not
import mtlrun. It needs LibMTL's GitHub code (``Trainer.forward4loss``, weightings named by
string); PyPI's LibMTL 1.1.5 predates it (12 weightings, another Trainer) and is refused. The
GitHub snapshot also calls itself 1.1.5 (``version`` in the JSON lines); install it without its
pinned dependencies (torch 2.3, torch_geometric):

    python3 -m venv /work/peer-libmtl
    /work/peer-libmtl/bin/pip install torch torchvision numpy scipy cvxpy ecos quadprog qpsolvers
    git -C <LibMTL clone> archive HEAD | tar -x -C /tmp/libmtl-src
    /work/peer-libmtl/bin/pip install --no-deps /tmp/libmtl-src
    OMP_NUM_THREADS=1 MTLRUN_DATA=../shared/data /work/peer-libmtl/bin/python \
        scripts/peer_libmtl.py --weighting all --device cpu --steps 20

(scipy: CAGrad and FairGrad; cvxpy and ecos: Nash-MTL; qpsolvers and quadprog: UPGrad.)
bench_speed.py runs this file with the interpreter given by ``--peer-python PATH`` and reads the
JSON lines.

Compatibility shims (LibMTL's code predates torch 2 and NumPy 2; nothing here changes what a
step computes), each installed only where the name is missing: ``torch_geometric`` (imported at
the top of ``LibMTL/trainer.py`` for QM9's loaders only) is an empty module;
``torch.symeig`` (Aligned-MTL; removed from torch) is ``torch.linalg.eigh`` on the same (upper)
triangle, as torch's removal notice prescribes; ``numpy.alltrue`` (SDMGrad's simplex projection;
removed in NumPy 2) is ``numpy.all``; ``torchvision.models.utils`` is aliased to ``torch.hub``
for older LibMTL code that imports it. ``Trainer`` hard-codes ``cuda:0``, so
:func:`build_trainer` sets the device before the model is built; ``_process_data`` is fed
:class:`Batches` (whose iterator also answers the Python 2 ``.next()`` of older LibMTL code).

Differences from mtlrun's step that matter when reading the two columns:
- EW sums the task losses with weight 1 (its docstring says 1/T; the code sums), as mtlrun's
  balancer=equal does. mtlrun's equal also checks Pareto-stationarity on one step in 10 (per-task
  gradients and a min-norm solve), which LibMTL does not do.
- MGDA (``mgda_gn='none'``, no loss rescaling, as mtlrun's ``normalize=none``): LibMTL solves one
  min-norm problem over all shared parameters concatenated (conv1 and conv2 together), with Sener
  & Koltun's Frank-Wolfe-style solver in float32 (stop at an L1 change < 1e-5; at most 250
  iterations). mtlrun solves one problem per shared block (conv1, conv2), in float64, with its
  ``projection`` solver (at most 250 iterations), and records Pareto-stationarity every step.
- Every gradient-based weighting: LibMTL gets per-task gradients with one ``backward`` per task
  (graph retained; ``autograd.grad`` for Nash-MTL, ExcessMTL and FairGrad), copying each into a
  CPU vector and then onto the device, and weighs all shared parameters as one vector; mtlrun
  uses ``torch.autograd.grad`` and weighs each shared block on its own.
- mtlrun clips the global gradient norm at 5 (trainer.grad_clip) before the optimiser step;
  LibMTL does not clip (except Nash-MTL, which clips the shared gradients at max_norm 1).
- LibMTL syncs with the host every step (``loss.item()`` and an accuracy ``.item()`` per task;
  several weightings read losses or solve on the CPU), which costs on CUDA; mtlrun keeps running
  losses on the device.
- Batches: both move a CPU batch per task to the device each step; here they are pre-sliced
  (no DataLoader), like mtlrun's index slices.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import random
import sys
import time
import types
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

TASKS = {"mnist": "MNIST", "fashion": "FashionMNIST", "kmnist": "KMNIST"}
DEFAULT_WEIGHTINGS = ("EW", "MGDA")
# LibMTL weightings that refuse parameter gradients: run with rep_grad=True (module docstring).
REP_GRAD = frozenset({"GradDrop"})
# Weightings for which LibMTL's Trainer draws three batches per task and step (its loop body).
THREE_BATCHES = frozenset({"MoDo", "SDMGrad"})
N_CLASSES = 10
IMAGE_SIZE = 28
WARMUP = 5

Batch = tuple[Tensor, Tensor]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def import_libmtl() -> types.ModuleType:
    """``import LibMTL`` after the compatibility shims of the module docstring (each only where
    the name is missing); refuses a LibMTL older than the GitHub Trainer this script drives."""
    try:
        import torchvision.models.utils  # noqa: F401
    except ImportError:
        shim = types.ModuleType("torchvision.models.utils")
        shim.__dict__.update(load_state_dict_from_url=torch.hub.load_state_dict_from_url)
        sys.modules["torchvision.models.utils"] = shim
    try:
        import torch_geometric  # noqa: F401
    except ImportError:
        sys.modules["torch_geometric"] = types.ModuleType("torch_geometric")
    try:
        torch.symeig(torch.eye(1), eigenvectors=True)  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError):

        def symeig(a: Tensor, eigenvectors: bool = False, upper: bool = True) -> Any:
            values, vectors = torch.linalg.eigh(a, UPLO="U" if upper else "L")
            return values, (vectors if eigenvectors else torch.empty(0, dtype=a.dtype))

        torch.symeig = symeig  # type: ignore[attr-defined]
    if not hasattr(np, "alltrue"):
        np.alltrue = np.all  # type: ignore[attr-defined]
    with contextlib.redirect_stdout(sys.stderr):
        import LibMTL
    if not hasattr(LibMTL.Trainer, "forward4loss"):
        raise SystemExit(
            "this LibMTL predates the GitHub Trainer this script drives (Trainer.forward4loss, "
            "weightings by name): install LibMTL from its GitHub code (module docstring)"
        )
    return LibMTL


def weighting_names(libmtl: types.ModuleType) -> list[str]:
    """Every weighting LibMTL exports, in its own order."""
    return [n for n in libmtl.weighting.__all__ if n != "AbsWeighting"]


def default_weight_args(libmtl: types.ModuleType, weighting: str) -> dict[str, Any]:
    """LibMTL's defaults for ``weighting``: ``prepare_args`` on ``LibMTL_args``' defaults."""
    params = libmtl.config.LibMTL_args.parse_args([])
    params.weighting = weighting
    with contextlib.redirect_stdout(sys.stderr):  # prepare_args prints the configuration
        kwargs, _, _ = libmtl.config.prepare_args(params)
    return dict(kwargs["weight_args"])


def seed_all(seed: int) -> None:
    """torch's, Python's and NumPy's generators (LibMTL's random weightings use the first two)."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


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


def build_trainer(
    libmtl: types.ModuleType,
    weighting: str,
    device: torch.device,
    *,
    encoder_class: Callable[[], nn.Module] = LeNetBNEncoder,
    decoders: nn.ModuleDict | None = None,
    multi_input: bool = True,
    weight_args: dict[str, Any] | None = None,
) -> Any:
    """A ``LibMTL.Trainer`` (HPS, SGD lr 1e-3 Nesterov 0.9) on ``device`` for ``weighting`` with
    LibMTL's default ``weight_args`` (unless given); ``rep_grad`` for :data:`REP_GRAD` only."""
    from LibMTL.loss import CELoss
    from LibMTL.metrics import AccMetric

    trainer_base: Any = libmtl.Trainer

    class PeerTrainer(trainer_base):
        def _prepare_model(self, *args: Any) -> None:
            self.device = device  # Trainer.__init__ hard-codes cuda:0 just before this call
            super()._prepare_model(*args)

    decoders = make_decoders() if decoders is None else decoders
    task_dict = {
        t: {"metrics": ["Acc"], "metrics_fn": AccMetric(), "loss_fn": CELoss(), "weight": [1]}
        for t in decoders
    }
    if weight_args is None:
        weight_args = default_weight_args(libmtl, weighting)
    with contextlib.redirect_stdout(sys.stderr):  # LibMTL prints parameter counts, log format
        return PeerTrainer(
            task_dict=task_dict,
            weighting=weighting,
            architecture="HPS",
            encoder_class=encoder_class,
            decoders=decoders,
            rep_grad=weighting in REP_GRAD,
            multi_input=multi_input,
            optim_param={"optim": "sgd", "lr": 1e-3, "momentum": 0.9, "nesterov": True},
            scheduler_param=None,
            weight_args=weight_args,
            arch_args={},
        )


def set_epoch(trainer: Any, epoch: int) -> None:
    """What ``Trainer.train`` sets before an epoch's steps: ``model.epoch``, ``model.epochs``
    and ``model.train_loss_buffer`` (per-epoch mean losses; here 1, see the module docstring)."""
    trainer.model.epoch = epoch
    trainer.model.epochs = epoch + 1
    trainer.model.train_loss_buffer = np.ones([trainer.task_num, epoch + 1])


def steady_epoch(weight_args: dict[str, Any]) -> int:
    """The first epoch in which every epoch-reading weighting runs its own rule (module
    docstring): after STCH's warm-up epoch, and at least 2 (DWA)."""
    return max(2, int(weight_args.get("STCH_warmup_epoch", 4)) + 1)


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
    whose iterator also answers the Python 2 ``.next()`` of older LibMTL code."""

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
    """One iteration of ``Trainer.train_singlelevel``'s multi_input loop body, through LibMTL's
    methods (three batches per task for MoDo and SDMGrad; FAMO's second forward and update)."""
    train_losses = []
    for _ in range(3 if trainer.weighting in THREE_BATCHES else 1):
        train_inputs, train_gts = {}, {}
        for task in trainer.task_name:
            train_inputs[task], train_gts[task] = trainer._process_data(loaders[task])
        losses, train_preds = trainer.forward4loss(
            trainer.model, train_inputs, train_gts, return_preds=True
        )
        train_losses.append(losses)
    stacked = torch.stack(train_losses).squeeze(0)
    for task in trainer.task_name:
        trainer.meter.update(train_preds[task], train_gts[task], task)
    trainer.optimizer.zero_grad(set_to_none=False)
    weights = trainer.model.backward(stacked, **trainer.kwargs["weight_args"])
    trainer.optimizer.step()
    if trainer.weighting == "FAMO":
        with torch.no_grad():
            new_losses = trainer.forward4loss(trainer.model, train_inputs, train_gts)
            trainer.model.update_w(new_losses.detach())
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
    same 3 batches per task) does, from the same initial parameters and seeds?"""
    train_batches = {t: Batches(pool[:3]) for t, pool in pools.items()}
    test_batches = {t: Batches(pool[:1]) for t, pool in pools.items()}
    torch.manual_seed(0)
    reference = build_trainer(libmtl, weighting, device)
    torch.manual_seed(0)
    ours = build_trainer(libmtl, weighting, device)
    seed_all(1)
    reference.train(train_batches, test_batches, epochs=1)
    seed_all(1)
    ours.model.train()
    set_epoch(ours, 0)
    loaders, _ = ours._prepare_dataloaders(train_batches)
    for _ in range(3):
        libmtl_step(ours, loaders)
    a, b = reference.model.state_dict(), ours.model.state_dict()
    same = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    log(
        f"--check {weighting}: libmtl_step x3 {'matches' if same else 'DIFFERS FROM'} "
        "Trainer.train (parameters and buffers)"
    )
    return same


# ---------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--steps", type=int, default=30, help="timed steps per block")
    p.add_argument("--repeats", type=int, default=1, help="timed blocks; the faster counts")
    p.add_argument(
        "--weighting",
        action="append",
        help="a LibMTL weighting (repeatable, or a comma list); all: every one; default EW,MGDA",
    )
    p.add_argument("--batch", type=int, default=64, help="images per task per step")
    p.add_argument("--root", default=os.environ.get("MTLRUN_DATA"), help="default $MTLRUN_DATA")
    p.add_argument("--random", action="store_true", help="random images instead of idx files")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--check", action="store_true", help="first check libmtl_step against Trainer.train"
    )
    args = p.parse_args(argv)
    given = args.weighting or [",".join(DEFAULT_WEIGHTINGS)]
    args.weightings = [w.strip() for item in given for w in item.split(",") if w.strip()]
    if not args.weightings:
        p.error("--weighting: no weighting named")
    if args.steps < 1 or args.repeats < 1 or args.batch < 1:
        p.error("--steps, --repeats and --batch should be >= 1")
    return args


def resolve_weightings(requested: Sequence[str], known: Sequence[str]) -> list[str]:
    """``all`` expanded to LibMTL's weightings, duplicates dropped; unknown names are an error."""
    out: list[str] = []
    for w in requested:
        for name in known if w.lower() == "all" else [w]:
            if name not in known:
                raise SystemExit(f"--weighting {name!r}: LibMTL has {', '.join(known)}")
            if name not in out:
                out.append(name)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    if args.device == "cuda" and not torch.cuda.is_available():
        log("--device cuda: CUDA is not available")
        return 2
    device = torch.device(args.device)
    out = sys.stdout
    with contextlib.redirect_stdout(sys.stderr):  # LibMTL prints (STCH its reference point)
        libmtl = import_libmtl()
        weightings = resolve_weightings(args.weightings, weighting_names(libmtl))
        version = importlib.metadata.version("LibMTL")
        # MoDo/SDMGrad read three batches per task and step
        count = min(3 * (WARMUP + args.steps), 200)
        pools, data = make_pools(args.root, args.random, args.batch, count, args.seed)
        if args.check and not all(
            check_against_train(libmtl, w, pools, device) for w in weightings
        ):
            return 1

        trainers, loaders, skipped = {}, {}, {}
        for w in weightings:
            torch.manual_seed(args.seed)
            try:
                trainer = build_trainer(libmtl, w, device)
                trainer.model.train()
                set_epoch(trainer, steady_epoch(trainer.kwargs["weight_args"]) - 1)
                loader, _ = trainer._prepare_dataloaders({t: Batches(p) for t, p in pools.items()})
                seed_all(args.seed)
                timed_block(trainer, loader, WARMUP, device)
                set_epoch(trainer, steady_epoch(trainer.kwargs["weight_args"]))
            except Exception as e:  # a weighting that does not run here is reported, not timed
                skipped[w] = f"{type(e).__name__}: {e}"
                log(f"  {w}: skipped, it raised {skipped[w]}")
                continue
            trainers[w], loaders[w] = trainer, loader
        best = {w: float("inf") for w in trainers}
        for _ in range(args.repeats):
            for w in trainers:  # interleaved, so drifts in machine load hit every weighting
                best[w] = min(best[w], timed_block(trainers[w], loaders[w], args.steps, device))

    log(
        f"LibMTL {version}, torch {torch.__version__}, {args.device}, "
        f"{torch.get_num_threads()} threads, {data} data, batch {args.batch} per task"
    )
    for w in trainers:
        ms = 1000 * best[w] / args.steps
        log(f"  {w:12s} {ms:8.2f} ms/step (best of {args.repeats} x {args.steps} steps)")
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
        if w in REP_GRAD:
            row["rep_grad"] = True
        if w in THREE_BATCHES:
            row["batches_per_step"] = 3
        print(json.dumps(row), file=out, flush=True)
    for w, why in skipped.items():
        log(f"  {w:12s} skipped: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
