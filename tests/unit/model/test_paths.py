"""MultiTaskModel: paths and O(i), shared-prefix caching, peel, parameter accounting."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch import nn

from mtlrun.backbones.cnn_bilstm import CNNBiLSTM
from mtlrun.data.base import InputSpec, Task, TextInputs
from mtlrun.methods.hard import HardSharing
from mtlrun.methods.single import SingleTask
from mtlrun.model.paths import MultiTaskModel

TEXT = InputSpec("text", n_words=20, n_chars=10)
TINY = {"word_dim": 8, "char_dim": 4, "char_filters": 4, "hidden": 6}
TASKS = [Task(n, "accuracy", ("x", "y", "z")) for n in ("a", "b", "c")]
ENCODER = 533_930  # seed 000 Table 4.2 "Hard": char CNN 2,730 + BiLSTM 531,200


def tiny_backbone(**kwargs: object) -> CNNBiLSTM:
    return CNNBiLSTM(input_spec=TEXT, **{**TINY, **kwargs})  # type: ignore[arg-type]


def text_batch() -> TextInputs:
    lengths = torch.tensor([5, 3])
    words = torch.randint(2, 20, (2, 5)) * (torch.arange(5) < lengths[:, None])
    chars = torch.randint(2, 10, (2, 5, 4)) * (words[..., None] > 0)
    return TextInputs(words, chars, lengths)


def count_calls(model: MultiTaskModel) -> Counter[str]:
    """Counts forward calls per block name (forward hooks on every block)."""
    calls: Counter[str] = Counter()
    for name, block in model.blocks.items():
        block.register_forward_hook(lambda _m, _i, _o, name=name: calls.update([name]))
    return calls


class Affine(nn.Module):
    """y = w * x + b on scalars-per-row tensors: easy to predict by hand."""

    def __init__(self, w: float, b: float) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w))
        self.b = nn.Parameter(torch.tensor(b))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w * x + self.b


# ---------------------------------------------------------------------- structure


def test_hard_paths_users_and_trunk() -> None:
    model = HardSharing().build(tiny_backbone(), TASKS)
    assert model.tasks == ["a", "b", "c"]
    assert model.paths == {t: ("embed", "bilstm", f"head:{t}") for t in "abc"}
    assert model.users("embed") == ["a", "b", "c"]
    assert model.users("bilstm") == ["a", "b", "c"]
    assert model.users("head:b") == ["b"]
    assert model.users("nowhere") == []
    assert model.head("c") == "head:c"
    assert model.trunk_blocks() == ["embed", "bilstm"]
    assert model.shared_blocks() == ["embed", "bilstm"]


def test_single_paths_users_and_trunk() -> None:
    model = SingleTask().build(tiny_backbone(), TASKS)
    assert model.paths == {t: (f"embed:{t}", f"bilstm:{t}", f"head:{t}") for t in "abc"}
    for t in "abc":
        assert model.users(f"embed:{t}") == [t]
        assert model.users(f"bilstm:{t}") == [t]
        assert model.users(f"head:{t}") == [t]
    assert model.trunk_blocks() == [f"{b}:{t}" for t in "abc" for b in ("embed", "bilstm")]
    assert model.shared_blocks() == []


def test_branching_tree_users() -> None:
    blocks = {n: nn.Identity() for n in ("root", "left", "right", "h1", "h2", "h3")}
    paths = {
        "t1": ["root", "left", "h1"],
        "t2": ["root", "left", "h2"],
        "t3": ["root", "right", "h3"],
    }
    model = MultiTaskModel(blocks, paths)
    assert model.users("root") == ["t1", "t2", "t3"]
    assert model.users("left") == ["t1", "t2"]
    assert model.users("right") == ["t3"]
    assert model.trunk_blocks() == ["root", "left", "right"]
    assert model.shared_blocks() == ["root", "left"]


@pytest.mark.parametrize(
    "paths",
    [{"a": ["embed", "missing", "head"]}, {"a": ["embed", "head"], "b": []}],
    ids=["unknown-block", "empty-path"],
)
def test_bad_path_is_a_value_error(paths: dict[str, list[str]]) -> None:
    blocks = {"embed": nn.Identity(), "head": nn.Identity()}
    with pytest.raises(ValueError, match="path of task"):
        MultiTaskModel(blocks, paths)


def test_unknown_block_message_names_task_and_block() -> None:
    with pytest.raises(ValueError, match=r"task 'a' names unknown blocks \['oops'\]"):
        MultiTaskModel({"h": nn.Identity()}, {"a": ["oops", "h"]})


# ------------------------------------------------------------------------ forward


def test_hard_sharing_runs_the_trunk_once_per_forward() -> None:
    model = HardSharing().build(tiny_backbone(), TASKS)
    calls = count_calls(model)
    out = model(text_batch())
    assert set(out) == {"a", "b", "c"}
    assert calls == {"embed": 1, "bilstm": 1, "head:a": 1, "head:b": 1, "head:c": 1}
    for logits in out.values():
        assert logits.shape == (2, 5, 3)
    model(text_batch())  # the cache lives for one forward only
    assert calls["embed"] == 2 and calls["head:a"] == 2


def test_single_runs_every_block_once() -> None:
    model = SingleTask().build(tiny_backbone(), TASKS)
    calls = count_calls(model)
    model(text_batch())
    assert calls == Counter({name: 1 for name in model.blocks})
    assert len(calls) == 9


def test_forward_on_a_subset_of_tasks() -> None:
    model = HardSharing().build(tiny_backbone(), TASKS)
    calls = count_calls(model)
    out = model(text_batch(), tasks=["c", "a"])
    assert list(out) == ["c", "a"]
    assert calls == {"embed": 1, "bilstm": 1, "head:c": 1, "head:a": 1}


def test_prefix_cache_is_keyed_by_the_whole_prefix() -> None:
    """A block reached through different prefixes sees different inputs: no false sharing."""
    blocks = {
        "A": Affine(2.0, 0.0),
        "B": Affine(3.0, 0.0),
        "C": Affine(1.0, 1.0),
        "h1": Affine(1.0, 0.0),
        "h2": Affine(1.0, 0.0),
        "h3": Affine(10.0, 0.0),
    }
    paths = {"t1": ["A", "C", "h1"], "t2": ["B", "C", "h2"], "t3": ["A", "C", "h3"]}
    model = MultiTaskModel(blocks, paths)
    calls = count_calls(model)
    out = model(torch.tensor([1.0, 2.0]))
    assert torch.equal(out["t1"], torch.tensor([3.0, 5.0]))  # 2x + 1
    assert torch.equal(out["t2"], torch.tensor([4.0, 7.0]))  # 3x + 1
    assert torch.equal(out["t3"], torch.tensor([30.0, 50.0]))  # 10 (2x + 1)
    # A -> C shared by t1 and t3 (computed once); B -> C is another computation of C.
    assert calls == {"A": 1, "B": 1, "C": 2, "h1": 1, "h2": 1, "h3": 1}


def test_shared_and_unshared_forward_agree() -> None:
    """Caching changes the cost, not the result: each task's output equals its path run alone."""
    torch.manual_seed(0)
    model = HardSharing().build(tiny_backbone(), TASKS).eval()
    batch = text_batch()
    together = model(batch)
    for t in "abc":
        alone = model(batch, tasks=[t])[t]
        assert torch.equal(together[t], alone)


# --------------------------------------------------------------------------- peel


def test_peel_is_an_independent_copy_of_one_path() -> None:
    torch.manual_seed(0)
    model = HardSharing().build(tiny_backbone(), TASKS).eval()
    peeled = model.peel("b").eval()
    assert peeled.tasks == ["b"]
    assert list(peeled.blocks) == ["embed", "bilstm", "head:b"]
    assert peeled.paths == {"b": ("embed", "bilstm", "head:b")}
    batch = text_batch()
    assert torch.equal(peeled(batch)["b"], model(batch)["b"])
    for name, param in peeled.named_parameters():
        assert param.data_ptr() != dict(model.named_parameters())[name].data_ptr()

    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for param in peeled.parameters():
            param.add_(1.0)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not torch.equal(peeled(batch)["b"], model(batch)["b"])


# --------------------------------------------------------------------- accounting


def test_param_counts_hard_default_cnn_bilstm() -> None:
    model = HardSharing().build(CNNBiLSTM(input_spec=TEXT), TASKS)
    counts = model.param_counts()
    assert counts == {
        "supernet": ENCODER,
        "used": ENCODER,
        "per_task": {"a": ENCODER, "b": ENCODER, "c": ENCODER},
    }
    # Embeddings and heads exist but are outside the unit.
    assert sum(p.numel() for p in model.parameters()) > ENCODER


def test_param_counts_single_default_cnn_bilstm() -> None:
    model = SingleTask().build(CNNBiLSTM(input_spec=TEXT), TASKS)
    counts = model.param_counts()
    assert counts == {
        "supernet": 1_601_790,
        "used": 1_601_790,
        "per_task": {"a": ENCODER, "b": ENCODER, "c": ENCODER},
    }


def test_param_counts_exclude_heads_count_unused_blocks_in_supernet_only() -> None:
    blocks = {
        "shared": nn.Linear(3, 4),  # 16
        "own": nn.Linear(4, 4),  # 20
        "unused": nn.Linear(2, 2),  # 6: in the supernet, active for no task
        "h1": nn.Linear(4, 2),
        "h2": nn.Linear(4, 5),
    }
    model = MultiTaskModel(blocks, {"t1": ["shared", "own", "h1"], "t2": ["shared", "h2"]})
    assert model.param_counts() == {
        "supernet": 16 + 20 + 6,
        "used": 16 + 20,
        "per_task": {"t1": 36, "t2": 16},
    }
    assert [n for n, _ in model.counted_named_parameters("own")] == ["weight", "bias"]
