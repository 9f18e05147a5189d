"""CNN-BiLSTM blocks: shapes, the 533,930-parameter encoder, padding invariance, GloVe loading,
word dropout, initialisation and the deviations from Sun et al.'s model."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest
import torch

from mtlrun.backbones.accounting import count_parameters, counted_parameters
from mtlrun.backbones.base import SeqState
from mtlrun.backbones.cnn_bilstm import CNNBiLSTM
from mtlrun.data.base import InputSpec, Task, TextInputs
from mtlrun.errors import DataError

WORDS = ("<pad>", "<unk>", "the", "cat", "paris", "sat")
SPEC = InputSpec("text", n_words=len(WORDS), n_chars=12, words=WORDS)
TINY = {"word_dim": 4, "char_dim": 3, "char_filters": 5, "char_width": 3, "hidden": 6}


def sentence(word_ids: list[int], word_lengths: list[int], width: int) -> TextInputs:
    """One sentence as a batch of one; chars of word i are ids 2.. (word_lengths[i] of them)."""
    chars = torch.zeros(1, len(word_ids), width, dtype=torch.long)
    for i, (word, n) in enumerate(zip(word_ids, word_lengths, strict=True)):
        chars[0, i, :n] = (torch.arange(n) + word) % 10 + 2
    return TextInputs(torch.tensor([word_ids]), chars, torch.tensor([len(word_ids)]))


def stack(a: TextInputs, b: TextInputs) -> TextInputs:
    """Pad two single-sentence batches to a common (L, C) and stack them."""
    length = max(a.words.size(1), b.words.size(1))
    width = max(a.chars.size(2), b.chars.size(2))
    words = torch.zeros(2, length, dtype=torch.long)
    chars = torch.zeros(2, length, width, dtype=torch.long)
    for row, s in enumerate((a, b)):
        n, c = s.words.size(1), s.chars.size(2)
        words[row, :n] = s.words[0]
        chars[row, :n, :c] = s.chars[0]
    return TextInputs(words, chars, torch.cat([a.lengths, b.lengths]))


def test_default_encoder_has_533930_parameters() -> None:
    backbone = CNNBiLSTM(input_spec=SPEC)
    embed, bilstm = backbone.make_block("embed"), backbone.make_block("bilstm")
    assert count_parameters(embed) == 2_730
    assert count_parameters(bilstm) == 531_200
    assert count_parameters(embed) + count_parameters(bilstm) == 533_930
    assert count_parameters(backbone.make_block("bilstm2")) == 963_200
    assert {name.split(".")[0] for name, _ in counted_parameters(embed)} == {"char_cnn"}


def test_char_proj_adds_fastnlps_linear_layer() -> None:
    backbone = CNNBiLSTM(input_spec=SPEC, char_proj=True)
    assert count_parameters(backbone.make_block("embed")) == 2_730 + 30 * 30 + 30
    assert not any("no Linear(30, 30)" in d for d in backbone.deviations)
    assert any("no Linear(30, 30)" in d for d in CNNBiLSTM(input_spec=SPEC).deviations)


@pytest.mark.parametrize("char_proj", [False, True])
def test_embed_forward_tasks_equals_one_forward_per_task(char_proj: bool) -> None:
    torch.manual_seed(0)
    embed = CNNBiLSTM(input_spec=SPEC, **TINY, char_proj=char_proj).make_block("embed").eval()
    batch = stack(sentence([2, 3, 5], [3, 1, 4], 4), sentence([4, 1], [2, 5], 5))
    shared = dict(embed.named_parameters())
    params = [
        {k: v if "embedding" in k else v * (1 + 0.5 * t) for k, v in shared.items()}
        for t in range(3)
    ]
    fused = embed.forward_tasks([batch] * 3, params)
    for t, p in enumerate(params):
        alone = torch.func.functional_call(embed, p, (batch,))
        torch.testing.assert_close(fused[t].x, alone.x)


def test_block_and_head_shapes() -> None:
    backbone = CNNBiLSTM(input_spec=SPEC, **TINY)
    batch = stack(sentence([2, 3, 5], [3, 3, 3], 3), sentence([4, 1], [5, 2], 5))
    embedded = backbone.make_block("embed")(batch)
    assert isinstance(embedded, SeqState)
    assert embedded.x.shape == (2, 3, 4 + 5)
    encoded = backbone.make_block("bilstm")(embedded)
    assert encoded.x.shape == (2, 3, 12)
    assert backbone.make_block("bilstm2")(encoded).x.shape == (2, 3, 12)
    assert torch.equal(encoded.lengths, batch.lengths)
    logits = backbone.make_head(Task("ner", "f1", ("O", "B-PER", "I-PER")))(encoded)
    assert logits.shape == (2, 3, 3)
    assert backbone.make_head(Task("pos", "accuracy", ("a", "b")), "embed")(embedded).shape == (
        2,
        3,
        2,
    )


def test_padding_does_not_change_the_outputs() -> None:
    torch.manual_seed(0)
    backbone = CNNBiLSTM(input_spec=SPEC, **TINY)
    embed, bilstm = backbone.make_block("embed").eval(), backbone.make_block("bilstm").eval()
    long, short = sentence([2, 3, 5, 4], [3, 1, 6, 2], 6), sentence([4, 1], [2, 4], 4)
    with torch.no_grad():
        together = bilstm(embed(stack(long, short))).x
        alone = [bilstm(embed(s)).x[0] for s in (long, short)]
    torch.testing.assert_close(together[0], alone[0])
    torch.testing.assert_close(together[1, :2], alone[1])
    assert together[1, 2:].abs().max() == 0  # padding positions are zeros


def test_padding_words_get_zero_char_features() -> None:
    embed = CNNBiLSTM(input_spec=SPEC, **TINY).make_block("embed")
    chars = torch.zeros(1, 2, 3, dtype=torch.long)
    chars[0, 0, :2] = torch.tensor([3, 4])
    features = embed.char_features(chars)
    assert torch.isfinite(features).all()
    assert features[0, 1].abs().max() == 0


def write_glove(path: Path, lines: list[str]) -> str:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def test_glove_rows_loaded_lowercased_as_fastnlp_static_embedding(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # ids 2-4 are training forms, 5-6 forms seen only in valid/test (n_train_words = 5).
    words = ("<pad>", "<unk>", "the", "Paris", "zzz", "london", "qqq")
    spec = InputSpec("text", n_words=7, n_chars=12, words=words, n_train_words=5)
    file = write_glove(
        tmp_path / "glove.txt",
        ["the 1 2 3 4", "paris 5 6 7 8", "<pad> 9 9 9 9", "london -1 -2 -3 -4", "other 0 0 0 0"],
    )
    torch.manual_seed(0)
    with caplog.at_level(logging.INFO, logger="mtlrun.backbones.cnn_bilstm"):
        backbone = CNNBiLSTM(input_spec=spec, **TINY, word_vectors=file)
    assert "3 of 5 word forms found" in caplog.text
    embed = backbone.make_block("embed").eval()
    table = embed.word_embedding.weight
    assert table[2].tolist() == [1, 2, 3, 4]
    assert table[3].tolist() == [5, 6, 7, 8]  # "Paris" found lower-cased
    assert table[5].tolist() == [-1, -2, -3, -4]  # valid/test-only form with a vector
    assert table[0].abs().max() == 0  # the padding row stays zero ("<pad> 9 9 9 9" ignored)
    assert table[1].abs().max() == 0  # the unknown row starts at zero, as in fastNLP
    assert 0 < table[4].abs().max() <= 3**0.5 / 2  # training form not found: U(+-sqrt(3/4))
    # A valid/test-only form the file lacks reads the unknown row.
    assert embed.word_rows.tolist() == [0, 1, 2, 3, 4, 5, 1]
    ids = embed.word_ids(torch.tensor([[6, 1, 5, 0]]))
    assert ids.tolist() == [[1, 1, 5, 0]]
    digest = hashlib.sha256(Path(file).read_bytes()).hexdigest()
    notes = " | ".join(backbone.deviations)
    assert f"sha256 {digest}, 5 lines, 3 of 5 word forms found" in notes
    assert "random word embeddings" not in notes


def test_without_word_vectors_unseen_forms_read_unknown_and_it_is_a_deviation() -> None:
    spec = InputSpec("text", n_words=4, n_chars=5, words=WORDS[:4], n_train_words=3)
    backbone = CNNBiLSTM(input_spec=spec, **TINY)
    assert backbone.make_block("embed").word_rows.tolist() == [0, 1, 2, 1]
    assert any(d.startswith("random word embeddings") for d in backbone.deviations)


def test_an_empty_word_vectors_path_is_one_error_naming_the_key() -> None:
    """``MTLRUN_WORD_VECTORS=`` (set but empty) gave "." and "cannot read ... Is a directory"."""
    spec = InputSpec("text", n_words=4, n_chars=5, words=WORDS[:4], n_train_words=3)
    for empty in ("", "  "):
        with pytest.raises(ValueError, match=r"`backbone.word_vectors` is empty"):
            CNNBiLSTM(input_spec=spec, **TINY, word_vectors=empty)


def test_word_dropout_replaces_words_by_unknown_in_training_only() -> None:
    backbone = CNNBiLSTM(input_spec=SPEC, **TINY, word_dropout=0.3)
    embed = backbone.make_block("embed")
    words = torch.tensor([[2, 3, 4, 5, 0, 0]]).repeat(2000, 1)
    torch.manual_seed(0)
    dropped = embed.train().word_ids(words)
    assert (dropped[:, 4:] == 0).all()  # padding is never dropped
    changed = dropped[:, :4] != words[:, :4]
    assert (dropped[:, :4][changed] == 1).all()  # dropped words become <unk>
    assert abs(changed.float().mean().item() - 0.3) < 0.02
    assert torch.equal(embed.eval().word_ids(words), words)


@pytest.mark.parametrize("init", ["fastnlp", "ma_hovy"])
def test_lstm_initialisation(init: str) -> None:
    torch.manual_seed(0)
    lstm = CNNBiLSTM(input_spec=SPEC, **TINY, init=init).make_block("bilstm").lstm
    hidden, fan_in = 6, 4 + 5
    forget = slice(hidden, 2 * hidden)
    for name, param in lstm.named_parameters():
        if name.startswith("bias"):
            expected = torch.zeros(4 * hidden)
            if init == "fastnlp" or name.startswith("bias_ih"):
                expected[forget] = 1.0  # fastNLP sets it in b_ih and b_hh: forget bias 2
            assert torch.equal(param.detach(), expected), name
        else:
            columns = fan_in if "ih" in name else hidden
            rows = 4 * hidden if init == "fastnlp" else hidden  # Glorot fan: stack or gate
            bound = (6 / (rows + columns)) ** 0.5
            assert param.abs().max() <= bound
            assert param.abs().max() > 0.8 * bound, name


def test_char_activation_relu_gives_nonnegative_char_features() -> None:
    torch.manual_seed(0)
    chars = sentence([2, 3, 4, 5], [3, 2, 4, 1], 4).chars
    relu = CNNBiLSTM(input_spec=SPEC, **TINY).make_block("embed").eval()
    assert (relu.char_features(chars) >= 0).all()
    plain = CNNBiLSTM(input_spec=SPEC, **TINY, char_activation="none").make_block("embed").eval()
    assert (plain.char_features(chars) < 0).any()


def test_deviations_name_the_options_that_differ_from_the_authors() -> None:
    default = CNNBiLSTM(input_spec=SPEC)
    assert len(default.deviations) == 4
    assert default.deviations[0].startswith("one BiLSTM layer: the authors' run_conll03.sh")
    changed = CNNBiLSTM(
        input_spec=SPEC, init="ma_hovy", word_dropout=0.0, char_activation="none", hidden=100
    )
    notes = " | ".join(changed.deviations)
    assert "hidden = 100 (theirs 200), word_dropout = 0.0 (theirs 0.01)" in notes
    assert "initialisation of Ma & Hovy" in notes
    assert "no ReLU after the char CNN" in notes


@pytest.mark.parametrize(
    ("lines", "line_no", "text"),
    [
        (["the 1 2 3 4", "cat 1 2 3"], 2, "expected a word and 4 numbers"),
        (["the 1 2 x 4"], 1, "unreadable number"),
    ],
)
def test_bad_glove_line_names_file_and_line(
    tmp_path: Path, lines: list[str], line_no: int, text: str
) -> None:
    file = write_glove(tmp_path / "glove.txt", lines)
    with pytest.raises(DataError, match=rf"glove\.txt:{line_no}: {text}"):
        CNNBiLSTM(input_spec=SPEC, **TINY, word_vectors=file)


def test_missing_glove_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"missing\.txt: cannot read the word vectors file"):
        CNNBiLSTM(input_spec=SPEC, word_vectors=str(tmp_path / "missing.txt"))


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        ({"modality": "image"}, "`modality` should be 'text'"),
        ({"char_width": 4}, "`char_width` should be an odd integer >= 1"),
        ({"hidden": 0}, "`hidden` should be >= 1"),
        ({"dropout": 1.0}, r"`dropout` should be in \[0, 1\)"),
        ({"word_dropout": -0.1}, r"`word_dropout` should be in \[0, 1\)"),
        (
            {"init": "xavier", "char_activation": "tanh"},
            r"`init` should be one of \['fastnlp', 'ma_hovy'\]\. Found `init = 'xavier'`\. "
            r"`char_activation` should be one of \['relu', 'none'\]\. "
            r"Found `char_activation = 'tanh'`\.",
        ),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], text: str) -> None:
    with pytest.raises(ValueError, match=text):
        CNNBiLSTM(input_spec=SPEC, **kwargs)  # type: ignore[arg-type]


def test_unknown_block_and_image_data_are_refused() -> None:
    backbone = CNNBiLSTM(input_spec=SPEC, **TINY)
    with pytest.raises(ValueError, match="no block 'conv1'"):
        backbone.make_block("conv1")
    with pytest.raises(ValueError, match="needs text data"):
        CNNBiLSTM(input_spec=InputSpec("image", channels=1, height=28, width=28))
