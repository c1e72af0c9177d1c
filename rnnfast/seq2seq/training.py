"""The training loop: epochs over the shuffled pairs, validation, checkpoints of the best and the last."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from .checkpoints import RESUME_KEYS, load_checkpoint, save_checkpoint, translator_checkpoint
from .curves import History, plot_history
from .data import PAD_ID, DataConfig, InputError, TokenizedPair, Vocabulary, batches, tokenize_pairs
from .decoding import Translator
from .model import Seq2Seq, Seq2SeqConfig, sequence_loss
from .scoring import average_loss, score_translations


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 64
    learning_rate: float = 2e-3
    gradient_clip: float = 1.0
    teacher_forcing_ratio: float = 1.0
    validate_every: int = 1
    seed: int = 0


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

    With `show_progress`, a line on stdout says what data was read, and one per epoch its losses, validation
    exact match and the time since training began; a progress bar on stderr runs through each epoch where
    stderr is a terminal (in a log file its carriage-return updates would be noise).

    With `resume`, the model, optimizer, random state, vocabularies and all configs come from that
    checkpoint and training continues up to `train_config.epochs`; a `data_config.tsv` given then is
    the new location of the checkpoint's TSV file, which must hold the same bytes.

    Raises InputError when the data leave no training or no validation pair.
    """
    from tqdm import tqdm

    def report(line: str) -> None:
        if show_progress:
            tqdm.write(line)  # above the bar, when there is one
            sys.stdout.flush()  # a log file gets each line when it happens, not at exit

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
    over = len(data.splits.train) + len(data.splits.valid) - len(train_pairs) - len(valid_pairs)
    left_out = f", {over} over --max-length {data_config.max_length} left out" if over else ""
    report(f"{data.summary}{left_out}; {len(train_pairs)} training, {len(valid_pairs)} validation pairs")

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

    start = time.perf_counter()
    for epoch in range(first_epoch, train_config.epochs + 1):
        with tqdm(
            total=len(train_pairs),
            desc=f"epoch {epoch}/{train_config.epochs}",
            unit="pair",
            disable=None if show_progress else True,  # None: only where stderr is a terminal
            leave=False,
        ) as progress:
            train_loss = train_epoch(model, optimizer, train_pairs, translator, train_config, generator, progress)
        epoch_line = f"epoch {epoch}/{train_config.epochs}: train loss {train_loss:.4f}"
        if epoch % train_config.validate_every and epoch != train_config.epochs:
            report(f"{epoch_line}, elapsed {time.perf_counter() - start:.1f} s")
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
        report(
            f"{epoch_line}, valid loss {valid_loss:.4f}, valid exact match {100 * accuracy:.2f}%"
            + (" (best)" if improved else "")
            + f", elapsed {time.perf_counter() - start:.1f} s"
        )
        state = snapshot(epoch)
        if improved:
            save_checkpoint(output_dir / "best.pt", state)
        save_checkpoint(output_dir / "last.pt", state)
        plot_history(history, output_dir / "curves.png")
    return load_checkpoint(output_dir / "best.pt", RESUME_KEYS)
