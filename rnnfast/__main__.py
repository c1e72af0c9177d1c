"""python -m rnnfast ..., the same as the `rnnfast` command."""

from .cli import main

main(prog="python -m rnnfast")
