"""Seq2Seq translator (encoder-decoder with optional Luong attention) on rnnfast recurrent layers.

Run `python -m rnnfast.seq2seq train` (or `rnnfast seq2seq train`) to train on the built-in French ->
English number task.
"""

from .checkpoints import translator_from_checkpoint
from .data import DataConfig, InputError, Vocabulary, detokenize, number_pairs, read_tsv, tokenize
from .decoding import Translator, beam_search, greedy_decode
from .model import Decoder, Encoder, LuongAttention, Seq2Seq, Seq2SeqConfig, recurrent_layer, sequence_loss
from .training import TrainConfig, train

__all__ = [
    "DataConfig",
    "Decoder",
    "Encoder",
    "InputError",
    "LuongAttention",
    "Seq2Seq",
    "Seq2SeqConfig",
    "TrainConfig",
    "Translator",
    "Vocabulary",
    "beam_search",
    "detokenize",
    "greedy_decode",
    "number_pairs",
    "read_tsv",
    "recurrent_layer",
    "sequence_loss",
    "tokenize",
    "train",
    "translator_from_checkpoint",
]
