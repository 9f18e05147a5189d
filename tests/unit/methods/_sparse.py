"""Tiny toy data, backbone and a RunContext for the sparse-sharing search tests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from mtlrun.backbones.accounting import counted_parameters
from mtlrun.backbones.cnn_bilstm import CNNBiLSTM
from mtlrun.balancers.equal import Equal
from mtlrun.data.tagging import TaggingData, toy_data
from mtlrun.model.paths import MultiTaskModel
from mtlrun.training.context import RunContext
from mtlrun.training.loop import TrainSettings

TINY = {"word_dim": 8, "char_dim": 4, "char_filters": 4, "hidden": 6}
# Overrides of a run() on tiny data (conftest.TINY_TEXT + a toy set of 30 training sentences).
TINY_RUN = [
    "backbone.word_dim=8",
    "backbone.char_dim=4",
    "backbone.char_filters=4",
    "backbone.hidden=6",
    "data.n_train=30",
    "data.n_valid=10",
    "data.n_test=10",
    "trainer.max_epochs=1",
    "trainer.progress=false",
    "trainer.plots=false",
    "trainer.save_predictions=false",
]


def tiny_encoder_size() -> int:
    """Counted encoder parameters of the tiny CNN-BiLSTM, by hand: char CNN + BiLSTM."""
    w, c, f, width, h = TINY["word_dim"], TINY["char_dim"], TINY["char_filters"], 3, TINY["hidden"]
    char_cnn = c * f * width + f
    lstm = 2 * (4 * h * (w + f) + 4 * h * h + 2 * 4 * h)
    return char_cnn + lstm


def tiny_weight_matrix_size() -> int:
    """The char-CNN kernel and the LSTM weight matrices (no biases): what IMP prunes."""
    w, c, f, width, h = TINY["word_dim"], TINY["char_dim"], TINY["char_filters"], 3, TINY["hidden"]
    return c * f * width + 2 * (4 * h * (w + f) + 4 * h * h)


def tiny_data(tasks: Sequence[str] = ("pos", "chunk", "ner")) -> TaggingData:
    return toy_data(tasks=list(tasks), n_train=30, n_valid=10, n_test=10)


def tiny_backbone(data: TaggingData, dropout: float = 0.5) -> CNNBiLSTM:
    return CNNBiLSTM(input_spec=data.input_spec, dropout=dropout, **TINY)


def make_ctx(
    model: MultiTaskModel, data: TaggingData, run_dir: Path, lr: float = 0.1
) -> RunContext:
    settings = TrainSettings(
        max_epochs=1, batch_size=16, eval_batch_size=64, seed=0, progress=False
    )
    return RunContext(
        model,
        data,
        data.tasks,
        Equal([t.name for t in data.tasks]),
        settings,
        torch.device("cpu"),
        run_dir,
        lambda params: torch.optim.SGD(params, lr=lr),
    )


def encoder_state(model: MultiTaskModel) -> dict[str, torch.Tensor]:
    """Copies of every counted encoder parameter, keyed like the masks."""
    return {
        f"{b}.{n}": p.detach().clone()
        for b in model.trunk_blocks()
        for n, p in counted_parameters(model.blocks[b])
    }
