"""LibMTL's shared-parameter update for each of its weightings on fixed task gradients: the peer
half of ``scripts/check_libmtl_weightings.py``, run with the peer environment's python.

    /work/peer-libmtl/bin/python scripts/peer_libmtl_weightings.py --cases IN.json --out OUT.json

Input (written by check_libmtl_weightings.py): ``tasks``, ``dim`` d, ``x0`` (the shared
parameters' value, d floats), ``dtype``, ``draws``, ``random_steps`` and ``cases``: each a
``name`` and ``steps``, each step with ``rows`` (T x d, task t's gradient g_t), ``losses``
(T) and ``epoch``.

How a step is driven. The model is LibMTL's own ``Trainer`` model (HPS + the weighting, built by
:func:`peer_libmtl.build_trainer`, single input): the encoder is one parameter vector θ (shape
(1, d), value x0) that it returns as the representation; task t's decoder multiplies it by its
own scalar parameter (1), and the step's loss of task t is ℓ_t + g_t · (out_t − x0). So every
loss equals ℓ_t and every shared-parameter gradient equals g_t exactly, whatever LibMTL does with
them (backward per task, ``autograd.grad``, representation gradients for GradDrop, log losses
for DB-MTL, loss scales for IMTL). Before each step ``model.epoch`` and
``model.train_loss_buffer`` (per-epoch mean losses: the means of the case's step losses per
epoch) are set as ``Trainer.train`` sets them, the gradients are zeroed as its
``optimizer.zero_grad(set_to_none=False)`` does, then ``model.backward(losses, **weight_args)``
runs with LibMTL's default ``weight_args`` (``LibMTL.config``), and θ's gradient is the update.
MoDo and SDMGrad get the step's losses three times (LibMTL's three batches, here identical: the
double-sampled J1 J2ᵀ is J Jᵀ). FAMO's ``update_w`` gets the next step's losses (LibMTL's
trainer: the same batch after the optimiser step; no step is taken here). No optimiser step is
taken, so parameters that LibMTL's weightings learn through the model's optimiser (GradNorm's,
UW's and IMTL's loss scales) keep their initial values; they are listed in the output.

Random weightings (found by running the first case with seeds 0 and 1: PCGrad's and GradVac's
shuffles, RLW's draw, GradDrop's mask) are run ``draws`` times on the first ``random_steps``
steps of each case, with torch, Python and NumPy seeded by the draw's number; the output has the
mean and the variance of the update per step.

Output JSON: ``libmtl`` (version, torch, numpy) and ``weightings``: per LibMTL weighting its
``weight_args``, ``rep_grad``, ``random``, ``learned`` (its own parameters) and per case either
``updates`` (one list of d floats per step), or ``mean``/``var``/``draws``, or ``error``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peer_libmtl as peer  # noqa: E402

LOG = peer.log


def make_encoder(x0: Tensor) -> type[nn.Module]:
    """An encoder class (built without arguments, as HPS does) whose output is its one
    parameter θ = x0, shape (1, d), whatever the input."""

    class Theta(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.theta = nn.Parameter(x0.clone().unsqueeze(0))

        def forward(self, inputs: Tensor) -> Tensor:
            return self.theta * 1.0

    return Theta


class Scale(nn.Module):
    """A task's decoder: its input times one scalar parameter (1)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))

    def forward(self, z: Tensor) -> Tensor:
        return z * self.w


def epoch_means(case: dict[str, Any], n_tasks: int) -> np.ndarray:
    """(T, E): each epoch's mean step loss per task (what LibMTL's meter averages)."""
    epochs = 1 + max(s["epoch"] for s in case["steps"])
    out = np.ones([n_tasks, epochs])
    for e in range(epochs):
        losses = [s["losses"] for s in case["steps"] if s["epoch"] == e]
        if losses:
            out[:, e] = np.mean(np.array(losses, dtype=np.float64), axis=0)
    return out


class Driver:
    """One LibMTL model for one weighting and one run of a case's steps."""

    def __init__(
        self, libmtl: types.ModuleType, name: str, spec: dict[str, Any], dtype: torch.dtype
    ) -> None:
        self.name, self.dtype = name, dtype
        self.tasks = list(spec["tasks"])
        self.x0 = torch.tensor(spec["x0"], dtype=dtype)
        decoders = nn.ModuleDict({t: Scale() for t in self.tasks})
        self.weight_args = peer.default_weight_args(libmtl, name)
        self.trainer = peer.build_trainer(
            libmtl,
            name,
            torch.device("cpu"),
            encoder_class=make_encoder(self.x0),
            decoders=decoders,
            multi_input=False,
            weight_args=self.weight_args,
        )
        self.model = self.trainer.model
        self.theta = self.model.encoder.theta

    def learned(self) -> list[str]:
        """The weighting's own parameters (outside encoder and decoders)."""
        inside = {id(p) for p in self.model.encoder.parameters()}
        inside |= {id(p) for p in self.model.decoders.parameters()}
        return [n for n, p in self.model.named_parameters() if id(p) not in inside]

    def losses(self, rows: Tensor, values: Tensor) -> Tensor:
        out = self.model(torch.zeros(1, 1, dtype=self.dtype))
        return torch.stack(
            [values[k] + (rows[k] * (out[t][0] - self.x0)).sum() for k, t in enumerate(self.tasks)]
        )

    def run(self, case: dict[str, Any], steps: int) -> list[list[float]]:
        """θ's gradient after ``model.backward`` at each of the case's first ``steps`` steps."""
        means = epoch_means(case, len(self.tasks))
        self.model.train_loss_buffer = means
        self.model.epochs = means.shape[1]
        chosen = case["steps"][:steps]
        updates = []
        for k, step in enumerate(chosen):
            rows = torch.tensor(step["rows"], dtype=self.dtype)
            values = torch.tensor(step["losses"], dtype=self.dtype)
            self.model.epoch = step["epoch"]
            for p in self.model.parameters():  # optimizer.zero_grad(set_to_none=False)
                if p.grad is not None:
                    p.grad.zero_()
            if self.name in peer.THREE_BATCHES:
                losses = torch.stack([self.losses(rows, values) for _ in range(3)])
            else:
                losses = self.losses(rows, values)
            self.model.backward(losses, **self.weight_args)
            grad = self.theta.grad
            update = torch.zeros_like(self.x0) if grad is None else grad.detach()[0].clone()
            updates.append([float(v) for v in update.double()])
            if self.name == "FAMO":
                following = case["steps"][min(k + 1, len(case["steps"]) - 1)]
                after = torch.tensor(following["losses"], dtype=self.dtype)
                with torch.no_grad():
                    self.model.update_w(after)
        return updates


def run_once(
    libmtl: types.ModuleType, name: str, spec: dict, dtype: torch.dtype, case: dict, steps: int,
    seed: int,
) -> list[list[float]]:  # fmt: skip
    peer.seed_all(seed)
    driver = Driver(libmtl, name, spec, dtype)
    with contextlib.redirect_stdout(sys.stderr):  # STCH prints its reference point
        return driver.run(case, steps)


def weighting_result(libmtl: types.ModuleType, name: str, spec: dict[str, Any]) -> dict:
    dtype = getattr(torch, spec["dtype"])
    torch.set_default_dtype(dtype)  # LibMTL allocates its gradient matrices in the default dtype
    probe = Driver(libmtl, name, spec, dtype)
    result: dict[str, Any] = {
        "weight_args": probe.weight_args,
        "rep_grad": name in peer.REP_GRAD,
        "learned": probe.learned(),
        "cases": {},
    }
    cases = spec["cases"]
    first = cases[0]
    steps = spec["random_steps"]
    try:
        a = run_once(libmtl, name, spec, dtype, first, steps, 0)
        b = run_once(libmtl, name, spec, dtype, first, steps, 1)
        result["random"] = a != b
    except Exception as e:  # the weighting fails on the plain case: reported per case below
        result["random"] = False
        LOG(f"{name}: {type(e).__name__}: {e}")
    for case in cases:
        try:
            if result["random"]:
                draws = [
                    np.array(run_once(libmtl, name, spec, dtype, case, steps, i))
                    for i in range(spec["draws"])
                ]
                stack = np.stack(draws)  # (draws, steps, d)
                result["cases"][case["name"]] = {
                    "mean": stack.mean(0).tolist(),
                    "var": stack.var(0, ddof=1).tolist(),
                    "draws": len(draws),
                }
            else:
                updates = run_once(libmtl, name, spec, dtype, case, len(case["steps"]), 0)
                result["cases"][case["name"]] = {"updates": updates}
        except Exception as e:
            result["cases"][case["name"]] = {"error": f"{type(e).__name__}: {e}"}
    torch.set_default_dtype(torch.float32)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--cases", type=Path, required=True, help="input JSON (module docstring)")
    p.add_argument("--out", type=Path, required=True, help="output JSON")
    p.add_argument("--weighting", action="append", help="LibMTL weighting(s); default all")
    args = p.parse_args(argv)
    spec = json.loads(args.cases.read_text())
    with contextlib.redirect_stdout(sys.stderr):
        libmtl = peer.import_libmtl()
    known = peer.weighting_names(libmtl)
    names = peer.resolve_weightings(args.weighting or ["all"], known)
    results = {}
    for name in names:
        LOG(f"LibMTL {name} ...")
        with contextlib.redirect_stdout(sys.stderr):
            results[name] = weighting_result(libmtl, name, spec)
    out = {
        "libmtl": {
            "version": importlib.metadata.version("LibMTL"),
            "torch": torch.__version__,
            "numpy": np.__version__,
            "weightings": known,
        },
        "weightings": results,
    }
    args.out.write_text(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
