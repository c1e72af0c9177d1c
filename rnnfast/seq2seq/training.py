"""Training loop, checkpoints, evaluation (exact match, BLEU) and translation of raw sentences."""

from __future__ import annotations

import math
import os
import pickle
import time
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from .data import (
    PAD_ID,
    InputError,
    Splits,
    TokenizedPair,
    Vocabulary,
    batches,
    detokenize,
    make_batch,
    number_pairs,
    read_tsv,
    source_tokenizer_for,
    split_pairs,
    tokenize,
    tokenize_pairs,
)
from .decoding import beam_search, greedy_decode
from .model import Seq2Seq, Seq2SeqConfig, sequence_loss


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


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 64
    learning_rate: float = 2e-3
    gradient_clip: float = 1.0
    teacher_forcing_ratio: float = 1.0
    validate_every: int = 1
    seed: int = 0


@dataclass
class History:
    """Per-validation curves, kept in the checkpoint so a resumed run continues them."""

    epochs: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    valid_loss: list[float] = field(default_factory=list)
    valid_accuracy: list[float] = field(default_factory=list)


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


@dataclass
class Scores:
    exact_match: float
    bleu: float
    loss: float | None = None


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


def save_checkpoint(path: Path, checkpoint: dict) -> None:
    """Write atomically: an interrupted save leaves the previous file at `path` untouched."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with temporary.open("wb") as file:
            torch.save(checkpoint, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


# What a checkpoint holds for `translator_from_checkpoint`, and in addition for resuming training.
TRANSLATOR_KEYS = ("model_config", "data_config", "source_vocab", "target_vocab", "model_state")
RESUME_KEYS = (
    *TRANSLATOR_KEYS,
    "train_config",
    "optimizer_state",
    "shuffle_rng_state",
    "torch_rng_state",
    "history",
    "epoch",
    "best_valid_accuracy",
    "best_valid_loss",
)


def load_checkpoint(path: str | Path, required: Sequence[str] = TRANSLATOR_KEYS) -> dict:
    """The checkpoint at `path`, on the CPU (the random-number states must stay there; models and the
    optimizer move their tensors to their own device when they load them).

    Raises InputError when `path` is missing, unreadable, or not an rnnfast seq2seq checkpoint with the
    `required` entries.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected a checkpoint file such as {path / 'best.pt'}")
    try:
        with path.open("rb") as file:
            written_by_torch_save = zipfile.is_zipfile(file)
    except FileNotFoundError:
        raise InputError(f"{path}: no such checkpoint") from None
    except OSError as error:
        raise InputError(f"{path}: cannot read it ({error.strerror})") from None
    if not written_by_torch_save:
        raise InputError(f"{path}: not an rnnfast checkpoint (not a whole file written by torch.save)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, KeyError, pickle.UnpicklingError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputError(f"{path}: not an rnnfast checkpoint (torch.load: {reason})") from None
    missing = [key for key in required if key not in checkpoint] if isinstance(checkpoint, dict) else required
    if missing:
        raise InputError(f"{path}: not an rnnfast seq2seq checkpoint (it has no {', '.join(missing)})")
    return checkpoint


def translator_checkpoint(translator: Translator, data_config: DataConfig) -> dict:
    """What `translator_from_checkpoint` needs: model config and weights, vocabularies, data config."""
    return {
        "model_config": translator.model.config.to_dict(),
        "data_config": asdict(data_config),
        "source_vocab": translator.source_vocab.itos,
        "target_vocab": translator.target_vocab.itos,
        "model_state": translator.model.state_dict(),
    }


def translator_from_checkpoint(
    checkpoint: dict, device: str | torch.device = "cpu", cell_impl: str | None = None
) -> Translator:
    """Rebuild the model (optionally on the other `cell_impl`; the state_dicts are interchangeable)."""
    model_config = dict(checkpoint["model_config"])
    if cell_impl is not None:
        model_config["cell_impl"] = cell_impl
    model = Seq2Seq(Seq2SeqConfig(**model_config)).to(device)
    model.load_state_dict(checkpoint["model_state"])
    model.eval()
    data_config = DataConfig(**checkpoint["data_config"])
    return Translator(
        model,
        Vocabulary(checkpoint["source_vocab"]),
        Vocabulary(checkpoint["target_vocab"]),
        data_config.source_tokenizer,
        data_config.max_length,
    )


def plot_history(history: History, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (loss_axes, accuracy_axes) = plt.subplots(1, 2, figsize=(10, 4))
    loss_axes.plot(history.epochs, history.train_loss, label="train")
    loss_axes.plot(history.epochs, history.valid_loss, label="validation")
    loss_axes.set(xlabel="epoch", ylabel="cross-entropy per token", yscale="log", title="loss")
    loss_axes.legend()
    accuracy_axes.plot(history.epochs, [100 * a for a in history.valid_accuracy])
    accuracy_axes.set(xlabel="epoch", ylabel="%", title="validation exact match (greedy)")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def train_epoch(
    model: Seq2Seq,
    optimizer: torch.optim.Optimizer,
    train_pairs: Sequence[TokenizedPair],
    translator: Translator,
    config: TrainConfig,
    generator: torch.Generator,
    progress=None,
) -> float:
    """One pass over the shuffled training pairs; returns the mean loss per target token."""
    model.train()
    device = next(model.parameters()).device
    total_loss, total_tokens, seen_tokens = 0.0, 0, 0
    start = time.perf_counter()
    for batch in batches(train_pairs, translator.source_vocab, translator.target_vocab, config.batch_size, generator):
        batch = batch.to(device)
        logits = model(batch.source, batch.source_lengths, batch.decoder_input, config.teacher_forcing_ratio)
        loss = sequence_loss(logits, batch.decoder_target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.gradient_clip)
        optimizer.step()
        target_tokens = int((batch.decoder_target != PAD_ID).sum())
        total_loss += loss.item() * target_tokens
        total_tokens += target_tokens
        seen_tokens += target_tokens + int(batch.source_lengths.sum())
        if progress is not None:
            progress.update(batch.source.shape[0])
            elapsed = time.perf_counter() - start
            progress.set_postfix(loss=f"{loss.item():.4f}", tok_s=f"{seen_tokens / elapsed:.0f}")
    return total_loss / max(total_tokens, 1)


def train(
    model_config: Seq2SeqConfig | None,
    data_config: DataConfig,
    train_config: TrainConfig,
    output_dir: str | Path,
    device: str | torch.device = "cpu",
    resume: str | Path | None = None,
    show_progress: bool = True,
) -> dict:
    """Train, validating every `validate_every` epochs; writes `last.pt`, `best.pt` (highest
    validation exact match) and `curves.png` into `output_dir`. Returns the best checkpoint.

    With `resume`, the model, optimizer, random state, vocabularies and all configs come from that
    checkpoint and training continues up to `train_config.epochs`; a `data_config.tsv` given then is
    the new location of the checkpoint's TSV file, which must hold the same bytes.

    Raises InputError when the data leave no training or no validation pair.
    """
    from tqdm import tqdm

    output_dir = Path(output_dir)
    checkpoint = load_checkpoint(resume, RESUME_KEYS) if resume is not None else None
    if checkpoint is not None:
        recorded = DataConfig(**checkpoint["data_config"])
        moved = data_config.tsv is not None and recorded.tsv is not None
        data_config = replace(recorded, tsv=data_config.tsv) if moved else recorded
        epochs = train_config.epochs
        train_config = TrainConfig(**{**checkpoint["train_config"], "epochs": epochs})
    torch.manual_seed(train_config.seed)

    data = data_config.load()
    data_config = data.config
    tokenizer = data_config.source_tokenizer
    train_pairs = tokenize_pairs(data.splits.train, tokenizer, data_config.max_length)
    valid_pairs = tokenize_pairs(data.splits.valid, tokenizer, data_config.max_length)
    if not train_pairs or not valid_pairs:
        read = data.splits.train + data.splits.valid + data.splits.test
        over = len(read) - len(tokenize_pairs(read, tokenizer, data_config.max_length))
        raise InputError(
            f"{data.summary}, {over} over --max-length {data_config.max_length}: too few left to train on "
            f"({len(train_pairs)} training and {len(valid_pairs)} validation pairs from the 80/10/10 split; "
            "at least one of each is needed)"
        )
    if show_progress:
        over = len(data.splits.train) + len(data.splits.valid) - len(train_pairs) - len(valid_pairs)
        left_out = f", {over} over --max-length {data_config.max_length} left out" if over else ""
        tqdm.write(f"{data.summary}{left_out}; {len(train_pairs)} training, {len(valid_pairs)} validation pairs")

    if checkpoint is not None:
        source_vocab = Vocabulary(checkpoint["source_vocab"])
        target_vocab = Vocabulary(checkpoint["target_vocab"])
        model_config = Seq2SeqConfig(**checkpoint["model_config"])
    else:
        source_vocab = Vocabulary.build((p.source for p in train_pairs), data_config.min_freq)
        target_vocab = Vocabulary.build((p.target for p in train_pairs), data_config.min_freq)
        model_config = replace(model_config, source_vocab_size=len(source_vocab), target_vocab_size=len(target_vocab))

    model = Seq2Seq(model_config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=train_config.learning_rate)
    generator = torch.Generator().manual_seed(train_config.seed)
    history = History()
    first_epoch = 1
    best_accuracy, best_valid_loss = -math.inf, math.inf
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model_state"])
        optimizer.load_state_dict(checkpoint["optimizer_state"])
        generator.set_state(checkpoint["shuffle_rng_state"])
        torch.set_rng_state(checkpoint["torch_rng_state"])
        history = History(**checkpoint["history"])
        first_epoch = checkpoint["epoch"] + 1
        best_accuracy, best_valid_loss = checkpoint["best_valid_accuracy"], checkpoint["best_valid_loss"]

    translator = Translator(model, source_vocab, target_vocab, tokenizer, data_config.max_length)

    def snapshot(epoch: int) -> dict:
        return {
            **translator_checkpoint(translator, data_config),
            "train_config": asdict(train_config),
            "optimizer_state": optimizer.state_dict(),
            "shuffle_rng_state": generator.get_state(),
            "torch_rng_state": torch.get_rng_state(),
            "history": asdict(history),
            "epoch": epoch,
            "best_valid_accuracy": best_accuracy,
            "best_valid_loss": best_valid_loss,
        }

    for epoch in range(first_epoch, train_config.epochs + 1):
        with tqdm(
            total=len(train_pairs),
            desc=f"epoch {epoch}/{train_config.epochs}",
            unit="pair",
            disable=not show_progress,
            leave=False,
        ) as progress:
            train_loss = train_epoch(model, optimizer, train_pairs, translator, train_config, generator, progress)
        if epoch % train_config.validate_every and epoch != train_config.epochs:
            continue
        valid_loss = average_loss(translator, valid_pairs, 256)
        accuracy = score_translations(translator, valid_pairs).exact_match
        history.epochs.append(epoch)
        history.train_loss.append(train_loss)
        history.valid_loss.append(valid_loss)
        history.valid_accuracy.append(accuracy)
        # Exact match is coarse early on (often 0 for several epochs); the loss breaks its ties.
        improved = (accuracy, -valid_loss) > (best_accuracy, -best_valid_loss)
        if improved:
            best_accuracy, best_valid_loss = accuracy, valid_loss
        if show_progress:
            tqdm.write(
                f"epoch {epoch}: train loss {train_loss:.4f}, valid loss {valid_loss:.4f}, "
                f"valid exact match {100 * accuracy:.2f}%" + (" (best)" if improved else "")
            )
        state = snapshot(epoch)
        if improved:
            save_checkpoint(output_dir / "best.pt", state)
        save_checkpoint(output_dir / "last.pt", state)
        plot_history(history, output_dir / "curves.png")
    return load_checkpoint(output_dir / "best.pt", RESUME_KEYS)
