"""python -m rnnfast.seq2seq train|evaluate|translate ..."""

from .commands import main

main()
