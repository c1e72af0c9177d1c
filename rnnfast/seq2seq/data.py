"""Sentence pairs, tokenisation, vocabularies and padded batches for the seq2seq translator."""

from __future__ import annotations

import hashlib
import random
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import torch

PAD, SOS, EOS, UNK = "<pad>", "<sos>", "<eos>", "<unk>"
SPECIAL_TOKENS = (PAD, SOS, EOS, UNK)
PAD_ID, SOS_ID, EOS_ID, UNK_ID = range(len(SPECIAL_TOKENS))

# Fractions of the shuffled numbers (or TSV lines) that go to train / validation; the rest is test.
SPLIT_FRACTIONS = (0.8, 0.1)
# The split must not move when the training seed changes, so it has its own fixed seed.
SPLIT_SEED = 1234

_WORD_OR_PUNCTUATION = re.compile(r"\w+|[^\w\s]")
_GLUED_BOTH_SIDES = re.compile(r" ?([-'’]) ?")
_GLUED_LEFT = re.compile(r" ([,.!?;:%)\]}])")
_GLUED_RIGHT = re.compile(r"([(\[{]) ")

TOKENIZERS = ("words", "chars")

T = TypeVar("T")


def tokenize(text: str, tokenizer: str = "words") -> list[str]:
    """Lower-cased tokens of `text`.

    "words" splits into runs of word characters and single punctuation marks
    ("vingt-trois" -> ["vingt", "-", "trois"]); "chars" gives every non-space character, which suits
    scripts such as Korean where a word carries its own morphology.
    """
    text = text.strip().lower()
    if tokenizer == "words":
        return _WORD_OR_PUNCTUATION.findall(text)
    if tokenizer == "chars":
        return [character for character in text if not character.isspace()]
    raise ValueError(f"unknown tokenizer {tokenizer!r}, expected one of {TOKENIZERS}")


def detokenize(tokens: Sequence[str], tokenizer: str = "words") -> str:
    """Inverse of `tokenize` up to case and spacing: hyphens and apostrophes glue both neighbours,
    closing punctuation glues to the word before it."""
    if tokenizer == "chars":
        return "".join(tokens)
    text = " ".join(tokens)
    text = _GLUED_BOTH_SIDES.sub(r"\1", text)
    text = _GLUED_LEFT.sub(r"\1", text)
    return _GLUED_RIGHT.sub(r"\1", text)


class Vocabulary:
    """Token <-> id mapping whose first ids are <pad> <sos> <eos> <unk>."""

    def __init__(self, tokens: Iterable[str]) -> None:
        self.itos: list[str] = list(SPECIAL_TOKENS) + [t for t in tokens if t not in SPECIAL_TOKENS]
        self.stoi: dict[str, int] = {token: index for index, token in enumerate(self.itos)}

    @classmethod
    def build(cls, sentences: Iterable[Sequence[str]], min_freq: int = 1) -> Vocabulary:
        """Vocabulary of every token seen at least `min_freq` times, most frequent first (ties by
        spelling, so the ids do not depend on the order the sentences came in)."""
        counts = Counter(token for sentence in sentences for token in sentence)
        kept = [token for token, count in counts.items() if count >= min_freq]
        return cls(sorted(kept, key=lambda token: (-counts[token], token)))

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, tokens: Sequence[str]) -> list[int]:
        return [self.stoi.get(token, UNK_ID) for token in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Tokens up to the first <eos>, without <sos> or <pad>."""
        tokens = []
        for index in ids:
            if index == EOS_ID:
                break
            if index not in (PAD_ID, SOS_ID):
                tokens.append(self.itos[index])
        return tokens


@dataclass
class Pair:
    source: str
    target: str


@dataclass
class Splits:
    train: list[Pair]
    valid: list[Pair]
    test: list[Pair]


class InputError(ValueError):
    """A problem with something the user supplied: a file, a checkpoint or a setting. The command line
    prints its message as one line and exits with status 2, without a traceback."""


@dataclass
class TsvFile:
    path: Path  # resolved, as a checkpoint records it
    pairs: list[Pair]
    blank_lines: int
    sha256: str  # of the file's bytes


def read_tsv(path: str | Path) -> TsvFile:
    """Pairs from a UTF-8 file with `source<TAB>target` per line (Tatoeba/Anki format: further
    columns, such as attribution, are ignored). Blank and whitespace-only lines are skipped and counted.

    Raises InputError naming the file, and the 1-based line number for a line that is not UTF-8, has no
    tab, or has an empty source or target, so a bad file fails before training starts.
    """
    path = Path(path)
    try:
        content = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, expected a source<TAB>target file") from None
    except OSError as error:
        raise InputError(f"{path}: cannot read it ({error.strerror})") from None
    lines = content.split(b"\n")
    if not lines[-1]:
        lines.pop()  # the newline that ends the last line starts no new one
    pairs, blank_lines = [], 0
    for line_number, raw_line in enumerate(lines, start=1):
        try:
            line = raw_line.decode("utf-8")
        except UnicodeDecodeError as error:
            raise InputError(f"{path}:{line_number}: not valid UTF-8 ({error.reason})") from None
        line = line.rstrip("\r")
        if line_number == 1:
            line = line.removeprefix("\ufeff")
        if not line.strip():
            blank_lines += 1
            continue
        if "\t" not in line:
            raise InputError(f"{path}:{line_number}: no tab, expected source<TAB>target")
        source, target = line.split("\t")[:2]
        if not source.strip() or not target.strip():
            raise InputError(f"{path}:{line_number}: empty source or target")
        pairs.append(Pair(source, target))
    if not pairs:
        blank = f" ({blank_lines} blank lines)" if blank_lines else ""
        raise InputError(f"{path}: no sentence pairs{blank}")
    return TsvFile(path.resolve(), pairs, blank_lines, hashlib.sha256(content).hexdigest())


def shuffled_split(items: Sequence[T]) -> tuple[list[T], list[T], list[T]]:
    """`items` in a fixed shuffled order, cut 80/10/10 into train / validation / test."""
    shuffled = list(items)
    random.Random(SPLIT_SEED).shuffle(shuffled)
    train_end = int(len(shuffled) * SPLIT_FRACTIONS[0])
    valid_end = train_end + int(len(shuffled) * SPLIT_FRACTIONS[1])
    return shuffled[:train_end], shuffled[train_end:valid_end], shuffled[valid_end:]


def split_pairs(pairs: Sequence[Pair]) -> Splits:
    return Splits(*shuffled_split(pairs))


NUMBER_PAIRS = {"fr-en": ("fr", "en"), "ko-en": ("ko", "en")}


def number_split(max_number: int) -> tuple[list[int], list[int], list[int]]:
    """The numbers 0..max_number split into train / validation / test, disjoint by construction."""
    return shuffled_split(range(max_number + 1))


def number_pairs(pair: str, max_number: int) -> Splits:
    """Built-in task: a number written out in the source language -> the same number in English
    (fr-en 423: "quatre cent vingt-trois" -> "four hundred and twenty-three"), split by number so no
    test number is ever seen in training."""
    from num2words import num2words

    if pair not in NUMBER_PAIRS:
        raise ValueError(f"unknown pair {pair!r}, expected one of {sorted(NUMBER_PAIRS)}")
    source_language, target_language = NUMBER_PAIRS[pair]

    def spelled(numbers: list[int]) -> list[Pair]:
        return [Pair(num2words(n, lang=source_language), num2words(n, lang=target_language)) for n in numbers]

    train, valid, test = number_split(max_number)
    return Splits(spelled(train), spelled(valid), spelled(test))


def source_tokenizer_for(pair: str | None) -> str:
    """Korean number words are written without spaces ("사백이십삼"), so they are read per character."""
    return "chars" if pair == "ko-en" else "words"


@dataclass
class TokenizedPair:
    source: list[str]
    target: list[str]


def tokenize_pairs(pairs: Iterable[Pair], source_tokenizer: str, max_length: int | None = None) -> list[TokenizedPair]:
    """Tokenised pairs, dropping those with more than `max_length` tokens on either side."""
    tokenized = []
    for pair in pairs:
        source, target = tokenize(pair.source, source_tokenizer), tokenize(pair.target)
        if max_length is None or (len(source) <= max_length and len(target) <= max_length):
            tokenized.append(TokenizedPair(source, target))
    return tokenized


@dataclass
class Batch:
    source: torch.Tensor  # [B, S] source ids, right-padded with PAD_ID
    source_lengths: torch.Tensor  # [B] int64 on the CPU: true length of each source row
    decoder_input: torch.Tensor  # [B, T] <sos> y1 .. yn, right-padded
    decoder_target: torch.Tensor  # [B, T] y1 .. yn <eos>, right-padded

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            self.source.to(device),
            self.source_lengths,
            self.decoder_input.to(device),
            self.decoder_target.to(device),
        )


def pad_sequences(sequences: Sequence[Sequence[int]]) -> torch.Tensor:
    """[B, max length] int64 tensor of `sequences`, right-padded with PAD_ID."""
    padded = torch.full((len(sequences), max(len(s) for s in sequences)), PAD_ID, dtype=torch.long)
    for row, sequence in enumerate(sequences):
        padded[row, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
    return padded


def make_batch(pairs: Sequence[TokenizedPair], source_vocab: Vocabulary, target_vocab: Vocabulary) -> Batch:
    sources = [source_vocab.encode(pair.source) for pair in pairs]
    targets = [target_vocab.encode(pair.target) for pair in pairs]
    return Batch(
        source=pad_sequences(sources),
        source_lengths=torch.tensor([len(s) for s in sources], dtype=torch.long),
        decoder_input=pad_sequences([[SOS_ID, *t] for t in targets]),
        decoder_target=pad_sequences([[*t, EOS_ID] for t in targets]),
    )


def batches(
    pairs: Sequence[TokenizedPair],
    source_vocab: Vocabulary,
    target_vocab: Vocabulary,
    batch_size: int,
    generator: torch.Generator | None = None,
) -> Iterator[Batch]:
    """Batches of `pairs`, shuffled by `generator` when one is given, in order otherwise."""
    if generator is None:
        order = list(range(len(pairs)))
    else:
        order = torch.randperm(len(pairs), generator=generator).tolist()
    for start in range(0, len(order), batch_size):
        yield make_batch([pairs[i] for i in order[start : start + batch_size]], source_vocab, target_vocab)


@dataclass
class DataConfig:
    """Where the sentence pairs come from: the built-in number task (`pair`) or a TSV file.

    Training fills in the TSV's resolved path and `tsv_sha256`, its content hash, so that a checkpoint
    knows its data and later reads can tell a moved or changed file.
    """

    pair: str = "fr-en"
    max_number: int = 9999
    tsv: str | None = None
    min_freq: int = 1
    max_length: int = 50
    tsv_sha256: str | None = None

    @property
    def source_tokenizer(self) -> str:
        return "words" if self.tsv is not None else source_tokenizer_for(self.pair)

    @property
    def description(self) -> str:
        """Where the pairs come from, for messages."""
        return self.tsv if self.tsv is not None else f"built-in {self.pair} task (0..{self.max_number})"

    def load(self) -> Dataset:
        if self.tsv is None:
            splits = number_pairs(self.pair, self.max_number)
            count = len(splits.train) + len(splits.valid) + len(splits.test)
            return Dataset(self, splits, f"{self.description}: {count} pairs read")
        path = Path(self.tsv)
        if self.tsv_sha256 is not None and not path.exists():
            raise InputError(
                f"{path}: the data this checkpoint was trained on is not there any more (moved or deleted?); "
                "pass its new location with --tsv"
            )
        tsv = read_tsv(path)
        if self.tsv_sha256 is not None and tsv.sha256 != self.tsv_sha256:
            raise InputError(
                f"{path}: changed since this checkpoint was trained on it (SHA-256 {tsv.sha256[:12]}..., "
                f"recorded {self.tsv_sha256[:12]}...), so its test split is not the held-out one; restore the "
                f"original file, or score every line of the file as it is now with evaluate --tsv {path}"
            )
        blank = f" ({tsv.blank_lines} blank lines skipped)" if tsv.blank_lines else ""
        return Dataset(
            replace(self, tsv=str(tsv.path), tsv_sha256=tsv.sha256),
            split_pairs(tsv.pairs),
            f"{self.description}: {len(tsv.pairs)} pairs read{blank}",
        )

    def load_splits(self) -> Splits:
        return self.load().splits


@dataclass
class Dataset:
    config: DataConfig  # with a TSV's resolved path and content hash filled in
    splits: Splits
    summary: str  # where the pairs came from and how many were read, for messages
