"""evaluate(): predictions per sentence, token-weighted losses, metrics; task_loss masking."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from mtlrun.backbones.cnn_bilstm import CNNBiLSTM
from mtlrun.backbones.lenet_bn import LeNetBN
from mtlrun.data.base import IGNORE_INDEX, Group
from mtlrun.data.conll import Sentence
from mtlrun.data.images import ImageTasksData
from mtlrun.data.mnist3 import load_image_task
from mtlrun.data.tagging import TaggingData, toy_data
from mtlrun.methods.hard import HardSharing
from mtlrun.model.paths import MultiTaskModel
from mtlrun.training.evaluate import evaluate, task_loss
from tests.helpers.fakedata import write_mnist_family

CPU = torch.device("cpu")
TINY = {"word_dim": 8, "char_dim": 4, "char_filters": 4, "hidden": 6}


@pytest.fixture(scope="module")
def data() -> TaggingData:
    return toy_data(n_train=20, n_valid=10, n_test=10)


def tiny_model(data: TaggingData) -> MultiTaskModel:
    torch.manual_seed(0)
    return HardSharing().build(CNNBiLSTM(input_spec=data.input_spec, **TINY), data.tasks)


# ---------------------------------------------------------------------- task_loss


def test_task_loss_ignores_padding_positions() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5)
    targets = torch.tensor([[1, 0, 4, IGNORE_INDEX], [2, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]])
    log_p = logits.log_softmax(-1)
    labelled = [(0, 0), (0, 1), (0, 2), (1, 0)]
    by_hand = -sum(log_p[b, i, targets[b, i]] for b, i in labelled) / len(labelled)
    assert task_loss(logits, targets) == pytest.approx(float(by_hand), rel=1e-6)
    # Garbage logits at the padded positions change nothing.
    noisy = logits.clone()
    noisy[0, 3] = 1e4
    noisy[1, 1:] = -1e4
    assert torch.equal(task_loss(noisy, targets), task_loss(logits, targets))


def test_task_loss_on_images_is_plain_cross_entropy() -> None:
    torch.manual_seed(1)
    logits, targets = torch.randn(6, 10), torch.randint(0, 10, (6,))
    assert torch.allclose(task_loss(logits, targets), F.cross_entropy(logits, targets))


# ----------------------------------------------------------------------- evaluate


def test_evaluate_predictions_losses_and_metrics(data: TaggingData) -> None:
    model = tiny_model(data)
    model.train()
    result = evaluate(model, data, "valid", data.tasks, 4, CPU)
    assert not model.training  # evaluation runs in eval mode
    lengths = [len(s.words) for s in data.sentences["valid"]]
    assert len(lengths) == 10
    for task in data.tasks:
        assert [len(p) for p in result.pred[task.name]] == lengths
        assert [len(g) for g in result.gold[task.name]] == lengths
        assert result.gold[task.name] == data.gold_tags("valid", task.name)
        assert all(tag in task.labels for sent in result.pred[task.name] for tag in sent)
        assert math.isfinite(result.loss[task.name]) and result.loss[task.name] > 0
    assert set(result.metrics) == {"pos", "chunk", "ner"}
    assert set(result.metrics["pos"]) == {"accuracy"}
    assert set(result.metrics["ner"]) == {"f1", "precision", "recall", "accuracy"}
    assert set(result.metrics["chunk"]) == {"f1", "precision", "recall", "accuracy"}


def test_evaluate_is_independent_of_the_batch_size(data: TaggingData) -> None:
    """The loss is a mean over tokens, not over batches; padding does not change predictions."""
    model = tiny_model(data)
    one = evaluate(model, data, "valid", data.tasks, 1, CPU)
    many = evaluate(model, data, "valid", data.tasks, 3, CPU)
    whole = evaluate(model, data, "valid", data.tasks, 256, CPU)
    for t in ("pos", "chunk", "ner"):
        assert one.loss[t] == pytest.approx(whole.loss[t], rel=1e-5)
        assert many.loss[t] == pytest.approx(whole.loss[t], rel=1e-5)
        assert one.pred[t] == whole.pred[t] == many.pred[t]


def test_evaluate_loss_is_the_token_weighted_mean(data: TaggingData) -> None:
    model = tiny_model(data).eval()
    result = evaluate(model, data, "valid", data.tasks, 4, CPU)
    total = {t.name: 0.0 for t in data.tasks}
    count = {t.name: 0 for t in data.tasks}
    with torch.no_grad():
        for inputs, targets in data.eval_groups("valid", 10):
            out = model(inputs)
            for t, logits in out.items():
                y = targets[t]
                keep = y != IGNORE_INDEX
                total[t] += float(F.cross_entropy(logits[keep], y[keep], reduction="sum"))
                count[t] += int(keep.sum())
    for t in total:
        assert result.loss[t] == pytest.approx(total[t] / count[t], rel=1e-5)


def test_oracle_model_scores_one(data: TaggingData, monkeypatch: pytest.MonkeyPatch) -> None:
    """A model that outputs the gold tags gets accuracy 1, F1 1 and a near-zero loss."""
    model = tiny_model(data)
    current: dict[str, torch.Tensor] = {}
    original = data.eval_groups

    def recording(split: str, batch_size: int, order: Any = None) -> Iterator[Group]:
        for inputs, targets in original(split, batch_size, order):
            current.clear()
            current.update(targets)
            yield inputs, targets

    def oracle(inputs: Any, tasks: list[str] | None = None) -> dict[str, torch.Tensor]:
        out = {}
        for t in tasks or model.tasks:
            n = len(next(task for task in data.tasks if task.name == t).labels)
            out[t] = 50.0 * F.one_hot(current[t].clamp(min=0), n).float()
        return out

    monkeypatch.setattr(data, "eval_groups", recording)
    monkeypatch.setattr(model, "forward", oracle)
    # The train split: every gold tag there is in the label set (valid may hold unseen tags).
    # Batches run shortest sentences first: a prediction put back in the wrong place would
    # not match its sentence's gold tags.
    assert data.eval_order("train") != list(range(20))
    result = evaluate(model, data, "train", data.tasks, 7, CPU)
    assert result.metrics["pos"]["accuracy"] == 1.0
    for t in ("chunk", "ner"):
        assert result.metrics[t] == {"f1": 1.0, "precision": 1.0, "recall": 1.0, "accuracy": 1.0}
    assert all(v < 1e-6 for v in result.loss.values())
    assert result.pred == result.gold


def test_unseen_gold_tags_are_scored_not_predicted() -> None:
    train = [Sentence(("a", "b"), {"pos": ("X", "Y")})]
    valid = [Sentence(("a", "b", "a"), {"pos": ("X", "Z", "X")})]
    data = TaggingData("t", {"train": train, "valid": valid, "test": valid}, ["pos"])
    assert data.tasks[0].labels == ("X", "Y")
    torch.manual_seed(0)
    model = HardSharing().build(CNNBiLSTM(input_spec=data.input_spec, **TINY), data.tasks)
    result = evaluate(model, data, "valid", data.tasks, 8, CPU)
    assert result.gold["pos"] == [["X", "Z", "X"]]
    assert "Z" not in result.pred["pos"][0]  # an unseen tag can never be predicted ...
    assert result.metrics["pos"]["accuracy"] <= 2 / 3  # ... but still counts as an error


def test_batch_without_labelled_tokens_does_not_poison_the_loss() -> None:
    train = [Sentence(("a", "b"), {"pos": ("X", "Y")})]
    valid = [Sentence(("a", "b"), {"pos": ("X", "Y")}), Sentence(("c",), {"pos": ("Z",)})]
    data = TaggingData("t", {"train": train, "valid": valid, "test": valid}, ["pos"])
    torch.manual_seed(0)
    model = HardSharing().build(CNNBiLSTM(input_spec=data.input_spec, **TINY), data.tasks)
    together = evaluate(model, data, "valid", data.tasks, 2, CPU).loss["pos"]
    one_by_one = evaluate(model, data, "valid", data.tasks, 1, CPU).loss["pos"]
    assert math.isfinite(together)
    assert one_by_one == pytest.approx(together, rel=1e-5)


def test_evaluate_on_image_tasks(tmp_path: Any) -> None:
    write_mnist_family(tmp_path, tasks=("mnist", "fashion"), n_train=24, n_test=20)
    splits = {t: load_image_task(tmp_path, t, valid_size=8) for t in ("mnist", "fashion")}
    images = ImageTasksData("mnist3", splits)
    torch.manual_seed(0)
    model = HardSharing().build(LeNetBN(input_spec=images.input_spec), images.tasks)
    result = evaluate(model, images, "valid", images.tasks, 5, CPU)
    for t in ("mnist", "fashion"):
        assert len(result.pred[t]) == 8 and all(len(p) == 1 for p in result.pred[t])
        labels = images.tasks[0].labels if t == "mnist" else images.tasks[1].labels
        assert result.gold[t] == [[labels[i]] for i in splits[t].valid[1].tolist()]
        assert set(result.metrics[t]) == {"accuracy"}
        assert math.isfinite(result.loss[t])


def test_evaluation_runs_shortest_sentences_first_and_scores_as_in_file_order(
    data: TaggingData, monkeypatch: pytest.MonkeyPatch
) -> None:
    order = data.eval_order("valid")
    lengths = [len(words) for words, _, _ in data._encoded["valid"]]
    assert sorted(order) == list(range(len(lengths)))
    assert [lengths[i] for i in order] == sorted(lengths)
    ties = [(lengths[i], i) for i in order]
    assert ties == sorted(ties)  # equal lengths keep file order
    groups = data.eval_groups("valid", 3, order)
    visited = [n for inputs, _ in groups for n in inputs.lengths.tolist()]
    assert visited == sorted(lengths)
    padded = {
        name: sum(inputs.words.numel() for inputs, _ in data.eval_groups("valid", 4, o))
        for name, o in (("file", None), ("sorted", order))
    }
    assert padded["sorted"] < padded["file"]

    model = tiny_model(data)
    fast = evaluate(model, data, "valid", data.tasks, 4, CPU)
    monkeypatch.setattr(data, "eval_order", lambda split: None)
    plain = evaluate(model, data, "valid", data.tasks, 4, CPU)
    assert fast.pred == plain.pred and fast.gold == plain.gold
    for task, scores in plain.metrics.items():
        for name, value in scores.items():
            assert fast.metrics[task][name] == pytest.approx(value, abs=1e-12)
        assert fast.loss[task] == pytest.approx(plain.loss[task], rel=1e-5)


def test_span_predictions_come_back_in_iob2_whatever_the_training_scheme(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """NER trained in BIOES (Sun et al.'s scheme) is predicted as S-/E- tags; the predictions
    written next to the gold tags (conlleval's input) are IOB2, like the gold."""
    words = ("Peter", "Blackburn", "visits", "Bonn")
    ner = ("B-PER", "I-PER", "O", "B-LOC")
    sentences = [Sentence(words, {"ner": ner})]
    data = TaggingData(
        "t", {s: sentences for s in ("train", "valid", "test")}, ["ner"],
        tag_schemes={"ner": "bioes"}, metrics={"ner": "f1"},
    )  # fmt: skip
    task = data.tasks[0]
    assert task.scheme == "bioes" and {"S-LOC", "E-PER"} <= set(task.labels)
    model = tiny_model(data)
    bioes = ("B-PER", "E-PER", "O", "S-LOC")

    def oracle(inputs: Any, tasks: list[str] | None = None) -> dict[str, torch.Tensor]:
        ids = torch.tensor([[task.labels.index(t) for t in bioes]])
        return {"ner": 50.0 * F.one_hot(ids, task.n_classes).float()}

    monkeypatch.setattr(model, "forward", oracle)
    result = evaluate(model, data, "test", data.tasks, 4, CPU)
    assert result.pred["ner"] == [list(ner)] == result.gold["ner"]
    assert result.metrics["ner"]["f1"] == 1.0
