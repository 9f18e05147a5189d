"""CNN-BiLSTM sequence tagger (Ma & Hovy, ACL 2016) with softmax heads, as a factory of blocks.

Trunk: ``embed`` (word embedding + max-pooled char CNN) -> ``bilstm``; ``make_head`` builds one
linear softmax layer per task. ``bilstm2`` is an extra block reading a ``bilstm`` output (a
second BiLSTM layer, for hierarchical sharing). With the defaults the encoder (char CNN +
BiLSTM, embeddings excluded) has 2,730 + 531,200 = 533,930 parameters, the unit of seed 000's
"# Params" column; ``bilstm2`` has 963,200.

The defaults follow the model of Sun et al.'s code (``choosewhatulike/sparse-sharing``,
``src/models.py``, built from fastNLP 0.5.0's ``StaticEmbedding``, ``CNNCharEmbedding`` and
``LSTM``), which seed 000 copied, except where that would change seed 000's parameter counts;
:attr:`CNNBiLSTM.deviations` names every remaining difference.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import _VF, Tensor, nn
from torch.func import functional_call
from torch.nn.utils.rnn import PackedSequence

from mtlrun.backbones.base import SeqState, check_modality, require
from mtlrun.backbones.word_vectors import (
    PADDING_ID,
    UNKNOWN_ID,
    WordVectors,
    read_vectors,
    word_table,
)
from mtlrun.data.base import InputSpec, Task, TextInputs

log = logging.getLogger(__name__)

INITS = ("fastnlp", "ma_hovy")
CHAR_ACTIVATIONS = ("relu", "none")


# ------------------------------------------------------------------ initialisation
# ``fastnlp``: as Sun et al.'s model gets it from fastNLP 0.5.0 and PyTorch defaults;
# ``ma_hovy``: Ma & Hovy §3.1. Heads are Glorot-uniform with zero bias under both.


def _init_embedding(embedding: nn.Embedding) -> None:
    """U(-sqrt(3/dim), +sqrt(3/dim)) (Ma & Hovy §3.1; fastNLP's ``get_embeddings`` and its
    ``StaticEmbedding`` rows of words without a vector); the padding row, if any, stays zero."""
    bound = math.sqrt(3.0 / embedding.embedding_dim)
    with torch.no_grad():
        embedding.weight.uniform_(-bound, bound)
        if embedding.padding_idx is not None:
            embedding.weight[embedding.padding_idx].zero_()


def _init_glorot(layer: nn.Conv1d | nn.Linear) -> None:
    """Glorot-uniform weights, zero bias (Ma & Hovy §3.1; Sun et al.'s heads)."""
    nn.init.xavier_uniform_(layer.weight)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


def _init_lstm(lstm: nn.LSTM, init: str) -> None:
    """Glorot-uniform weights, zero biases except the forget gate's.

    ``ma_hovy``: Glorot per gate matrix, forget bias 1 in total (Ma & Hovy §3.1).
    ``fastnlp`` (fastNLP's ``LSTM.init_param``): Glorot over each stacked (4H, in) matrix and
    the forget slice set to 1 in both b_ih and b_hh, so the LSTM adds a forget bias of 2.
    """
    hidden = lstm.hidden_size
    with torch.no_grad():
        for name, param in lstm.named_parameters():
            if name.startswith("weight"):
                # PyTorch stacks the four gates (i, f, g, o).
                for gate in param.chunk(4, dim=0) if init == "ma_hovy" else (param,):
                    nn.init.xavier_uniform_(gate)
            else:
                param.zero_()
                if init == "fastnlp" or name.startswith("bias_ih"):
                    param[hidden : 2 * hidden] = 1.0


# -------------------------------------------------------------------------- blocks


class CharWordEmbed(nn.Module):
    """Block ``embed``: [word embedding; max-pooled char CNN], then dropout (Ma & Hovy §2.1).

    Input :class:`TextInputs` (words (B, L), chars (B, L, C), lengths (B,)); output
    :class:`SeqState` with x (B, L, word_dim + char_filters). Word ids pass through
    ``word_rows`` (id -> table row; forms seen only in valid/test without a pretrained vector
    read the unknown row, as in fastNLP's ``StaticEmbedding``), then in training each word is
    replaced by the unknown word with probability ``word_dropout``. Chars: embedding, dropout
    ``char_dropout``, CNN, max-pool over the word's chars, ``char_activation``, and with
    ``char_proj`` a linear layer (char_filters -> char_filters, fastNLP's ``fc``). Padding chars
    are masked out of the max-pool; padding words (no chars) get zero char features. The
    embedding tables are ``uncounted`` (outside the "# Params" unit).
    """

    uncounted = ("word_embedding", "char_embedding")
    word_rows: Tensor  # buffer (n_words,): word id -> table row

    def __init__(
        self,
        n_words: int,
        n_chars: int,
        word_dim: int,
        char_dim: int,
        char_filters: int,
        char_width: int,
        dropout: float,
        char_dropout: float | None = None,
        char_activation: str = "relu",
        word_dropout: float = 0.0,
        init: str = "fastnlp",
        word_rows: Tensor | None = None,
        char_proj: bool = False,
    ) -> None:
        super().__init__()
        self.word_embedding = nn.Embedding(n_words, word_dim, padding_idx=PADDING_ID)
        # A zero padding row keeps a word's char features independent of the batch (fastNLP's
        # table trains its padding row, which shorter words then read inside the conv window).
        self.char_embedding = nn.Embedding(n_chars, char_dim, padding_idx=PADDING_ID)
        # Odd width with width // 2 padding keeps one output per char position (for the mask).
        self.char_cnn = nn.Conv1d(char_dim, char_filters, char_width, padding=char_width // 2)
        self.dropout = nn.Dropout(dropout)
        self.char_dropout = nn.Dropout(dropout if char_dropout is None else char_dropout)
        self.relu = char_activation == "relu"
        self.word_dropout = word_dropout
        rows = torch.arange(n_words) if word_rows is None else word_rows.clone()
        self.register_buffer("word_rows", rows, persistent=False)
        _init_embedding(self.word_embedding)
        _init_embedding(self.char_embedding)
        if init == "ma_hovy":
            _init_glorot(self.char_cnn)  # else PyTorch's Conv1d default, as fastNLP leaves it
        self.char_proj = nn.Linear(char_filters, char_filters) if char_proj else None
        if self.char_proj is not None and init == "ma_hovy":
            _init_glorot(self.char_proj)

    def word_ids(self, words: Tensor) -> Tensor:
        """Table rows of word ids (B, L), with word dropout in training (fastNLP's drop_word)."""
        rows = self.word_rows[words]
        if self.training and self.word_dropout > 0:
            drop = torch.rand(rows.shape, device=rows.device) < self.word_dropout
            rows = rows.masked_fill(drop & (words != PADDING_ID), UNKNOWN_ID)
        return rows

    def forward(self, inputs: TextInputs) -> SeqState:
        words = self.word_embedding(self.word_ids(inputs.words))
        chars = self.char_features(inputs.chars)
        x = torch.cat([words, chars], dim=-1)
        return SeqState(self.dropout(x), inputs.lengths)

    def forward_tasks(self, xs: Sequence[TextInputs], params: Sequence[dict[str, Tensor]]) -> list:
        """T tasks' outputs with per-task weights (sparse sharing) in one pass.

        The tables are looked up once when every task has the same (unmasked) tables; the T char
        CNNs run as one grouped convolution. Same function as T calls of :meth:`forward` under
        ``functional_call`` (dropout draws independent masks per task either way; word dropout
        draws one for all tasks here).
        """
        inputs = xs[0]
        tables = ("word_embedding.weight", "char_embedding.weight")
        if any(x is not inputs for x in xs) or any(
            p[k] is not params[0][k] for p in params for k in tables
        ):
            return [functional_call(self, p, (x,)) for x, p in zip(xs, params, strict=True)]
        n_tasks = len(params)
        words = F.embedding(self.word_ids(inputs.words), params[0][tables[0]], PADDING_ID)
        batch, length, width = inputs.chars.shape
        flat = inputs.chars.reshape(batch * length, width)
        emb = F.embedding(flat, params[0][tables[1]], padding_idx=PADDING_ID).transpose(1, 2)
        weight = torch.cat([p["char_cnn.weight"] for p in params])  # (T*F, char_dim, width)
        bias = torch.cat([p["char_cnn.bias"] for p in params])
        conv = F.conv1d(
            self.char_dropout(emb.repeat(1, n_tasks, 1)),
            weight,
            bias,
            padding=self.char_cnn.padding,
            groups=n_tasks,
        )
        conv = conv.view(flat.shape[0], n_tasks, -1, width)  # (B*L, T, F, C)
        is_char = (flat != PADDING_ID)[:, None, None, :]
        pooled = self._pool(conv, is_char, dim=3)  # (B*L, T, F)
        if self.char_proj is not None:
            proj = torch.stack([p["char_proj.weight"] for p in params])  # (T, F, F)
            proj_bias = torch.stack([p["char_proj.bias"] for p in params])  # (T, F)
            pooled = torch.einsum("ntf,tgf->ntg", pooled, proj) + proj_bias
        chars = pooled.view(batch, length, n_tasks, -1)
        words = words[:, :, None, :].expand(-1, -1, n_tasks, -1)
        x = self.dropout(torch.cat([words, chars], dim=-1))  # (B, L, T, D)
        return [SeqState(x[:, :, t], inputs.lengths) for t in range(n_tasks)]

    def _pool(self, conv: Tensor, is_char: Tensor, dim: int) -> Tensor:
        """Max over the real chars along ``dim``, then the activation (max and ReLU commute);
        all-padding words would pool to -inf: they get zeros instead."""
        pooled = conv.masked_fill(~is_char, float("-inf")).amax(dim=dim)
        pooled = torch.where(is_char.any(dim=dim), pooled, torch.zeros_like(pooled))
        return F.relu(pooled) if self.relu else pooled

    def char_features(self, chars: Tensor) -> Tensor:
        """Char ids (B, L, C) -> per-word features (B, L, char_filters)."""
        batch, length, width = chars.shape
        flat = chars.reshape(batch * length, width)
        # Conv1d wants channels first: (B*L, char_dim, C).
        conv = self.char_cnn(self.char_dropout(self.char_embedding(flat)).transpose(1, 2))
        is_char = (flat != PADDING_ID).unsqueeze(1)  # (B*L, 1, C)
        pooled = self._pool(conv, is_char, dim=2)
        if self.char_proj is not None:
            pooled = self.char_proj(pooled)
        return pooled.reshape(batch, length, -1)


LSTM_KERNELS = ("auto", "padded", "packed")


def _lstm_kernel(kernel: str) -> str:
    """``auto``: ``padded`` for training steps (small batches: the packed kernel runs step by
    step), ``packed`` under ``no_grad`` (evaluation's large batches: packing skips the padding).
    Measured by scripts/bench_speed.py; both compute the same function."""
    if kernel != "auto":
        return kernel
    return "padded" if torch.is_grad_enabled() else "packed"


def _reverse_index(lengths: Tensor, length: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """For padded (B, L) sequences: the index that reverses each sequence within its length
    (padding positions map to themselves; the map is its own inverse) and the (B, L) mask of
    real positions. Built on the CPU from ``lengths``, copied without a host sync."""
    steps = torch.arange(length)
    real = steps[None, :] < lengths[:, None]
    index = torch.where(real, lengths[:, None] - 1 - steps[None, :], steps[None, :])
    return index.to(device, non_blocking=True), real.to(device, non_blocking=True)


def padded_bilstm(
    x: Tensor,
    lengths: Tensor,
    forward_weights: list[Tensor],
    backward_weights: list[Tensor],
    training: bool,
) -> Tensor:
    """A one-layer BiLSTM over padded (B, L, D) sequences of ``lengths``: (B, L, 2H), 0 at padding.

    The same function as a packed bidirectional LSTM: the forward direction reads each
    sequence from its start (outputs at real positions never see the padding after them); the
    backward direction runs forward over each sequence reversed within its length, and its
    outputs are put back in place. Two whole-sequence LSTM calls (oneDNN on a CPU, cuDNN on a
    GPU) instead of a packed one, which on a CPU runs time step by time step. Weights are
    (w_ih, w_hh, b_ih, b_hh) per direction, as in :class:`torch.nn.LSTM`.
    """
    batch, length, _ = x.shape
    hidden = forward_weights[1].shape[1]
    index, real = _reverse_index(lengths, length, x.device)
    zeros = x.new_zeros(1, batch, hidden)
    state = (zeros, zeros)
    ahead, _, _ = torch.lstm(x, state, forward_weights, True, 1, 0.0, training, False, True)
    flipped = x.gather(1, index[:, :, None].expand(-1, -1, x.shape[2]))
    back, _, _ = torch.lstm(flipped, state, backward_weights, True, 1, 0.0, training, False, True)
    back = back.gather(1, index[:, :, None].expand(-1, -1, hidden))
    return torch.cat([ahead, back], dim=-1).masked_fill(~real[:, :, None], 0.0)


def pack(x: Tensor, lengths: Tensor) -> PackedSequence:
    """``pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)`` without its
    host sync: the sort order is computed on the CPU and copied to x's device non-blocking.
    Same tensors as the library function, so the same results."""
    sorted_lengths, order = torch.sort(lengths.cpu(), descending=True)
    order = order.to(x.device, non_blocking=True)
    data, batch_sizes = _VF._pack_padded_sequence(x.index_select(0, order), sorted_lengths, True)
    return PackedSequence(data, batch_sizes, order, None)


def unpack(packed: PackedSequence, total_length: int) -> Tensor:
    """``pad_packed_sequence(packed, batch_first=True, total_length=...)[0]`` without the host
    sync that the library function spends on re-ordering the lengths (they are not needed)."""
    padded, _ = _VF._pad_packed_sequence(packed.data, packed.batch_sizes, True, 0.0, total_length)
    assert packed.unsorted_indices is not None
    return padded.index_select(0, packed.unsorted_indices)


def _direction_weights(
    lstm: nn.LSTM, weights: dict[str, Tensor] | None = None
) -> tuple[list[Tensor], list[Tensor]]:
    """(forward, backward) weight lists of a one-layer bidirectional LSTM, from the module's own
    parameters (as swapped in by ``functional_call``) or from ``weights``."""
    get = (lambda n: getattr(lstm, n)) if weights is None else weights.__getitem__
    names = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")
    return [get(n) for n in names], [get(f"{n}_reverse") for n in names]


class BiLSTMBlock(nn.Module):
    """Block ``bilstm`` / ``bilstm2``: one bidirectional LSTM layer, then dropout.

    Input :class:`SeqState` x (B, L, input_size); output x (B, L, 2 * hidden), zero at padding
    positions; padding never reaches a real position's output. ``kernel``: ``packed`` packs
    the batch by ``lengths`` (the textbook ``pack_padded_sequence`` path, see :func:`pack`,
    without its host syncs); ``padded`` runs
    :func:`padded_bilstm`, the same function, about 2.5x faster on a CPU (equal to packed up
    to float rounding, pinned by tests); ``auto`` picks per use (see :func:`_lstm_kernel`).
    """

    def __init__(
        self,
        input_size: int,
        hidden: int,
        dropout: float,
        kernel: str = "auto",
        init: str = "fastnlp",
    ) -> None:
        super().__init__()
        self.lstm = nn.LSTM(input_size, hidden, batch_first=True, bidirectional=True)
        self.dropout = nn.Dropout(dropout)
        self.kernel = kernel
        _init_lstm(self.lstm, init)

    def forward(self, state: SeqState) -> SeqState:
        if _lstm_kernel(self.kernel) == "padded":
            ahead, back = _direction_weights(self.lstm)
            x = padded_bilstm(state.x, state.lengths, ahead, back, self.training)
            return SeqState(self.dropout(x), state.lengths)
        out, _ = self.lstm(pack(state.x, state.lengths))
        return SeqState(self.dropout(unpack(out, state.x.size(1))), state.lengths)

    def forward_tasks(self, xs: Sequence[SeqState], params: Sequence[dict[str, Tensor]]) -> list:
        """T tasks' BiLSTMs with per-task weights as one LSTM of T·hidden units.

        The big LSTM's matrices are block-diagonal per gate (task t's units read only task t's
        inputs and hidden state), which is exactly T independent LSTMs, run by one cuDNN call.
        """
        lengths = xs[0].lengths
        if any(not torch.equal(x.lengths, lengths) for x in xs[1:]):
            return [functional_call(self, p, (x,)) for x, p in zip(xs, params, strict=True)]
        n_tasks, hidden = len(params), self.lstm.hidden_size
        weights = {}
        for name, _ in self.lstm.named_parameters():
            stacked = torch.stack([p[f"lstm.{name}"] for p in params])  # (T, 4H[, in])
            weights[name] = (
                _block_diagonal_gates(stacked)
                if stacked.dim() == 3
                else stacked.view(n_tasks, 4, hidden).transpose(0, 1).reshape(-1)
            )
        x = torch.cat([s.x for s in xs], dim=-1)  # (B, L, T*in)
        if _lstm_kernel(self.kernel) == "padded":
            ahead, back = _direction_weights(self.lstm, weights)
            y = padded_bilstm(x, lengths, ahead, back, self.training)
        else:
            out, _ = functional_call(self._wide_lstm(n_tasks), weights, (pack(x, lengths),))
            y = unpack(out, x.size(1))
        batch, length = y.shape[:2]
        y = y.view(batch, length, 2, n_tasks, hidden).permute(0, 1, 3, 2, 4)  # (B, L, T, 2, H)
        y = self.dropout(y.reshape(batch, length, n_tasks, 2 * hidden))
        return [SeqState(y[:, :, t], lengths) for t in range(n_tasks)]

    def _wide_lstm(self, n_tasks: int) -> nn.LSTM:
        """A template LSTM of T·hidden units whose weights are always passed in (not a child)."""
        cache = self.__dict__.setdefault("_wide", {})
        if n_tasks not in cache:
            cache[n_tasks] = nn.LSTM(
                n_tasks * self.lstm.input_size,
                n_tasks * self.lstm.hidden_size,
                batch_first=True,
                bidirectional=True,
                device="meta",
            )
        return cache[n_tasks]


def _block_diagonal_gates(w: Tensor) -> Tensor:
    """(T, 4H, D) per-task LSTM matrices -> (4·T·H, T·D), block-diagonal within each gate.

    Row gate·TH + t·H + h, column s·D + d holds w[t, gate·H + h, d] when s = t, else 0: the
    layout of an nn.LSTM with T·H units whose unit t·H + h belongs to task t.
    """
    n_tasks, four_h, d = w.shape
    h = four_h // 4
    per_gate = w.view(n_tasks, 4, h, d).permute(1, 0, 2, 3)  # (4, T, H, D)
    eye = torch.eye(n_tasks, dtype=w.dtype, device=w.device)
    big = per_gate[:, :, :, None, :] * eye[None, :, None, :, None]  # (4, T, H, T, D)
    return big.reshape(4 * n_tasks * h, n_tasks * d)


class TagHead(nn.Module):
    """A task's softmax layer (Ma & Hovy's non-CRF variant): state.x (B, L, D) -> logits (B, L, C)."""

    def __init__(self, in_features: int, n_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, n_classes)
        _init_glorot(self.linear)

    def forward(self, state: SeqState) -> Tensor:
        return self.linear(state.x)


# ------------------------------------------------------------------------ backbone


def _require(ok: bool, message: str) -> None:
    require("CNNBiLSTM", ok, message)


# Sun et al.'s values (src/models.py, run_conll03.sh), for the deviations list.
AUTHORS = {
    "word_dim": 100,
    "char_dim": 30,
    "char_filters": 30,
    "char_width": 3,
    "hidden": 200,
    "dropout": 0.5,
    "word_dropout": 0.01,
}


class CNNBiLSTM:
    """Ma & Hovy (2016) CNN-BiLSTM tagger as a block factory (METHODS.md §3), with the defaults
    of Sun et al.'s code (see the module docstring and :attr:`deviations`).

    Blocks (each call returns fresh parameters from the global torch RNG):
    ``embed``: :class:`TextInputs` -> x (B, L, word_dim + char_filters);
    ``bilstm``: x (B, L, word_dim + char_filters) -> x (B, L, 2 * hidden);
    ``bilstm2`` (not in ``block_names``): x (B, L, 2 * hidden) -> x (B, L, 2 * hidden), a second
    BiLSTM layer stacked on ``bilstm`` for hierarchical sharing (Søgaard & Goldberg 2016).
    Heads: x (B, L, D) -> logits (B, L, n_classes). ``word_vectors`` is an optional GloVe-format
    file, read once here; as in fastNLP's ``StaticEmbedding(lower=True)`` its vectors
    initialise the matching rows of every new ``embed`` (lower-cased lookup), the unknown row
    starts at zero and valid/test-only forms it lacks read the unknown row.
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
        char_dropout: float | None = None,
        char_activation: str = "relu",
        char_proj: bool = False,
        word_dropout: float = 0.01,
        word_vectors: str | None = None,
        init: str = "fastnlp",
        lstm_kernel: str = "auto",
    ) -> None:
        check_modality("CNNBiLSTM", "text", modality, input_spec)
        self._check(locals())
        self.lstm_kernel, self.init = lstm_kernel, init
        self.input_spec = input_spec
        self.word_dim, self.char_dim = word_dim, char_dim
        self.char_filters, self.char_width = char_filters, char_width
        self.hidden, self.dropout = hidden, dropout
        self.char_dropout, self.char_activation = char_dropout, char_activation
        self.char_proj = char_proj
        self.word_dropout = word_dropout
        self.out_features = {
            "embed": word_dim + char_filters,
            "bilstm": 2 * hidden,
            "bilstm2": 2 * hidden,
        }
        vectors = self._load(word_vectors)
        n_train = input_spec.n_train_words
        self.rows, self.vectors, self.word_rows = word_table(
            vectors, self._words(), input_spec.n_words if n_train is None else n_train, word_dim
        )
        self.zero_unknown = vectors is not None
        if vectors is not None:
            log.info(
                "word vectors: %d of %d word forms found in %s",
                len(self.rows),
                len(self.word_rows) - 2,
                vectors.path,
            )
        self.deviations: list[str] = self._deviations(locals(), vectors)

    @staticmethod
    def _check(args: dict) -> None:
        """Every argument error at once, in the config's key names."""
        errors = []
        if args["lstm_kernel"] not in LSTM_KERNELS:
            errors.append(
                f"`lstm_kernel` should be one of {list(LSTM_KERNELS)}. "
                f"Found `lstm_kernel = {args['lstm_kernel']!r}`."
            )
        for key, choices in [("init", INITS), ("char_activation", CHAR_ACTIVATIONS)]:
            if args[key] not in choices:
                errors.append(
                    f"`{key}` should be one of {list(choices)}. Found `{key} = {args[key]!r}`."
                )
        spec = args["input_spec"]
        if not (spec.n_words > 0 and spec.n_chars > 0):
            errors.append("the data set has no vocabulary.")
        for name in ("word_dim", "char_dim", "char_filters", "hidden"):
            if args[name] < 1:
                errors.append(f"`{name}` should be >= 1. Found `{name} = {args[name]}`.")
        if not (args["char_width"] >= 1 and args["char_width"] % 2 == 1):
            errors.append(
                "`char_width` should be an odd integer >= 1. "
                f"Found `char_width = {args['char_width']}`."
            )
        for name in ("dropout", "char_dropout", "word_dropout"):
            value = args[name]
            if value is not None and not 0.0 <= value < 1.0:
                errors.append(f"`{name}` should be in [0, 1). Found `{name} = {value}`.")
        _require(not errors, " ".join(errors))

    def _words(self) -> list[str]:
        spec = self.input_spec
        return list(spec.words[: spec.n_words]) or [""] * spec.n_words

    def _load(self, word_vectors: str | None) -> WordVectors | None:
        if word_vectors is None:
            return None
        _require(
            bool(str(word_vectors).strip()),
            "`backbone.word_vectors` is empty (MTLRUN_WORD_VECTORS set but empty?): give a "
            "GloVe-format file, or leave it unset (null) for random word embeddings.",
        )
        words = self.input_spec.words[: self.input_spec.n_words]
        _require(bool(words), "`word_vectors` needs the data set's word forms (input_spec.words).")
        return read_vectors(word_vectors, set(words) | {w.lower() for w in words}, self.word_dim)

    def _deviations(self, args: dict, vectors: WordVectors | None) -> list[str]:
        """Every way this network departs from Sun et al.'s CNN-BiLSTM (src/models.py with
        run_conll03.sh's arguments), for metrics.json's ``fidelity``."""
        notes = [
            "one BiLSTM layer: the authors' run_conll03.sh passes --n_layer 2; one layer keeps "
            "seed 000's # Params (encoder 533,930 = char CNN 2,730 + BiLSTM 531,200)",
            "char CNN inputs: a zero padding char (fastNLP trains its padding char's vector, so "
            "a word's features there depend on the batch's longest word), words cut at "
            "data.max_word_len chars, chars of every training word (fastNLP: no length cap, "
            "chars of at least 2 training word types, <unk> otherwise)",
        ]
        if not args["char_proj"]:
            notes.append(
                "no Linear(30, 30) after the char CNN's max-pool (fastNLP's CNNCharEmbedding has "
                "one, 930 parameters; backbone.char_proj=true adds it): left out by default to "
                "keep seed 000's # Params"
            )
        if vectors is None:
            notes.append(
                "random word embeddings (no backbone.word_vectors; the authors used GloVe "
                "6B-100d, fastNLP's en-glove-6b-100d)"
            )
        else:
            notes.append(
                f"word vectors from {vectors.path} (sha256 {vectors.sha256}, {vectors.lines} "
                f"lines, {len(self.rows)} of {len(self.word_rows) - 2} word forms found); the "
                "authors used GloVe 6B-100d (glove.6B.100d.txt)"
            )
        changed = [
            f"{key} = {args[key]} (theirs {value})"
            for key, value in AUTHORS.items()
            if args[key] != value
        ]
        if args["char_dropout"] is not None and args["char_dropout"] != args["dropout"]:
            changed.append(f"char_dropout = {args['char_dropout']} (theirs: dropout)")
        if changed:
            notes.append("sizes or rates differ from the authors': " + ", ".join(changed))
        if args["init"] != "fastnlp":
            notes.append(
                "initialisation of Ma & Hovy §3.1 (backbone.init=ma_hovy): Glorot per LSTM "
                "gate, forget bias 1, Glorot char CNN; the authors' fastNLP model: Glorot per "
                "stacked LSTM matrix, forget bias 2 (1 in b_ih and b_hh), PyTorch's default "
                "Conv1d init"
            )
        if args["char_activation"] != "relu":
            notes.append("no ReLU after the char CNN (fastNLP's CNNCharEmbedding applies one)")
        return notes

    def make_block(self, name: str) -> nn.Module:
        """A fresh ``embed``, ``bilstm`` or ``bilstm2`` block (see the class docstring)."""
        builders: dict[str, Callable[[], nn.Module]] = {
            "embed": self._make_embed,
            "bilstm": lambda: BiLSTMBlock(
                self.out_features["embed"], self.hidden, self.dropout, self.lstm_kernel, self.init
            ),
            "bilstm2": lambda: BiLSTMBlock(
                2 * self.hidden, self.hidden, self.dropout, self.lstm_kernel, self.init
            ),
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
            char_dropout=self.char_dropout,
            char_activation=self.char_activation,
            char_proj=self.char_proj,
            word_dropout=self.word_dropout,
            init=self.init,
            word_rows=self.word_rows,
        )
        with torch.no_grad():
            block.word_embedding.weight[self.rows] = self.vectors
            if self.zero_unknown:
                block.word_embedding.weight[UNKNOWN_ID].zero_()
        return block

    def make_head(self, task: Task, in_block: str | None = None) -> nn.Module:
        """A fresh softmax layer for ``task`` reading block ``in_block`` (default: ``bilstm``)."""
        source = in_block or "bilstm"
        _require(
            source in self.out_features,
            f"a head cannot read block {source!r}; blocks are {list(self.out_features)}.",
        )
        return TagHead(self.out_features[source], task.n_classes)
