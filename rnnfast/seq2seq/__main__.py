"""python -m rnnfast.seq2seq train|evaluate|translate ..."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from .data import NUMBER_PAIRS, read_tsv, tokenize_pairs
from .model import ATTENTION_TYPES, CELL_IMPLS, CELL_TYPES, Seq2SeqConfig
from .training import (
    DataConfig,
    TrainConfig,
    load_checkpoint,
    score_translations,
    train,
    translator_from_checkpoint,
)

DEFAULT_OUTPUT_DIR = "seq2seq-run"


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default=default_device(),
        help="where to run (cuda when available)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch.set_num_threads; the default model gains little from more threads on CPU, "
        "and threads competing for busy cores stall it",
    )


def add_decoding_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", default=f"{DEFAULT_OUTPUT_DIR}/best.pt")
    parser.add_argument("--beam-size", type=int, default=1, help="1 decodes greedily")
    parser.add_argument(
        "--cell-impl",
        choices=CELL_IMPLS,
        default=None,
        help="run the checkpoint on this implementation instead of the one it was trained on",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rnnfast.seq2seq", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    defaults_model = Seq2SeqConfig(0, 0)
    defaults_data = DataConfig()
    defaults_train = TrainConfig()
    train_parser = commands.add_parser(
        "train", help="train a translator", formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    data = train_parser.add_argument_group("data")
    data.add_argument(
        "--pair",
        choices=sorted(NUMBER_PAIRS),
        default=defaults_data.pair,
        help="built-in number-phrase task (ignored with --tsv)",
    )
    data.add_argument(
        "--max-number",
        type=int,
        default=defaults_data.max_number,
        help="built-in task uses the numbers 0..max-number",
    )
    data.add_argument("--tsv", default=None, help="train on source<TAB>target lines from this file instead")
    data.add_argument("--min-freq", type=int, default=defaults_data.min_freq, help="rarer tokens become <unk>")
    data.add_argument(
        "--max-length",
        type=int,
        default=defaults_data.max_length,
        help="drop pairs with more tokens on either side; also the decoding limit",
    )
    model = train_parser.add_argument_group("model")
    model.add_argument("--cell", choices=CELL_TYPES, default=defaults_model.cell)
    model.add_argument("--cell-impl", choices=CELL_IMPLS, default=defaults_model.cell_impl)
    model.add_argument("--embedding-size", type=int, default=defaults_model.embedding_size)
    model.add_argument("--hidden-size", type=int, default=defaults_model.hidden_size)
    model.add_argument("--num-layers", type=int, default=defaults_model.num_layers)
    model.add_argument("--bidirectional", action="store_true")
    model.add_argument(
        "--reverse-source",
        action=argparse.BooleanOptionalAction,
        default=defaults_model.reverse_source,
        help="read each source sentence backwards, so its first words sit next to the decoder's start",
    )
    model.add_argument("--attention", choices=ATTENTION_TYPES, default=defaults_model.attention)
    model.add_argument("--dropout", type=float, default=defaults_model.dropout)
    training = train_parser.add_argument_group("training")
    training.add_argument("--epochs", type=int, default=defaults_train.epochs)
    training.add_argument("--batch-size", type=int, default=defaults_train.batch_size)
    training.add_argument("--lr", type=float, default=defaults_train.learning_rate)
    training.add_argument("--clip", type=float, default=defaults_train.gradient_clip, help="gradient norm limit")
    training.add_argument(
        "--teacher-forcing",
        type=float,
        default=defaults_train.teacher_forcing_ratio,
        help="probability of feeding the true previous token",
    )
    training.add_argument(
        "--validate-every",
        type=int,
        default=defaults_train.validate_every,
        help="epochs between validations and checkpoints",
    )
    training.add_argument("--seed", type=int, default=defaults_train.seed)
    training.add_argument("--output-dir", default=DEFAULT_OUTPUT_DIR, help="where best.pt, last.pt and curves.png go")
    training.add_argument(
        "--resume", default=None, help="continue from this checkpoint (its configs win over the flags above)"
    )
    add_common_arguments(train_parser)

    evaluate_parser = commands.add_parser("evaluate", help="exact match and BLEU of a checkpoint")
    add_decoding_arguments(evaluate_parser)
    evaluate_parser.add_argument(
        "--tsv", default=None, help="score on these source<TAB>target lines (default: the test split)"
    )
    add_common_arguments(evaluate_parser)

    translate_parser = commands.add_parser("translate", help="translate sentences")
    add_decoding_arguments(translate_parser)
    translate_parser.add_argument("sentences", nargs="*", help="sentences to translate (default: stdin, one per line)")
    add_common_arguments(translate_parser)
    return parser


def run_train(args: argparse.Namespace) -> None:
    model_config = Seq2SeqConfig(
        source_vocab_size=0,
        target_vocab_size=0,
        cell=args.cell,
        cell_impl=args.cell_impl,
        embedding_size=args.embedding_size,
        hidden_size=args.hidden_size,
        num_layers=args.num_layers,
        bidirectional=args.bidirectional,
        reverse_source=args.reverse_source,
        attention=args.attention,
        dropout=args.dropout,
    )
    data_config = DataConfig(
        pair=args.pair,
        max_number=args.max_number,
        tsv=args.tsv,
        min_freq=args.min_freq,
        max_length=args.max_length,
    )
    train_config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        gradient_clip=args.clip,
        teacher_forcing_ratio=args.teacher_forcing,
        validate_every=args.validate_every,
        seed=args.seed,
    )
    start = time.perf_counter()
    try:
        best = train(model_config, data_config, train_config, args.output_dir, args.device, args.resume)
    except KeyboardInterrupt:
        raise SystemExit(
            f"interrupted; checkpoints already in {args.output_dir}/ are intact "
            f"(continue with --resume {args.output_dir}/last.pt)"
        ) from None
    translator = translator_from_checkpoint(best, args.device)
    data_config = DataConfig(**best["data_config"])
    test_pairs = tokenize_pairs(data_config.load_splits().test, data_config.source_tokenizer)
    scores = score_translations(translator, test_pairs)
    print(
        f"best checkpoint: epoch {best['epoch']}, valid exact match {100 * best['best_valid_accuracy']:.2f}%; "
        f"test exact match {100 * scores.exact_match:.2f}%, BLEU {scores.bleu:.2f} (greedy, {len(test_pairs)} pairs); "
        f"wall time {time.perf_counter() - start:.0f} s; saved in {args.output_dir}/"
    )


def run_evaluate(args: argparse.Namespace) -> None:
    checkpoint = load_checkpoint(args.checkpoint, args.device)
    translator = translator_from_checkpoint(checkpoint, args.device, args.cell_impl)
    data_config = DataConfig(**checkpoint["data_config"])
    if args.tsv is not None:
        pairs, name = read_tsv(args.tsv), args.tsv
    else:
        pairs, name = data_config.load_splits().test, "test split"
    tokenized = tokenize_pairs(pairs, data_config.source_tokenizer)
    scores = score_translations(translator, tokenized, args.beam_size)
    decoding = "greedy" if args.beam_size == 1 else f"beam {args.beam_size}"
    print(f"{name}: {len(tokenized)} pairs, {decoding}")
    print(f"exact match {100 * scores.exact_match:.2f}%")
    print(f"BLEU {scores.bleu:.2f}")


def run_translate(args: argparse.Namespace) -> None:
    checkpoint = load_checkpoint(args.checkpoint, args.device)
    translator = translator_from_checkpoint(checkpoint, args.device, args.cell_impl)
    sentences = args.sentences or [line.rstrip("\n") for line in sys.stdin]
    for translation in translator.translate(sentences, args.beam_size):
        print(translation)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.command in ("evaluate", "translate") and not Path(args.checkpoint).is_file():
        raise SystemExit(f"no checkpoint at {args.checkpoint}; train first or pass --checkpoint")
    {"train": run_train, "evaluate": run_evaluate, "translate": run_translate}[args.command](args)


if __name__ == "__main__":
    main()
