"""CNN-BiLSTM blocks: shapes, the 533,930-parameter encoder, padding invariance, GloVe loading."""

from __future__ import annotations

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


def test_glove_rows_are_loaded_exact_then_lowercase(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spec = InputSpec("text", n_words=5, n_chars=12, words=("<pad>", "<unk>", "the", "Paris", "zzz"))
    file = write_glove(
        tmp_path / "glove.txt",
        ["the 1 2 3 4", "paris 5 6 7 8", "<pad> 9 9 9 9", "other 0 0 0 0"],
    )
    with caplog.at_level(logging.INFO, logger="mtlrun.backbones.cnn_bilstm"):
        backbone = CNNBiLSTM(input_spec=spec, **TINY, embeddings=file)
    assert "2 of 4 words found" in caplog.text
    table = backbone.make_block("embed").word_embedding.weight
    assert table[2].tolist() == [1, 2, 3, 4]
    assert table[3].tolist() == [5, 6, 7, 8]
    assert table[0].abs().max() == 0  # the padding row stays zero
    assert table[4].abs().max() < 1  # not found: random U(+-sqrt(3/4))


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
        CNNBiLSTM(input_spec=SPEC, **TINY, embeddings=file)


def test_missing_glove_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot read the embeddings file"):
        CNNBiLSTM(input_spec=SPEC, embeddings=str(tmp_path / "missing.txt"))


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        ({"modality": "image"}, "`modality` should be 'text'"),
        ({"char_width": 4}, "`char_width` should be an odd integer >= 1"),
        ({"hidden": 0}, "`hidden` should be >= 1"),
        ({"dropout": 1.0}, r"`dropout` should be in \[0, 1\)"),
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
