"""The train, evaluate and translate commands, run as `python -m rnnfast.seq2seq ...` or `rnnfast seq2seq ...`."""

from __future__ import annotations

import argparse
import importlib
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import NoReturn

import torch

from .checkpoints import RESUME_KEYS, load_checkpoint, translator_from_checkpoint
from .data import NUMBER_PAIRS, DataConfig, InputError, read_tsv, split_pairs, tokenize_pairs
from .model import ATTENTION_TYPES, CELL_IMPLS, CELL_TYPES, Seq2SeqConfig
from .scoring import score_translations
from .training import TrainConfig, train

PROG = "python -m rnnfast.seq2seq"
DESCRIPTION = "Train, evaluate and run a Seq2Seq translator built on rnnfast's recurrent layers."
# The modules of the seq2seq extra (pyproject.toml), which a plain `pip install rnnfast` leaves out.
EXTRA_MODULES = ("num2words", "sacrebleu", "tqdm", "matplotlib")
INSTALL_EXTRA = 'pip install "rnnfast[seq2seq]"'
DEFAULT_OUTPUT_DIR = "seq2seq-run"


def bounded(kind: Callable[[str], float], description: str, accept: Callable[[float], bool]) -> Callable[[str], float]:
    """An argparse `type` that converts with `kind` and accepts the values for which `accept` holds."""

    def convert(text: str) -> float:
        rejection = argparse.ArgumentTypeError(f"expected {description}, got {text!r}")
        try:
            value = kind(text)
        except ValueError:
            raise rejection from None
        if not accept(value):
            raise rejection
        return value

    return convert


positive_int = bounded(int, "a positive integer", lambda value: value > 0)
non_negative_int = bounded(int, "an integer >= 0", lambda value: value >= 0)
positive_float = bounded(float, "a positive number", lambda value: value > 0)
fraction = bounded(float, "a number from 0 to 1", lambda value: 0 <= value <= 1)


@dataclass(frozen=True)
class Default:
    """A train setting's value when its option is not given. `--resume` reports only the settings that
    were given and differ from the checkpoint's, so it must tell them from defaults."""

    value: object

    def __str__(self) -> str:
        return str(self.value)


def config_options(args: argparse.Namespace, config_class: type) -> dict:
    """The train options that set fields of `config_class`, by field name; Default(...) where not given."""
    return {field.name: getattr(args, field.name) for field in fields(config_class) if hasattr(args, field.name)}


def given_settings(args: argparse.Namespace, config_class: type) -> dict:
    """The train options spelled out on the command line that set fields of `config_class`."""
    return {name: value for name, value in config_options(args, config_class).items() if not isinstance(value, Default)}


def settings(args: argparse.Namespace, config_class: type) -> dict:
    """The values of `config_class`'s fields among the train options, given or default."""
    options = config_options(args, config_class)
    return {name: value.value if isinstance(value, Default) else value for name, value in options.items()}


def spelled(name: str, value: object) -> str:
    """How option `name` set to `value` reads on the command line."""
    option = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        return option if value else "--no-" + option[2:]
    return f"{option} {value}"


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        if torch.version.cuda is None:
            reason = f"this torch {torch.__version__} is built without CUDA"
        else:
            reason = f"torch {torch.__version__} is built for CUDA {torch.version.cuda} but finds no CUDA device"
        raise InputError(f"--device cuda: CUDA is not available ({reason}); what is available here: cpu")
    return name


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="where to run; auto takes CUDA if there is one",
    )
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=1,
        metavar="N",
        help="torch.set_num_threads; more barely help this model",
    )


def add_decoding_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", default=f"{DEFAULT_OUTPUT_DIR}/best.pt", metavar="FILE", help="what to load")
    parser.add_argument("--beam-size", type=positive_int, default=1, metavar="N", help="1 decodes greedily")
    parser.add_argument(
        "--cell-impl",
        choices=CELL_IMPLS,
        default=None,
        help="run the checkpoint on this implementation instead of the one it was trained on",
    )


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Help that fits a screen: at most 100 columns, an option's spellings sharing one metavar
    (`--learning-rate, --lr LR`), and only the defaults that say something (not None or False)."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=34, width=min(shutil.get_terminal_size().columns, 100) - 2)

    def _format_action_invocation(self, action: argparse.Action) -> str:
        if not action.option_strings or action.nargs == 0:
            return super()._format_action_invocation(action)
        metavar = self._format_args(action, self._get_default_metavar_for_optional(action))
        return f"{', '.join(action.option_strings)} {metavar}"

    def _get_help_string(self, action: argparse.Action) -> str:
        default = action.default.value if isinstance(action.default, Default) else action.default
        if default is None or default is False:
            return action.help or ""
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, `<prog>: error: <message>`, like the commands' own
    (InputError); --help shows the usage."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, formatter_class=HelpFormatter, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


# The train settings, by group: the config whose fields they set, then (option names, add_argument keywords).
# Each option's dest is its config field, and its value is Default(<the field's default>) unless it is given.
TRAIN_SETTINGS = {
    "data": (
        DataConfig(),
        [
            ("--pair", dict(choices=sorted(NUMBER_PAIRS), help="built-in number task (ignored with --tsv)")),
            ("--max-number", dict(type=non_negative_int, metavar="N", help="built-in task uses the numbers 0..N")),
            (
                "--tsv",
                dict(metavar="FILE", help="train on source<TAB>target lines; with --resume, their new path"),
            ),
            ("--min-freq", dict(type=positive_int, metavar="N", help="rarer tokens become <unk>")),
            (
                "--max-length",
                dict(type=positive_int, metavar="N", help="drop longer pairs (tokens a side); decoding limit"),
            ),
        ],
    ),
    "model": (
        Seq2SeqConfig(0, 0),
        [
            ("--cell", dict(choices=CELL_TYPES, help="recurrent cell")),
            ("--cell-impl", dict(choices=CELL_IMPLS, help="rnnfast's layers, or torch.nn's to compare")),
            ("--embedding-size", dict(type=positive_int, metavar="N", help="token vector size")),
            ("--hidden-size", dict(type=positive_int, metavar="N", help="recurrent state size")),
            ("--num-layers", dict(type=positive_int, metavar="N", help="stacked layers")),
            ("--bidirectional", dict(action="store_true", help="encoder reads both ways")),
            (
                "--reverse-source",
                dict(
                    action=argparse.BooleanOptionalAction,
                    help="read backwards: first words end near the decoder",
                ),
            ),
            ("--attention", dict(choices=ATTENTION_TYPES, help="Luong score")),
            ("--dropout", dict(type=fraction, metavar="P", help="dropout probability")),
        ],
    ),
    "training": (
        TrainConfig(),
        [
            ("--epochs", dict(type=positive_int, metavar="N", help="train up to this epoch")),
            ("--batch-size", dict(type=positive_int, metavar="N", help="pairs per step")),
            (("--learning-rate", "--lr"), dict(type=positive_float, metavar="LR", help="Adam's step size")),
            (("--gradient-clip", "--clip"), dict(type=positive_float, metavar="NORM", help="gradient norm limit")),
            (
                ("--teacher-forcing-ratio", "--teacher-forcing"),
                dict(type=fraction, metavar="RATIO", help="probability of feeding the true previous token"),
            ),
            (
                "--validate-every",
                dict(type=positive_int, metavar="N", help="epochs between validations and checkpoints"),
            ),
            ("--seed", dict(type=int, metavar="N", help="initial weights and shuffling")),
        ],
    ),
}


def warn(args: argparse.Namespace, message: str) -> None:
    print(f"{args.prog}: warning: {message}", file=sys.stderr)


def check_resume(args: argparse.Namespace, checkpoint: dict, epochs: int) -> None:
    """Warn about each given setting that the checkpoint overrides; refuse a run with nothing to do."""
    if epochs <= checkpoint["epoch"]:
        raise InputError(
            f"--epochs {epochs}: {args.resume} is already at epoch {checkpoint['epoch']}; "
            "pass a larger --epochs to continue it"
        )
    data = checkpoint["data_config"]
    for section, config_class in (
        ("model_config", Seq2SeqConfig),
        ("data_config", DataConfig),
        ("train_config", TrainConfig),
    ):
        for name, value in given_settings(args, config_class).items():
            recorded = checkpoint[section][name]
            relocated = name == "tsv" and data["tsv"] is not None  # train() checks it is the same data
            if name == "epochs" or relocated or value == recorded:
                continue
            picks_the_data = name == "tsv" or (name in ("pair", "max_number") and data["tsv"] is not None)
            setting = f"data ({DataConfig(**data).description})" if picks_the_data else spelled(name, recorded)
            warn(
                args,
                f"the checkpoint's {setting} overrides {spelled(name, value)} (a resumed run keeps its settings)",
            )


def import_extra(*modules: str) -> None:
    """Import optional modules that a command reaches only late, so that a missing one stops it at the start."""
    for module in modules:
        importlib.import_module(module)


def run_train(args: argparse.Namespace) -> None:
    import_extra("tqdm", "sacrebleu", "matplotlib")
    output_dir = Path(args.output_dir)
    existing = [name for name in ("best.pt", "last.pt") if (output_dir / name).exists()]
    if existing and not (args.overwrite or args.resume):
        raise InputError(
            f"{output_dir}/ already holds a run ({', '.join(existing)}); pass --overwrite to replace it, "
            f"--resume {output_dir / 'last.pt'} to continue it, or choose another --output-dir"
        )
    model_config = Seq2SeqConfig(source_vocab_size=0, target_vocab_size=0, **settings(args, Seq2SeqConfig))
    data_config = DataConfig(**settings(args, DataConfig))
    train_config = TrainConfig(**settings(args, TrainConfig))
    if args.resume is not None:
        check_resume(args, load_checkpoint(args.resume, RESUME_KEYS), train_config.epochs)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"--output-dir {output_dir}: cannot create it ({error.strerror})") from None
    start = time.perf_counter()
    try:
        best = train(
            model_config, data_config, train_config, output_dir, args.device, args.resume, show_progress=not args.quiet
        )
    except KeyboardInterrupt:
        if not (output_dir / "last.pt").exists():
            raise SystemExit(f"interrupted before the first checkpoint; nothing saved in {output_dir}/") from None
        raise SystemExit(
            f"interrupted; checkpoints already in {output_dir}/ are intact "
            f"(continue with --resume {output_dir / 'last.pt'})"
        ) from None
    translator = translator_from_checkpoint(best, args.device)
    data_config = DataConfig(**best["data_config"])
    test_pairs = tokenize_pairs(data_config.load_splits().test, data_config.source_tokenizer)
    scores = score_translations(translator, test_pairs)
    print(
        f"best checkpoint: epoch {best['epoch']}, valid exact match {100 * best['best_valid_accuracy']:.2f}%; "
        f"test exact match {100 * scores.exact_match:.2f}%, BLEU {scores.bleu:.2f} (greedy, {len(test_pairs)} pairs); "
        f"wall time {time.perf_counter() - start:.0f} s; saved in {output_dir}/"
    )


def run_evaluate(args: argparse.Namespace) -> None:
    import_extra("sacrebleu")
    checkpoint = load_checkpoint(args.checkpoint)
    translator = translator_from_checkpoint(checkpoint, args.device, args.cell_impl)
    data_config = DataConfig(**checkpoint["data_config"])
    if args.tsv is None:
        pairs, name = data_config.load_splits().test, "test split"
    else:
        tsv = read_tsv(args.tsv)
        if tsv.sha256 == data_config.tsv_sha256:
            pairs, name = split_pairs(tsv.pairs).test, f"{args.tsv} (the training data): test split"
        else:
            pairs, name = tsv.pairs, args.tsv
    tokenized = tokenize_pairs(pairs, data_config.source_tokenizer)
    scores = score_translations(translator, tokenized, args.beam_size)
    decoding = "greedy" if args.beam_size == 1 else f"beam {args.beam_size}"
    print(f"{name}: {len(tokenized)} pairs, {decoding}")
    print(f"exact match {100 * scores.exact_match:.2f}%")
    print(f"BLEU {scores.bleu:.2f}")


def read_stdin_lines() -> list[str]:
    lines = []
    for line_number, raw_line in enumerate(sys.stdin.buffer, start=1):
        try:
            lines.append(raw_line.decode("utf-8").rstrip("\r\n"))
        except UnicodeDecodeError as error:
            raise InputError(f"<stdin>:{line_number}: not valid UTF-8 ({error.reason})") from None
    return lines


def run_translate(args: argparse.Namespace) -> None:
    checkpoint = load_checkpoint(args.checkpoint)
    translator = translator_from_checkpoint(checkpoint, args.device, args.cell_impl)
    sentences = args.sentences or read_stdin_lines()
    for sentence in sentences:
        for note in translator.source_notes(sentence):
            shown = sentence if len(sentence) <= 40 else sentence[:37] + "..."
            warn(args, f"{shown!r}: {note}")
    for translation in translator.translate(sentences, args.beam_size):
        print(translation)


def add_commands(parser: argparse.ArgumentParser) -> None:
    """Add train, evaluate and translate to `parser` as subcommands; each sets `args.run`, the function
    that runs it, and `args.prog`, the name its messages start with (`python -m rnnfast.seq2seq train`)."""
    commands = parser.add_subparsers(dest="command", required=True)

    train_parser = commands.add_parser("train", help="train a translator", usage="%(prog)s [options]")
    groups = {}
    for title, (defaults, options) in TRAIN_SETTINGS.items():
        groups[title] = train_parser.add_argument_group(title)
        for names, keywords in options:
            names = (names,) if isinstance(names, str) else names
            field_name = names[0].removeprefix("--").replace("-", "_")
            groups[title].add_argument(*names, default=Default(getattr(defaults, field_name)), **keywords)
    training = groups["training"]
    training.add_argument(
        "--output-dir", default=DEFAULT_OUTPUT_DIR, metavar="DIR", help="where best.pt, last.pt and curves.png go"
    )
    training.add_argument("--overwrite", action="store_true", help="replace the run already in --output-dir")
    training.add_argument(
        "--resume", metavar="FILE", help="continue this checkpoint up to --epochs, with its own settings"
    )
    add_common_arguments(train_parser)
    train_parser.add_argument("--quiet", action="store_true", help="print only the final summary")

    evaluate_parser = commands.add_parser("evaluate", help="exact match and BLEU of a checkpoint")
    add_decoding_arguments(evaluate_parser)
    evaluate_parser.add_argument(
        "--tsv",
        metavar="FILE",
        help="score on these source<TAB>target lines (default: the test split); given the checkpoint's own "
        "training data (same content, wherever it is now), scores its test split",
    )
    add_common_arguments(evaluate_parser)

    translate_parser = commands.add_parser("translate", help="translate sentences")
    add_decoding_arguments(translate_parser)
    translate_parser.add_argument("sentences", nargs="*", help="sentences to translate (default: stdin, one per line)")
    add_common_arguments(translate_parser)

    for command_parser, run_command in (
        (train_parser, run_train),
        (evaluate_parser, run_evaluate),
        (translate_parser, run_translate),
    ):
        command_parser.set_defaults(run=run_command, prog=command_parser.prog)


def build_parser(prog: str = PROG) -> Parser:
    parser = Parser(prog=prog, description=DESCRIPTION)
    add_commands(parser)
    return parser


def run(args: argparse.Namespace) -> None:
    """Run the command that `args` were parsed for. A mistake in what the user gave (InputError) ends with
    one line on stderr, `<prog>: error: <message>`, and exit status 2, as argparse's own errors do; a
    missing module of the seq2seq extra ends with one line and status 1, since the command line was right
    and the installation is what lacks; any other exception keeps its traceback."""
    torch.set_num_threads(args.threads)
    try:
        args.device = resolve_device(args.device)
        args.run(args)
    except InputError as error:
        print(f"{args.prog}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except ModuleNotFoundError as error:
        if error.name not in EXTRA_MODULES:
            raise
        print(f"{args.prog}: error: {error.name} is not installed; {INSTALL_EXTRA} installs it", file=sys.stderr)
        raise SystemExit(1) from None


def main(argv: list[str] | None = None, prog: str = PROG) -> None:
    """Parse `argv` (default: sys.argv[1:]) and run the command; `prog` begins the usage and messages."""
    run(build_parser(prog).parse_args(argv))
