"""Greedy and beam-search decoding, one decoder step (T=1) at a time carrying the recurrent state, and the
Translator that turns raw sentences into translations with them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import torch

from .data import EOS_ID, SOS_ID, TokenizedPair, Vocabulary, detokenize, make_batch, tokenize
from .model import EncodedSource, Seq2Seq, map_state


@torch.no_grad()
def greedy_decode(
    model: Seq2Seq, source: torch.Tensor, source_lengths: torch.Tensor, max_length: int
) -> list[list[int]]:
    """Most likely next token at every step until <eos> or `max_length` tokens.

    Args:
        source: [B, S] right-padded source ids; source_lengths: [B] true lengths.

    Returns:
        for each row, the generated ids without <sos> and <eos>.
    """
    encoded = model.encode(source, source_lengths)
    batch_size = source.shape[0]
    step_input = torch.full((batch_size, 1), SOS_ID, dtype=torch.long, device=source.device)
    state = encoded.state
    generated = []
    finished = torch.zeros(batch_size, dtype=torch.bool, device=source.device)
    for _ in range(max_length):
        logits, state = model.decoder(step_input, state, encoded.memory, encoded.memory_mask)
        step_input = logits.argmax(-1)  # [B, 1]
        generated.append(step_input)
        finished |= step_input.squeeze(1) == EOS_ID
        if finished.all():
            break
    ids = torch.cat(generated, dim=1).tolist()
    return [row[: row.index(EOS_ID)] if EOS_ID in row else row for row in ids]


@torch.no_grad()
def beam_search(
    model: Seq2Seq, source: torch.Tensor, source_lengths: torch.Tensor, beam_size: int, max_length: int
) -> list[list[int]]:
    """Beam search per source row, hypotheses ranked by total log-probability.

    Each step extends every live hypothesis, keeps the `beam_size` best extensions overall, and
    retires those that end in <eos>; the beam then narrows by one per finished hypothesis, so
    beam_size 1 is exactly greedy decoding. Hypotheses still live at `max_length` compete too.
    """
    encoded = model.encode(source, source_lengths)
    results = []
    for row in range(source.shape[0]):
        sentence = encoded.select(torch.tensor([row], device=source.device))
        results.append(_beam_search_one(model, sentence, beam_size, max_length))
    return results


def _beam_search_one(model: Seq2Seq, sentence: EncodedSource, beam_size: int, max_length: int) -> list[int]:
    device = sentence.memory.device
    live_tokens: list[list[int]] = [[]]
    live_scores = torch.zeros(1, device=device)
    finished: list[tuple[float, list[int]]] = []
    state = sentence.state
    step_input = torch.full((1, 1), SOS_ID, dtype=torch.long, device=device)
    for _ in range(max_length):
        live = len(live_tokens)
        beams = torch.zeros(live, dtype=torch.long, device=device)
        logits, state = model.decoder(
            step_input,
            state,
            sentence.memory[beams],
            sentence.memory_mask[beams],
        )
        scores = live_scores.unsqueeze(1) + logits.squeeze(1).log_softmax(-1)  # [live, V]
        vocab_size = scores.shape[1]
        width = beam_size - len(finished)
        top_scores, top_indices = scores.flatten().topk(min(width, scores.numel()))
        kept_beams, kept_tokens, kept_scores = [], [], []
        for score, index in zip(top_scores.tolist(), top_indices.tolist()):
            beam, token = divmod(index, vocab_size)
            if token == EOS_ID:
                finished.append((score, live_tokens[beam]))
            else:
                kept_beams.append(beam)
                kept_tokens.append(token)
                kept_scores.append(score)
        if not kept_beams:
            break
        live_tokens = [live_tokens[beam] + [token] for beam, token in zip(kept_beams, kept_tokens)]
        live_scores = torch.tensor(kept_scores, device=device)
        kept = torch.tensor(kept_beams, device=device)
        state = map_state(partial(torch.index_select, dim=1, index=kept), state)
        step_input = torch.tensor(kept_tokens, device=device).unsqueeze(1)
    else:
        finished.extend(zip(live_scores.tolist(), live_tokens))
    return max(finished, key=lambda scored: scored[0])[1]


@dataclass
class Translator:
    """A model with the vocabularies and tokenizer it was trained with."""

    model: Seq2Seq
    source_vocab: Vocabulary
    target_vocab: Vocabulary
    source_tokenizer: str
    max_length: int

    def translate(self, sentences: Sequence[str], beam_size: int = 1, batch_size: int = 256) -> list[str]:
        """Detokenised translations; beam_size 1 decodes greedily. An empty sentence gives "". A sentence
        of more than `max_length` tokens is cut to its first `max_length` (`source_notes` says so)."""
        tokenized = [TokenizedPair(tokenize(s, self.source_tokenizer)[: self.max_length], []) for s in sentences]
        return [detokenize(tokens) for tokens in self.translate_tokens(tokenized, beam_size, batch_size)]

    def source_notes(self, sentence: str) -> list[str]:
        """What `translate` will not read as written: words outside the source vocabulary (read as
        <unk>) and tokens past `max_length` (cut off)."""
        tokens = tokenize(sentence, self.source_tokenizer)
        notes = []
        unknown = list(dict.fromkeys(token for token in tokens if token not in self.source_vocab.stoi))
        if unknown:
            notes.append(f"not in the source vocabulary, read as <unk>: {' '.join(unknown)}")
        if len(tokens) > self.max_length:
            notes.append(
                f"{len(tokens)} tokens, over the model's maximum length {self.max_length}: "
                f"truncated, only the first {self.max_length} are translated"
            )
        return notes

    def translate_tokens(
        self, pairs: Sequence[TokenizedPair], beam_size: int = 1, batch_size: int = 256
    ) -> list[list[str]]:
        self.model.eval()
        device = next(self.model.parameters()).device
        outputs: list[list[str]] = [[] for _ in pairs]
        nonempty = [i for i, pair in enumerate(pairs) if pair.source]
        for start in range(0, len(nonempty), batch_size):
            rows = nonempty[start : start + batch_size]
            batch = make_batch([pairs[i] for i in rows], self.source_vocab, self.target_vocab).to(device)
            if beam_size == 1:
                ids = greedy_decode(self.model, batch.source, batch.source_lengths, self.max_length)
            else:
                ids = beam_search(self.model, batch.source, batch.source_lengths, beam_size, self.max_length)
            for row, row_ids in zip(rows, ids):
                outputs[row] = self.target_vocab.decode(row_ids)
        return outputs
