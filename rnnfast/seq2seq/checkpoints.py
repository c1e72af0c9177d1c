"""Checkpoints: written atomically, read back with a clear error for anything that is not one, and the
translator rebuilt from one."""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import torch

from .data import DataConfig, InputError, Vocabulary
from .decoding import Translator
from .model import Seq2Seq, Seq2SeqConfig


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
