"""How good a translator is: exact match and BLEU of its translations, and its teacher-forced loss."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .data import PAD_ID, TokenizedPair, batches, detokenize
from .decoding import Translator
from .model import sequence_loss


@dataclass
class Scores:
    exact_match: float
    bleu: float


def score_translations(translator: Translator, pairs: Sequence[TokenizedPair], beam_size: int = 1) -> Scores:
    """Exact match on token sequences and corpus BLEU (sacrebleu) on the detokenised text."""
    import sacrebleu

    hypotheses = translator.translate_tokens(pairs, beam_size)
    exact = sum(h == p.target for h, p in zip(hypotheses, pairs)) / max(len(pairs), 1)
    bleu = sacrebleu.corpus_bleu([detokenize(h) for h in hypotheses], [[detokenize(p.target) for p in pairs]]).score
    return Scores(exact_match=exact, bleu=bleu)


@torch.no_grad()
def average_loss(translator: Translator, pairs: Sequence[TokenizedPair], batch_size: int) -> float:
    """Teacher-forced cross-entropy per target token."""
    model = translator.model
    model.eval()
    device = next(model.parameters()).device
    total, tokens = 0.0, 0
    for batch in batches(pairs, translator.source_vocab, translator.target_vocab, batch_size):
        batch = batch.to(device)
        logits = model(batch.source, batch.source_lengths, batch.decoder_input)
        total += sequence_loss(logits, batch.decoder_target, reduction="sum").item()
        tokens += int((batch.decoder_target != PAD_ID).sum())
    return total / max(tokens, 1)
