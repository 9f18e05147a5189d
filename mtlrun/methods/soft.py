"""Soft sharing: a shared char CNN + word embedding, one BiLSTM per task, coupled either by
cross-stitch units (Misra et al. 2016) mixing the BiLSTM outputs or by an L2 penalty between
the task BiLSTMs (Duong et al. 2015). Seed 000 Table 4.2 "Soft": 1596k encoder parameters."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from mtlrun.backbones.base import Backbone, SeqState
from mtlrun.data.base import Task
from mtlrun.errors import ConfigError
from mtlrun.methods.base import SharingMethod, head_name
from mtlrun.model.paths import MultiTaskModel


class SoftSharedModel(MultiTaskModel):
    """Paths ``embed → bilstm:t → head:t``; with cross-stitch, head t reads Σ_s α_ts h_s.

    The stitch matrix α (T×T) is learned; it is not an encoder parameter (the thesis's 1596k
    counts the char CNN and the three BiLSTMs only).
    """

    def __init__(
        self,
        blocks: Mapping[str, nn.Module],
        paths: Mapping[str, Sequence[str]],
        coupling: str,
        l2_weight: float,
        stitch_self: float,
    ) -> None:
        super().__init__(blocks, paths)
        self.coupling, self.l2_weight = coupling, l2_weight
        n = len(paths)
        off = (1.0 - stitch_self) / (n - 1) if n > 1 else 0.0
        init = torch.full((n, n), off) + torch.eye(n) * (stitch_self - off)
        self.stitch = nn.Parameter(init) if coupling == "cross_stitch" else None
        self._index = {t: i for i, t in enumerate(paths)}

    def forward(self, inputs: Any, tasks: Iterable[str] | None = None) -> dict[str, Tensor]:
        if self.stitch is None:
            return super().forward(inputs, tasks)
        tasks = list(tasks) if tasks is not None else self.tasks
        shared = self.blocks["embed"](inputs)
        for t in tasks:
            self.tap("embed", t, shared)
        # Cross-stitch mixes every task's hidden states, so all BiLSTMs run even for one task.
        hidden = torch.stack(
            [self.blocks[self.paths[t][1]](shared).x for t in self.tasks]
        )  # (T, B, L, D)
        out = {}
        for t in tasks:
            mixed = torch.einsum("s,sbld->bld", self.stitch[self._index[t]], hidden)
            out[t] = self.blocks[head_name(t)](SeqState(mixed, shared.lengths))
        return out

    def loss_users(self, block: str) -> list[str]:
        """Cross-stitch feeds every task's BiLSTM into every task's head."""
        if self.stitch is not None and block != "embed" and not block.startswith("head"):
            return self.tasks
        return self.users(block)

    def regularizer(self) -> Tensor | None:
        """λ Σ_{s<t} ||θ_s − θ_t||² over the task BiLSTMs (coupling=l2), else None."""
        if self.coupling != "l2" or self.l2_weight == 0:
            return None
        lstms = [dict(self.blocks[self.paths[t][1]].named_parameters()) for t in self.tasks]
        total = torch.zeros((), device=next(self.parameters()).device)
        for a, b in itertools.combinations(lstms, 2):
            total = total + sum(((a[k] - b[k]) ** 2).sum() for k in a)
        return self.l2_weight * total


class SoftSharing(SharingMethod):
    """Builds :class:`SoftSharedModel` (``coupling`` = ``cross_stitch`` or ``l2``)."""

    def __init__(
        self,
        coupling: str = "cross_stitch",
        l2_weight: float = 1e-3,
        stitch_self: float = 0.9,
        name: str = "soft",
    ) -> None:
        if coupling not in ("cross_stitch", "l2"):
            raise ConfigError(
                f"`method.coupling` should be one of cross_stitch, l2. Found `method.coupling = {coupling}`."
            )
        if not 0 <= stitch_self <= 1:
            raise ConfigError(
                f"`method.stitch_self` should be in [0, 1]. Found `method.stitch_self = {stitch_self}`."
            )
        self.name, self.coupling, self.l2_weight, self.stitch_self = (
            name,
            coupling,
            l2_weight,
            stitch_self,
        )

    def build(self, backbone: Backbone, tasks: Sequence[Task]) -> MultiTaskModel:
        if "bilstm" not in getattr(backbone, "block_names", ()):
            raise ConfigError("method=soft couples per-task BiLSTMs: it needs backbone=cnn_bilstm.")
        blocks: dict[str, nn.Module] = {"embed": backbone.make_block("embed")}
        paths = {}
        for task in tasks:
            blocks[f"bilstm:{task.name}"] = backbone.make_block("bilstm")
            blocks[head_name(task.name)] = backbone.make_head(task)
            paths[task.name] = ["embed", f"bilstm:{task.name}", head_name(task.name)]
        return SoftSharedModel(blocks, paths, self.coupling, self.l2_weight, self.stitch_self)
