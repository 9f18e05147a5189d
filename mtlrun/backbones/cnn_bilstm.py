"""CNN-BiLSTM sequence tagger (Ma & Hovy, ACL 2016) with softmax heads, as a factory of blocks.

Trunk: ``embed`` (word embedding + max-pooled char CNN) -> ``bilstm``; ``make_head`` builds one
linear softmax layer per task. ``bilstm2`` is an extra block reading a ``bilstm`` output (a
second BiLSTM layer, for hierarchical sharing). With the defaults the encoder (char CNN +
BiLSTM, embeddings excluded) has 2,730 + 531,200 = 533,930 parameters, the unit of seed 000's
"# Params" column; ``bilstm2`` has 963,200.

Initialisation follows Ma & Hovy §3.1: embeddings U(±sqrt(3/dim)), Glorot-uniform weight
matrices, zero biases except the LSTM forget gate (1).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from mtlrun.backbones.base import SeqState, check_modality, require
from mtlrun.data.base import InputSpec, Task, TextInputs
from mtlrun.errors import DataError

log = logging.getLogger(__name__)

PADDING_ID = 0  # word id and char id 0 are padding (see TextInputs)


# ------------------------------------------------------------------ initialisation


def _init_embedding(embedding: nn.Embedding) -> None:
    """U(-sqrt(3/dim), +sqrt(3/dim)) (Ma & Hovy §3.1); the padding row stays zero."""
    bound = math.sqrt(3.0 / embedding.embedding_dim)
    with torch.no_grad():
        embedding.weight.uniform_(-bound, bound)
        if embedding.padding_idx is not None:
            embedding.weight[embedding.padding_idx].zero_()


def _init_glorot(layer: nn.Conv1d | nn.Linear) -> None:
    """Glorot-uniform weights, zero bias (Ma & Hovy §3.1)."""
    nn.init.xavier_uniform_(layer.weight)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


def _init_lstm(lstm: nn.LSTM) -> None:
    """Glorot-uniform per gate matrix, zero biases except forget gate = 1 (Ma & Hovy §3.1)."""
    hidden = lstm.hidden_size
    with torch.no_grad():
        for name, param in lstm.named_parameters():
            if name.startswith("weight"):
                # PyTorch stacks the four gates (i, f, g, o); Glorot's fan is per gate matrix.
                for gate in param.chunk(4, dim=0):
                    nn.init.xavier_uniform_(gate)
            else:
                param.zero_()
                if name.startswith("bias_ih"):
                    # The LSTM adds b_ih + b_hh, so one of the two carries the forget bias.
                    param[hidden : 2 * hidden] = 1.0


# -------------------------------------------------------------------------- blocks


class CharWordEmbed(nn.Module):
    """Block ``embed``: [word embedding; max-pooled char CNN], then dropout (Ma & Hovy §2.1).

    Input :class:`TextInputs` (words (B, L), chars (B, L, C), lengths (B,)); output
    :class:`SeqState` with x (B, L, word_dim + char_filters). Padding chars are masked out of
    the max-pool; padding words (no chars) get zero char features. The embedding tables are
    ``uncounted`` (outside the "# Params" unit).
    """

    uncounted = ("word_embedding", "char_embedding")

    def __init__(
        self,
        n_words: int,
        n_chars: int,
        word_dim: int,
        char_dim: int,
        char_filters: int,
        char_width: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.word_embedding = nn.Embedding(n_words, word_dim, padding_idx=PADDING_ID)
        self.char_embedding = nn.Embedding(n_chars, char_dim, padding_idx=PADDING_ID)
        # Odd width with width // 2 padding keeps one output per char position (for the mask).
        self.char_cnn = nn.Conv1d(char_dim, char_filters, char_width, padding=char_width // 2)
        self.dropout = nn.Dropout(dropout)
        _init_embedding(self.word_embedding)
        _init_embedding(self.char_embedding)
        _init_glorot(self.char_cnn)

    def forward(self, inputs: TextInputs) -> SeqState:
        words = self.word_embedding(inputs.words)
        chars = self.char_features(inputs.chars)
        x = torch.cat([words, chars], dim=-1)
        return SeqState(self.dropout(x), inputs.lengths)

    def char_features(self, chars: Tensor) -> Tensor:
        """Char ids (B, L, C) -> per-word features (B, L, char_filters)."""
        batch, length, width = chars.shape
        flat = chars.reshape(batch * length, width)
        # Conv1d wants channels first: (B*L, char_dim, C).
        conv = self.char_cnn(self.char_embedding(flat).transpose(1, 2))
        is_char = (flat != PADDING_ID).unsqueeze(1)  # (B*L, 1, C)
        pooled = conv.masked_fill(~is_char, float("-inf")).amax(dim=2)
        # All-padding words would pool to -inf: give them zeros instead.
        pooled = torch.where(is_char.any(dim=2), pooled, torch.zeros_like(pooled))
        return pooled.reshape(batch, length, -1)


class BiLSTMBlock(nn.Module):
    """Block ``bilstm`` / ``bilstm2``: one bidirectional LSTM layer, then dropout.

    Input :class:`SeqState` x (B, L, input_size); output x (B, L, 2 * hidden), zero at padding
    positions. Packed by ``lengths``, so padding never reaches the recurrence.
    """

    def __init__(self, input_size: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.lstm = nn.LSTM(input_size, hidden, batch_first=True, bidirectional=True)
        self.dropout = nn.Dropout(dropout)
        _init_lstm(self.lstm)

    def forward(self, state: SeqState) -> SeqState:
        packed = pack_padded_sequence(
            state.x, state.lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        out, _ = self.lstm(packed)
        x, _ = pad_packed_sequence(out, batch_first=True, total_length=state.x.size(1))
        return SeqState(self.dropout(x), state.lengths)


class TagHead(nn.Module):
    """A task's softmax layer (Ma & Hovy's non-CRF variant): state.x (B, L, D) -> logits (B, L, C)."""

    def __init__(self, in_features: int, n_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, n_classes)
        _init_glorot(self.linear)

    def forward(self, state: SeqState) -> Tensor:
        return self.linear(state.x)


# ------------------------------------------------------------ pretrained embeddings


def _is_header(parts: list[str]) -> bool:
    """word2vec/fastText text files start with "<count> <dim>"; GloVe files do not."""
    return len(parts) == 2 and all(p.isdigit() for p in parts)


def _read_vectors(path: Path, wanted: set[str], dim: int) -> dict[str, list[float]]:
    """The vectors of the ``wanted`` forms in a GloVe text file (``word v1 ... v_dim`` lines).

    Every line's width is checked; numbers are parsed for wanted forms only (a malformed
    number elsewhere cannot reach the model, and parsing all of GloVe 840B takes minutes).
    """
    found: dict[str, list[float]] = {}
    try:
        with path.open("rb") as lines:
            for line_no, raw in enumerate(lines, start=1):
                where = f"{path}:{line_no}"
                try:
                    parts = raw.decode("utf-8").split()
                except UnicodeDecodeError as err:
                    raise DataError(f"{where}: not UTF-8 text ({err.reason})") from None
                if not parts or (line_no == 1 and _is_header(parts)):
                    continue
                if len(parts) != dim + 1:
                    raise DataError(
                        f"{where}: expected a word and {dim} numbers (the backbone's word_dim), "
                        f"found {len(parts) - 1} numbers"
                    )
                if parts[0] in wanted and parts[0] not in found:
                    try:
                        found[parts[0]] = [float(v) for v in parts[1:]]
                    except ValueError as err:
                        raise DataError(f"{where}: unreadable number ({err})") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read the embeddings file ({err.strerror})") from None
    return found


def load_pretrained(path: str | Path, words: Sequence[str], dim: int) -> tuple[Tensor, Tensor]:
    """Rows of the word table found in a GloVe-format file: (row ids (N,), vectors (N, dim)).

    ``words[i]`` is the form of word id i; each is looked up by exact form, then lower-cased.
    Row 0 (padding) is never set. Raises :class:`DataError` naming file:line on a bad line.
    """
    path = Path(path)
    forms = list(words)
    found = _read_vectors(path, set(forms) | {w.lower() for w in forms}, dim)
    rows: list[int] = []
    vectors: list[list[float]] = []
    for row, form in enumerate(forms):
        vector = found.get(form) or found.get(form.lower())
        if row != PADDING_ID and vector is not None:
            rows.append(row)
            vectors.append(vector)
    log.info("pretrained embeddings: %d of %d words found in %s", len(rows), len(forms) - 1, path)
    return torch.tensor(rows, dtype=torch.long), torch.tensor(vectors).reshape(len(rows), dim)


# ------------------------------------------------------------------------ backbone


def _require(ok: bool, message: str) -> None:
    require("CNNBiLSTM", ok, message)


class CNNBiLSTM:
    """Ma & Hovy (2016) CNN-BiLSTM tagger as a block factory (METHODS.md §3).

    Blocks (each call returns fresh parameters from the global torch RNG):
    ``embed``: :class:`TextInputs` -> x (B, L, word_dim + char_filters);
    ``bilstm``: x (B, L, word_dim + char_filters) -> x (B, L, 2 * hidden);
    ``bilstm2`` (not in ``block_names``): x (B, L, 2 * hidden) -> x (B, L, 2 * hidden), a second
    BiLSTM layer stacked on ``bilstm`` for hierarchical sharing (Søgaard & Goldberg 2016).
    Heads: x (B, L, D) -> logits (B, L, n_classes). ``embeddings`` is an optional GloVe-format
    file, read once here; its vectors initialise the matching rows of every new ``embed``.
    """

    modality = "text"
    block_names = ("embed", "bilstm")

    def __init__(
        self,
        *,
        input_spec: InputSpec,
        modality: str = "text",
        word_dim: int = 100,
        char_dim: int = 30,
        char_filters: int = 30,
        char_width: int = 3,
        hidden: int = 200,
        dropout: float = 0.5,
        embeddings: str | None = None,
    ) -> None:
        check_modality("CNNBiLSTM", "text", modality, input_spec)
        _require(
            input_spec.n_words > 0 and input_spec.n_chars > 0, "the data set has no vocabulary."
        )
        for name, value in [
            ("word_dim", word_dim),
            ("char_dim", char_dim),
            ("char_filters", char_filters),
            ("hidden", hidden),
        ]:
            _require(value >= 1, f"`{name}` should be >= 1. Found `{name} = {value}`.")
        _require(
            char_width >= 1 and char_width % 2 == 1,
            f"`char_width` should be an odd integer >= 1. Found `char_width = {char_width}`.",
        )
        _require(
            0.0 <= dropout < 1.0, f"`dropout` should be in [0, 1). Found `dropout = {dropout}`."
        )
        self.input_spec = input_spec
        self.word_dim, self.char_dim = word_dim, char_dim
        self.char_filters, self.char_width = char_filters, char_width
        self.hidden, self.dropout = hidden, dropout
        self.out_features = {
            "embed": word_dim + char_filters,
            "bilstm": 2 * hidden,
            "bilstm2": 2 * hidden,
        }
        self.pretrained = self._load(embeddings)

    def _load(self, embeddings: str | None) -> tuple[Tensor, Tensor] | None:
        if embeddings is None:
            return None
        words = self.input_spec.words[: self.input_spec.n_words]
        _require(bool(words), "`embeddings` needs the data set's word forms (input_spec.words).")
        return load_pretrained(embeddings, words, self.word_dim)

    def make_block(self, name: str) -> nn.Module:
        """A fresh ``embed``, ``bilstm`` or ``bilstm2`` block (see the class docstring)."""
        builders: dict[str, Callable[[], nn.Module]] = {
            "embed": self._make_embed,
            "bilstm": lambda: BiLSTMBlock(self.out_features["embed"], self.hidden, self.dropout),
            "bilstm2": lambda: BiLSTMBlock(2 * self.hidden, self.hidden, self.dropout),
        }
        _require(name in builders, f"no block {name!r}; blocks are {list(builders)}.")
        return builders[name]()

    def _make_embed(self) -> CharWordEmbed:
        spec = self.input_spec
        block = CharWordEmbed(
            spec.n_words,
            spec.n_chars,
            self.word_dim,
            self.char_dim,
            self.char_filters,
            self.char_width,
            self.dropout,
        )
        if self.pretrained is not None:
            rows, vectors = self.pretrained
            with torch.no_grad():
                block.word_embedding.weight[rows] = vectors
        return block

    def make_head(self, task: Task, in_block: str | None = None) -> nn.Module:
        """A fresh softmax layer for ``task`` reading block ``in_block`` (default: ``bilstm``)."""
        source = in_block or "bilstm"
        _require(
            source in self.out_features,
            f"a head cannot read block {source!r}; blocks are {list(self.out_features)}.",
        )
        return TagHead(self.out_features[source], task.n_classes)
