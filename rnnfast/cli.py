"""The `rnnfast` command: `rnnfast seq2seq train|evaluate|translate ...`, the same as
`python -m rnnfast.seq2seq train|evaluate|translate ...`."""

from __future__ import annotations

import argparse

PROG = "rnnfast"


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    # Imported here so that `import rnnfast.cli` stays cheap: the commands pull in the model and training.
    from .seq2seq.commands import DESCRIPTION, Parser, add_commands

    parser = Parser(prog=prog, description="The commands of rnnfast; each has its own --help.")
    programs = parser.add_subparsers(dest="program", required=True)
    add_commands(programs.add_parser("seq2seq", help="the Seq2Seq translator", description=DESCRIPTION))
    return parser


def main(argv: list[str] | None = None, prog: str = PROG) -> None:
    """Parse `argv` (default: sys.argv[1:]) and run the command; `prog` begins the usage and messages."""
    from .seq2seq.commands import run

    run(build_parser(prog).parse_args(argv))
