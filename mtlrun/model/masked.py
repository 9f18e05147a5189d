"""A multi-task network whose tasks see per-task masked weights θ ⊙ M_t (sparse sharing)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, cast

import torch
from torch import Tensor, nn
from torch.func import functional_call

from mtlrun.backbones.accounting import count_parameters, counted_parameters
from mtlrun.model.masks import MaskSet
from mtlrun.model.paths import MultiTaskModel


class FusedBlock(Protocol):
    """A block that runs several tasks' weight sets in one pass (e.g. the CNN-BiLSTM blocks)."""

    def forward_tasks(self, xs: Sequence[Any], params: Sequence[dict[str, Tensor]]) -> list: ...


# Returns, for one task, the mask of each masked key (or None: run the dense weights).
MaskSource = Callable[[str], Mapping[str, Tensor] | None]


def _buffer_name(task: str, key: str) -> str:
    return f"mask__{task}__{key}".replace(".", "__")


class MaskedModel(MultiTaskModel):
    """Blocks + paths where each task runs its path with its own mask on the maskable weights.

    ``maskable`` lists the keys (``"<block>.<param>"``) that masks may cover. Three modes:
    ``dense`` (no masks: warm-up), ``fixed`` (the masks stored with :meth:`set_masks`, saved in
    the state dict) and ``source`` (masks from a callable, e.g. Bernoulli samples during the
    straight-through search, drawn afresh for every forward call in training mode).
    """

    def __init__(
        self,
        blocks: Mapping[str, nn.Module],
        paths: Mapping[str, Sequence[str]],
        maskable: Iterable[str],
    ) -> None:
        super().__init__(blocks, paths)
        self.maskable = list(maskable)
        self.mode = "dense"
        self.source: MaskSource | None = None
        self.eval_source: MaskSource | None = None
        self._eval_cache: dict[str, Mapping[str, Tensor] | None] = {}
        self.sampler: nn.Module | None = None  # holds search parameters (π), if any
        self._current: dict[str, Mapping[str, Tensor] | None] = {}
        # Run the tasks' masked passes through a shared trunk as one fused pass where the blocks
        # support it (``forward_tasks``); False runs one pass per task (same results). None:
        # fuse on a GPU, where one wide pass beats several launch-bound ones; on a CPU the
        # block-diagonal LSTM's extra arithmetic costs more than it saves.
        self.fuse_tasks: bool | None = None
        self._by_block: dict[str, list[tuple[str, str]]] = {}
        for key in self.maskable:
            block, pname = key.split(".", 1)
            self._by_block.setdefault(block, []).append((key, pname))

    # ------------------------------------------------------------------ masks

    def set_masks(self, masks: MaskSet) -> None:
        """Store fixed {0,1} masks (as buffers, so they move and save with the model)."""
        for task, per_key in masks.items():
            for key, m in per_key.items():
                self.register_buffer(
                    _buffer_name(task, key), m.detach().float().clone(), persistent=True
                )
        self.mode = "fixed"

    def fixed_masks(self) -> MaskSet:
        out: MaskSet = {}
        for task in self.paths:
            found = {
                k: getattr(self, _buffer_name(task, k))
                for k in self.maskable
                if hasattr(self, _buffer_name(task, k))
            }
            if found:
                out[task] = found
        return out

    def epoch_log(self) -> dict[str, float]:
        """history.csv entries after an epoch: ``mask/density/<task>`` (share of the maskable
        weights a task keeps) with fixed masks; during a search, ``mask/pi_mean/<task>``, the
        mean of π, i.e. the expected density of a Bernoulli(π) draw."""
        out: dict[str, float] = {}
        if self.mode == "fixed":
            for task, per_key in self.fixed_masks().items():
                total = sum(m.numel() for m in per_key.values())
                kept = sum(float(m.sum()) for m in per_key.values())
                out[f"mask/density/{task}"] = kept / total if total else 0.0
        elif self.mode == "source" and self.sampler is not None:
            flat: Any = getattr(self.sampler, "flat", None)  # BernoulliMasks: π per task
            if callable(flat):
                for task in self.paths:
                    out[f"mask/pi_mean/{task}"] = float(flat(task).detach().mean())
        return out

    def set_source(
        self, source: MaskSource, eval_source: MaskSource, sampler: nn.Module | None = None
    ) -> None:
        """Search mode: training forwards draw masks from ``source``, evaluation uses
        ``eval_source`` (e.g. the discretised masks); ``sampler`` owns the search parameters."""
        self.source, self.eval_source, self.sampler, self.mode = (
            source,
            eval_source,
            sampler,
            "source",
        )

    def train(self, mode: bool = True) -> MaskedModel:
        self._eval_cache = {}  # the search parameters may change while training
        return super().train(mode)

    def weight_parameters(self) -> list[nn.Parameter]:
        """θ: every parameter except the search parameters of the sampler."""
        skip = {id(p) for p in self.sampler.parameters()} if self.sampler is not None else set()
        return [p for p in self.parameters() if id(p) not in skip]

    def _mask_for(self, task: str) -> Mapping[str, Tensor] | None:
        if self.mode == "dense":
            return None
        if self.mode == "fixed":
            return self.fixed_masks().get(task)
        return self._current.get(task)

    # ------------------------------------------------------------------ forward

    def forward(self, inputs: Any, tasks: Iterable[str] | None = None) -> dict[str, Tensor]:
        tasks = list(tasks) if tasks is not None else list(self.paths)
        if self.mode == "source" and self.training:
            assert self.source is not None
            self._current = {t: self.source(t) for t in tasks}
        elif self.mode == "source":
            assert self.eval_source is not None
            for t in tasks:
                if t not in self._eval_cache:
                    self._eval_cache[t] = self.eval_source(t)
            self._current = {t: self._eval_cache[t] for t in tasks}
        masks = {t: self._mask_for(t) for t in tasks}
        self._active = masks
        if self._fusable(tasks):
            return self._forward_fused(inputs, tasks)
        return super().forward(inputs, tasks)

    def _fusable(self, tasks: list[str]) -> bool:
        """Several masked tasks on one trunk whose blocks all have ``forward_tasks``."""
        fuse = self.fuse_tasks
        if fuse is None:
            fuse = next(self.parameters()).is_cuda
        if not fuse or len(tasks) < 2 or all(self._active[t] is None for t in tasks):
            return False
        trunk = self.paths[tasks[0]][:-1]
        return all(self.paths[t][:-1] == trunk for t in tasks) and all(
            hasattr(self.blocks[b], "forward_tasks") for b in trunk
        )

    def _task_params(self, name: str, task: str) -> dict[str, Tensor]:
        """Block ``name``'s parameters as task ``task`` sees them (θ ⊙ M_t on masked keys)."""
        params: dict[str, Tensor] = dict(self.blocks[name].named_parameters())
        mask = self._active.get(task)
        if mask is not None:
            for key, pname in self._by_block.get(name, []):
                if key in mask:
                    params[pname] = params[pname] * mask[key]
        return params

    def _forward_fused(self, inputs: Any, tasks: list[str]) -> dict[str, Tensor]:
        xs: list[Any] = [inputs] * len(tasks)
        for name in self.paths[tasks[0]][:-1]:
            params = [self._task_params(name, t) for t in tasks]
            xs = cast(FusedBlock, self.blocks[name]).forward_tasks(xs, params)
            for t, x in zip(tasks, xs, strict=True):
                self.tap(name, t, x)
        out = {}
        for t, x in zip(tasks, xs, strict=True):
            head = self.paths[t][-1]
            out[t] = self.run_block(head, x, t)
            self.tap(head, t, out[t])
        return out

    def cache_key(self, task: str, prefix: tuple[str, ...]) -> Any:
        masked = self._active.get(task) is not None and any(b in self._by_block for b in prefix)
        return (task, prefix) if masked else prefix

    def run_block(self, name: str, x: Any, task: str) -> Any:
        mask = self._active.get(task)
        block = self.blocks[name]
        if mask is None or name not in self._by_block:
            return block(x)
        params = dict(block.named_parameters())
        masked = {
            pname: params[pname] * mask[key] for key, pname in self._by_block[name] if key in mask
        }
        return functional_call(block, masked, (x,), strict=False)

    # ------------------------------------------------------------------ accounting

    def param_counts(self) -> dict[str, Any]:
        """Encoder parameters active per task (|M_t| plus unmasked counted parameters of its
        path) and in the union over tasks; dense mode counts like the plain model."""
        masks = self.fixed_masks() if self.mode == "fixed" else {}
        if not masks:
            return super().param_counts()
        heads = {p[-1] for p in self.paths.values()}
        supernet = sum(count_parameters(m) for b, m in self.blocks.items() if b not in heads)
        active: dict[str, dict[str, Tensor]] = {}
        for task, path in self.paths.items():
            active[task] = {}
            for b in path[:-1]:
                for pname, p in counted_parameters(self.blocks[b]):
                    key = f"{b}.{pname}"
                    m = masks.get(task, {}).get(key)
                    active[task][key] = (
                        (m > 0) if m is not None else torch.ones_like(p, dtype=torch.bool)
                    )
        per_task = {t: int(sum(int(v.sum()) for v in a.values())) for t, a in active.items()}
        keys = {k for a in active.values() for k in a}
        used = 0
        for key in keys:
            present = [a[key] for a in active.values() if key in a]
            used += int(torch.stack(present).any(0).sum())
        return {"supernet": supernet, "used": used, "per_task": per_task}
