"""The padded BiLSTM kernel computes the packed one's function: outputs and gradients agree to
float rounding on ragged, equal, single-token and badly scaled batches, for one task's weights
and for T tasks' weights run as one wide LSTM (sparse sharing)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from mtlrun.backbones.base import SeqState
from mtlrun.backbones.cnn_bilstm import BiLSTMBlock, CNNBiLSTM, padded_bilstm
from mtlrun.data.base import InputSpec

SPEC = InputSpec("text", n_words=6, n_chars=12, words=("<pad>", "<unk>", "a", "b", "c", "d"))

LENGTHS = {
    "ragged": [7, 1, 3, 7, 5],
    "equal": [6, 6, 6],
    "one sentence": [4],
    "single tokens": [1, 1],
}


def batch(lengths: list[int], width: int, scale: float, seed: int = 0) -> SeqState:
    """Random features (zero at padding, like the embed block's output) of the given lengths."""
    g = torch.Generator().manual_seed(seed)
    n = torch.tensor(lengths)
    x = torch.randn(len(lengths), int(n.max()), width, generator=g, dtype=torch.float64) * scale
    x = x.masked_fill(torch.arange(x.shape[1])[None, :, None] >= n[:, None, None], 0.0)
    return SeqState(x.float().requires_grad_(True), n)


def block(kernel: str, seed: int = 0, size: int = 5, hidden: int = 4) -> BiLSTMBlock:
    torch.manual_seed(seed)
    return BiLSTMBlock(size, hidden, dropout=0.0, kernel=kernel).train()


def outputs_and_grads(b: BiLSTMBlock, state: SeqState, probe: Tensor) -> list[Tensor]:
    """The block's output and the gradients of <output, probe> on the input and every weight."""
    y = b(state).x
    grads = torch.autograd.grad((y * probe).sum(), [state.x, *b.parameters()])
    return [y.detach(), *grads]


def assert_agree(a: list[Tensor], b: list[Tensor], rtol: float = 1e-4) -> None:
    """Equal up to float32 rounding, relative to each tensor's own magnitude."""
    for x, y in zip(a, b, strict=True):
        scale = float(x.abs().max()) + 1e-30
        assert float((x - y).abs().max()) <= rtol * scale + 1e-30, (x, y)


@pytest.mark.parametrize("scale", [1e-5, 1.0, 1e5])
@pytest.mark.parametrize("case", sorted(LENGTHS))
def test_padded_kernel_equals_packed_on_outputs_and_gradients(case: str, scale: float) -> None:
    state = batch(LENGTHS[case], 5, scale)
    probe = torch.randn(*state.x.shape[:2], 8, generator=torch.Generator().manual_seed(1))
    packed = outputs_and_grads(block("packed"), state, probe)
    padded = outputs_and_grads(block("padded"), state, probe)
    assert_agree(packed, padded)
    real = torch.arange(state.x.shape[1])[None, :] < state.lengths[:, None]
    assert torch.count_nonzero(padded[0][~real]) == 0  # padding positions are exact zeros
    assert torch.count_nonzero(padded[1][~real]) == 0  # and pass no gradient back


def test_padding_never_reaches_a_real_position() -> None:
    """Garbage at padding positions changes nothing at real ones (both directions)."""
    state = batch([5, 2, 3], 5, 1.0)
    noisy = state.x.detach().clone()
    pad = torch.arange(5)[None, :] >= state.lengths[:, None]
    noisy[pad] = 1e3
    b = block("padded")
    with torch.no_grad():
        clean, dirty = b(state).x, b(SeqState(noisy, state.lengths)).x
    torch.testing.assert_close(clean, dirty, rtol=0, atol=0)


def test_the_backward_direction_reads_each_sentence_from_its_own_end() -> None:
    """A reverse-only LSTM (forward weights zero) at the last real token has seen one token."""
    b = block("padded")
    with torch.no_grad():
        for name, p in b.lstm.named_parameters():
            if not name.endswith("_reverse"):
                p.zero_()
    state = batch([4, 2], 5, 1.0)
    alone = SeqState(state.x[1:, :2].detach(), state.lengths[1:])
    with torch.no_grad():
        y, y_alone = b(state).x, b(alone).x
    torch.testing.assert_close(y[1, :2], y_alone[0], rtol=0, atol=0)


@pytest.mark.parametrize("case", ["ragged", "equal"])
def test_wide_lstm_of_t_tasks_agrees_between_kernels(case: str) -> None:
    """forward_tasks (T tasks' weights as one block-diagonal LSTM) padded == packed == per task."""
    torch.manual_seed(0)
    blocks = {k: block(k) for k in ("packed", "padded")}
    blocks["padded"].load_state_dict(blocks["packed"].state_dict())
    base = dict(blocks["packed"].named_parameters())
    g = torch.Generator().manual_seed(2)
    params = [
        {k: v * (torch.rand(v.shape, generator=g) < 0.6) for k, v in base.items()} for _ in range(3)
    ]
    states = [batch(LENGTHS[case], 5, 1.0, seed=s) for s in range(3)]
    shared_lengths = [SeqState(s.x, states[0].lengths) for s in states]
    results = {}
    for kernel, b in blocks.items():
        ys = b.forward_tasks(shared_lengths, params)
        results[kernel] = [y.x.detach() for y in ys]
    one_by_one = [
        torch.func.functional_call(blocks["packed"], p, (s,)).x.detach()
        for p, s in zip(params, shared_lengths, strict=True)
    ]
    assert_agree(results["packed"], results["padded"])
    assert_agree(one_by_one, results["padded"])


def test_the_kernel_is_a_checked_backbone_option() -> None:
    for kernel in ("auto", "padded", "packed"):
        assert CNNBiLSTM(input_spec=SPEC, lstm_kernel=kernel).make_block("bilstm").kernel == kernel
    with pytest.raises(ValueError, match="`lstm_kernel` should be one of"):
        CNNBiLSTM(input_spec=SPEC, lstm_kernel="cudnn")


def test_padded_bilstm_runs_any_lstm_weights() -> None:
    """Direct use: weights of another block give that block's packed result."""
    packed = block("packed", seed=3)
    state = batch([3, 1], 5, 1.0)
    names = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")
    ahead = [getattr(packed.lstm, n) for n in names]
    back = [getattr(packed.lstm, f"{n}_reverse") for n in names]
    with torch.no_grad():
        direct = padded_bilstm(state.x, state.lengths, ahead, back, training=True)
        expected = packed(state).x
    assert_agree([expected], [direct])


def test_auto_pads_training_steps_and_packs_evaluation(monkeypatch: pytest.MonkeyPatch) -> None:
    """auto: the padded kernel where gradients flow, the packed one under no_grad."""
    import mtlrun.backbones.cnn_bilstm as module

    used: list[str] = []
    real = module.padded_bilstm

    def spy(*args: object, **kwargs: object) -> Tensor:
        used.append("padded")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(module, "padded_bilstm", spy)
    b, state = block("auto"), batch([3, 2], 5, 1.0)
    b(state)
    assert used == ["padded"]
    with torch.no_grad():
        b(state)
    assert used == ["padded"]  # evaluation went the packed way


@pytest.mark.parametrize("case", sorted(LENGTHS))
def test_pack_and_unpack_are_the_library_functions_without_their_syncs(case: str) -> None:
    """The packed kernel's own pack/unpack give exactly the tensors of pack_padded_sequence and
    pad_packed_sequence (which copy the sort order and the lengths between host and GPU with a
    wait each time)."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    from mtlrun.backbones.cnn_bilstm import pack, unpack

    state = batch(LENGTHS[case], 5, 1.0)
    ours = pack(state.x, state.lengths)
    library = pack_padded_sequence(state.x, state.lengths, batch_first=True, enforce_sorted=False)
    for a, b in zip(ours, library, strict=True):
        assert a is not None and b is not None
        assert torch.equal(a, b)
    total = state.x.shape[1] + 2  # total_length beyond the longest sentence pads with zeros
    expected, _ = pad_packed_sequence(library, batch_first=True, total_length=total)
    assert torch.equal(unpack(ours, total), expected)
