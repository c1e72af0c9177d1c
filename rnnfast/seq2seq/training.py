"""Training loop, checkpoints, evaluation (exact match, BLEU) and translation of raw sentences."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from .data import (
    PAD_ID,
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
    """Where the sentence pairs come from: the built-in number task (`pair`) or a TSV file."""

    pair: str = "fr-en"
    max_number: int = 9999
    tsv: str | None = None
    min_freq: int = 1
    max_length: int = 50

    @property
    def source_tokenizer(self) -> str:
        return "words" if self.tsv is not None else source_tokenizer_for(self.pair)

    def load_splits(self) -> Splits:
        if self.tsv is not None:
            return split_pairs(read_tsv(self.tsv))
        return number_pairs(self.pair, self.max_number)


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
        """Detokenised translations; beam_size 1 decodes greedily. An empty sentence gives ""."""
        tokenized = [TokenizedPair(tokenize(s, self.source_tokenizer), []) for s in sentences]
        return [detokenize(tokens) for tokens in self.translate_tokens(tokenized, beam_size, batch_size)]

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


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> dict:
    return torch.load(path, map_location=device, weights_only=True)


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
    checkpoint and training continues up to `train_config.epochs`.
    """
    from tqdm import tqdm

    output_dir = Path(output_dir)
    checkpoint = load_checkpoint(resume) if resume is not None else None
    if checkpoint is not None:
        data_config = DataConfig(**checkpoint["data_config"])
        epochs = train_config.epochs
        train_config = TrainConfig(**{**checkpoint["train_config"], "epochs": epochs})
    torch.manual_seed(train_config.seed)

    splits = data_config.load_splits()
    tokenizer = data_config.source_tokenizer
    train_pairs = tokenize_pairs(splits.train, tokenizer, data_config.max_length)
    valid_pairs = tokenize_pairs(splits.valid, tokenizer, data_config.max_length)
    if not train_pairs or not valid_pairs:
        raise ValueError("no training or validation pairs left after the max-length filter")

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
    return load_checkpoint(output_dir / "best.pt", device)
