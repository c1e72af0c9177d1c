"""Encoder-decoder translator: built from torch.nn modules, its recurrent layers swapped for rnnfast's by
rnnfast.convert (cell_impl="rnnfast") or left as torch.nn's for comparison (cell_impl="torch")."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..convert import convert
from .data import PAD_ID

CELL_TYPES = ("lstm", "gru")
CELL_IMPLS = ("rnnfast", "torch")
ATTENTION_TYPES = ("none", "dot", "general")

# An LSTM state is (h, c), a GRU state is h; both are [num_layers * num_directions, B, H].
State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


def recurrent_layer(config: Seq2SeqConfig, bidirectional: bool = False) -> nn.Module:
    """The batch-first torch.nn LSTM or GRU over embeddings that `config` describes."""
    if config.cell not in CELL_TYPES:
        raise ValueError(f"unknown cell {config.cell!r}, expected one of {CELL_TYPES}")
    return getattr(nn, config.cell.upper())(
        config.embedding_size,
        config.hidden_size,
        num_layers=config.num_layers,
        dropout=config.dropout if config.num_layers > 1 else 0.0,
        bidirectional=bidirectional,
        batch_first=True,
    )


def map_state(function, state: State) -> State:
    """Apply `function` to h (GRU) or to both h and c (LSTM)."""
    if isinstance(state, tuple):
        return tuple(function(part) for part in state)
    return function(state)


def run_packed(rnn: nn.Module, inputs: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, State]:
    """Run `rnn` over right-padded `inputs` with each row's own length, through a PackedSequence: torch.nn
    layers need one, and rnnfast layers take it and run the padded batch in a single pass.

    Args:
        rnn: batch-first LSTM/GRU module.
        inputs: [B, S, I] right-padded inputs.
        lengths: [B] int64 true lengths, all >= 1.

    Returns:
        outputs [B, S, D*H] with zeros past each row's length, and the final state with
        [num_layers * D, B, H] tensors taken at each row's own length.
    """
    packed = pack_padded_sequence(inputs, lengths.cpu(), batch_first=True, enforce_sorted=False)
    outputs, state = rnn(packed)
    outputs, _ = pad_packed_sequence(outputs, batch_first=True, total_length=inputs.shape[1])
    return outputs, state


def reverse_within_lengths(tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """[B, S] tokens with each row's first `length` entries reversed; padding stays at the end."""
    positions = torch.arange(tokens.shape[1], device=tokens.device).unsqueeze(0)
    row_lengths = lengths.to(tokens.device).unsqueeze(1)
    source_positions = torch.where(positions < row_lengths, row_lengths - 1 - positions, positions)
    return tokens.gather(1, source_positions)


@dataclass
class Seq2SeqConfig:
    """Everything needed to rebuild a Seq2Seq model; stored in checkpoints."""

    source_vocab_size: int
    target_vocab_size: int
    cell: str = "lstm"
    cell_impl: str = "rnnfast"
    embedding_size: int = 64
    hidden_size: int = 256
    num_layers: int = 1
    bidirectional: bool = False
    reverse_source: bool = True
    attention: str = "none"
    dropout: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


class Encoder(nn.Module):
    """Embedding + recurrent layer over the source, optionally reading each sentence backwards.

    A bidirectional encoder's final states are mapped to the decoder's size by a linear bridge per
    layer ([h_forward; h_backward] -> h, and likewise for c), which keeps what each direction learnt
    instead of averaging it away. Its outputs, the attention memory, are projected from 2H to H the
    same way so that dot attention still compares vectors of one size.
    """

    def __init__(self, config: Seq2SeqConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.source_vocab_size, config.embedding_size, padding_idx=PAD_ID)
        self.rnn = recurrent_layer(config, config.bidirectional)
        self.dropout = nn.Dropout(config.dropout)
        if config.bidirectional:
            hidden = config.hidden_size
            self.bridge_h = nn.Linear(2 * hidden, hidden)
            self.bridge_c = nn.Linear(2 * hidden, hidden) if config.cell == "lstm" else None
            self.memory_projection = nn.Linear(2 * hidden, hidden, bias=False)

    def forward(self, source: torch.Tensor, source_lengths: torch.Tensor) -> tuple[torch.Tensor, State]:
        """
        Args:
            source: [B, S] right-padded source ids.
            source_lengths: [B] int64 true lengths (>= 1).

        Returns:
            memory [B, S, H] (zeros at padded positions) and the decoder's initial state,
            [num_layers, B, H] per tensor.
        """
        if self.config.reverse_source:
            source = reverse_within_lengths(source, source_lengths)
        embedded = self.dropout(self.embedding(source))
        outputs, state = run_packed(self.rnn, embedded, source_lengths)
        if not self.config.bidirectional:
            return outputs, state
        if isinstance(state, tuple):
            state = (self._bridge(self.bridge_h, state[0]), self._bridge(self.bridge_c, state[1]))
        else:
            state = self._bridge(self.bridge_h, state)
        return self.memory_projection(outputs), state

    def _bridge(self, linear: nn.Linear, state: torch.Tensor) -> torch.Tensor:
        """[num_layers * 2, B, H] (layer-major, then direction, as torch.nn lays it out)
        -> [num_layers, B, H]."""
        num_layers_times_two, batch_size, hidden = state.shape
        both_directions = state.view(num_layers_times_two // 2, 2, batch_size, hidden)
        both_directions = both_directions.permute(0, 2, 1, 3).reshape(-1, batch_size, 2 * hidden)
        return linear(both_directions)


class LuongAttention(nn.Module):
    """Luong et al. (2015) global attention: score(h_t, m_s) = h_t . m_s ("dot") or
    h_t . W m_s ("general"); the attentional state is tanh(W_c [context; h_t])."""

    def __init__(self, hidden_size: int, score: str) -> None:
        super().__init__()
        if score not in ("dot", "general"):
            raise ValueError(f"unknown attention score {score!r}, expected 'dot' or 'general'")
        self.memory_transform = nn.Linear(hidden_size, hidden_size, bias=False) if score == "general" else None
        self.combine = nn.Linear(2 * hidden_size, hidden_size)

    def forward(self, decoder_outputs: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor) -> torch.Tensor:
        """
        Args:
            decoder_outputs: [B, T, H] top-layer decoder states.
            memory: [B, S, H] encoder outputs.
            memory_mask: [B, S] True at real (non-padded) source positions.

        Returns:
            [B, T, H] attentional states.
        """
        keys = memory if self.memory_transform is None else self.memory_transform(memory)
        scores = decoder_outputs @ keys.transpose(1, 2)  # [B, T, S]
        scores = scores.masked_fill(~memory_mask.unsqueeze(1), float("-inf"))
        context = scores.softmax(dim=-1) @ memory
        return torch.tanh(self.combine(torch.cat([context, decoder_outputs], dim=-1)))


class Decoder(nn.Module):
    """Embedding + recurrent layer started from the encoder's final state; a linear layer over the
    top-layer output (or over the attentional state when attention is on) gives next-token logits."""

    def __init__(self, config: Seq2SeqConfig) -> None:
        super().__init__()
        self.embedding = nn.Embedding(config.target_vocab_size, config.embedding_size, padding_idx=PAD_ID)
        self.rnn = recurrent_layer(config)
        self.dropout = nn.Dropout(config.dropout)
        self.attention = None if config.attention == "none" else LuongAttention(config.hidden_size, config.attention)
        self.output = nn.Linear(config.hidden_size, config.target_vocab_size)

    def forward(
        self, tokens: torch.Tensor, state: State, memory: torch.Tensor, memory_mask: torch.Tensor
    ) -> tuple[torch.Tensor, State]:
        """Run T steps (T=1 when decoding one token at a time, carrying `state`).

        Args:
            tokens: [B, T] input ids.
            state: [num_layers, B, H] per tensor.
            memory: [B, S, H] encoder outputs; memory_mask: [B, S] True at real positions.

        Returns:
            logits [B, T, V] and the state after the last step.
        """
        outputs, state = self.rnn(self.dropout(self.embedding(tokens)), state)
        if self.attention is not None:
            outputs = self.attention(outputs, memory, memory_mask)
        return self.output(self.dropout(outputs)), state


@dataclass
class EncodedSource:
    memory: torch.Tensor  # [B, S, H]
    memory_mask: torch.Tensor  # [B, S] True at real source positions
    state: State  # decoder's initial state, [num_layers, B, H] per tensor

    def select(self, rows: torch.Tensor) -> EncodedSource:
        """The rows `rows` of the batch (repeats allowed, as for beams)."""
        return EncodedSource(
            self.memory[rows], self.memory_mask[rows], map_state(lambda part: part[:, rows], self.state)
        )


class Seq2Seq(nn.Module):
    def __init__(self, config: Seq2SeqConfig) -> None:
        super().__init__()
        if config.attention not in ATTENTION_TYPES:
            raise ValueError(f"unknown attention {config.attention!r}, expected one of {ATTENTION_TYPES}")
        if config.cell_impl not in CELL_IMPLS:
            raise ValueError(f"unknown cell_impl {config.cell_impl!r}, expected one of {CELL_IMPLS}")
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        if config.cell_impl == "rnnfast":
            # The same Parameter objects (so the same initial weights) on rnnfast's layers; backend None
            # defers to RNNFAST_BACKEND, as a layer built by rnnfast does.
            convert(self, backend=None)

    def encode(self, source: torch.Tensor, source_lengths: torch.Tensor) -> EncodedSource:
        memory, state = self.encoder(source, source_lengths)
        positions = torch.arange(source.shape[1], device=source.device)
        memory_mask = positions.unsqueeze(0) < source_lengths.to(source.device).unsqueeze(1)
        return EncodedSource(memory, memory_mask, state)

    def forward(
        self,
        source: torch.Tensor,
        source_lengths: torch.Tensor,
        decoder_input: torch.Tensor,
        teacher_forcing_ratio: float = 1.0,
    ) -> torch.Tensor:
        """Logits [B, T, V] for predicting y1 .. yn <eos> from <sos> y1 .. yn.

        With `teacher_forcing_ratio` 1 every step reads the true previous token and the decoder runs
        over the whole sequence in one call. Below 1, each step reads the true token with that
        probability and the model's own previous prediction otherwise, one step at a time.
        """
        encoded = self.encode(source, source_lengths)
        if teacher_forcing_ratio >= 1.0:
            logits, _ = self.decoder(decoder_input, encoded.state, encoded.memory, encoded.memory_mask)
            return logits
        state = encoded.state
        step_input = decoder_input[:, :1]
        step_logits = []
        for step in range(decoder_input.shape[1]):
            logits, state = self.decoder(step_input, state, encoded.memory, encoded.memory_mask)
            step_logits.append(logits)
            if step + 1 < decoder_input.shape[1]:
                use_truth = torch.rand(()).item() < teacher_forcing_ratio
                step_input = decoder_input[:, step + 1 : step + 2] if use_truth else logits.argmax(-1)
        return torch.cat(step_logits, dim=1)


def sequence_loss(logits: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy over [B, T, V] logits against [B, T] targets, ignoring <pad> positions."""
    return F.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=PAD_ID, reduction=reduction)
