"""Seconds per training step of sparse sharing against hard sharing, on the same batches.

    python scripts/bench_sparse.py                       # toy data, CPU or the GPU if present
    MTLRUN_DATA=../shared/data python scripts/bench_sparse.py --data conll --steps 200

Rows: hard (one shared encoder pass), sparse_ste in search mode (three Bernoulli-masked tasks,
straight-through π updates, seed 000 Alg. 1), sparse masks fixed (θ ⊙ M_t, the fine-tuning and
Sun et al. multi-task phase); each sparse mode fused (the tasks' masked encoders as one pass:
grouped char CNN, block-diagonal BiLSTM) and with one encoder pass per task. Goal (issue 4): a sparse_ste step with three tasks costs at most
2.5x a hard-sharing step. A benchmark, not a test: it prints a table and asserts nothing.
"""

from __future__ import annotations

import argparse
import time

import torch

from mtlrun.config.source import compose_config
from mtlrun.methods.sparse_ste import BernoulliMasks
from mtlrun.run import build, setup
from mtlrun.training.device import pick_device
from mtlrun.training.loop import Phase, TrainSettings, train_epoch


def time_steps(cfg, mode: str, steps: int, device: torch.device, fuse: bool = True) -> float:
    """Mean seconds per step over ``steps`` steps after 5 warm-up steps."""
    method = build(cfg.method)
    data, tasks, model, balancer, optimizer, _ = setup(cfg, method, device)
    if hasattr(model, "fuse_tasks"):
        model.fuse_tasks = fuse
    phase = Phase(name=mode)
    if mode == "ste_search":
        shapes = {
            t.name: {
                k: p.shape
                for k, p in dict(model.blocks.named_parameters()).items()
                if k in model.maskable
            }
            for t in tasks
        }
        sampler = BernoulliMasks(shapes).to(device)
        model.set_source(sampler.sample, lambda t: method.discretise(sampler, t), sampler)
        phase = Phase(
            name=mode,
            extra_optimizers=[torch.optim.Adam(sampler.parameters(), lr=3e-3, weight_decay=1e-5)],
            after_step=sampler.clamp_,
        )
    elif mode == "fixed_masks":
        shapes = {
            t.name: {
                k: p
                for k, p in dict(model.blocks.named_parameters()).items()
                if k in model.maskable
            }
            for t in tasks
        }
        model.set_masks(
            {
                t: {k: (torch.rand_like(p) < 0.5).float() for k, p in per.items()}
                for t, per in shapes.items()
            }
        )
    settings = TrainSettings(max_epochs=1, batch_size=cfg.trainer.batch_size, progress=False)
    train_epoch(
        model,
        data,
        balancer,
        optimizer,
        TrainSettings(**{**settings.__dict__, "steps_per_epoch": 5}),
        0,
        device,
        phase,
    )
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    train_epoch(
        model,
        data,
        balancer,
        optimizer,
        TrainSettings(**{**settings.__dict__, "steps_per_epoch": steps}),
        1,
        device,
        phase,
    )
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="toy", choices=["toy", "conll"])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=10)
    args = parser.parse_args()
    device = pick_device(args.device)
    base = [
        f"data={args.data}",
        f"trainer.batch_size={args.batch_size}",
        f"trainer.device={args.device}",
        "balancer.kkt_every=0",  # no Pareto-stationarity checks inside the timed steps
    ]
    rows = [
        ("hard", ["method=hard"], "dense", True),
        ("sparse_ste (search)", ["method=sparse_ste"], "ste_search", True),
        ("sparse_ste (search), one pass per task", ["method=sparse_ste"], "ste_search", False),
        ("sparse masks fixed", ["method=sparse_ste"], "fixed_masks", True),
        ("sparse masks fixed, one pass per task", ["method=sparse_ste"], "fixed_masks", False),
    ]
    results = []
    for label, overrides, mode, fuse in rows:
        cfg = compose_config(base + overrides)
        results.append((label, time_steps(cfg, mode, args.steps, device, fuse)))
    hard = results[0][1]
    print(
        f"\nsteps: {args.steps}, batch {args.batch_size}, data {args.data}, device {device} "
        f"({torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}), torch {torch.__version__}\n"
    )
    print("| method | ms / step | steps / s | × hard |")
    print("|---|---:|---:|---:|")
    for label, sec in results:
        print(f"| {label} | {1000 * sec:.1f} | {1 / sec:.1f} | {sec / hard:.2f} |")


if __name__ == "__main__":
    main()
