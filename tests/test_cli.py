"""The `rnnfast` command (rnnfast.cli) and `python -m rnnfast`: the seq2seq commands under one name."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import rnnfast
from rnnfast.cli import main

SCREEN_LINES, SCREEN_COLUMNS = 40, 100
PAIRS_TSV = "".join(
    f"{a} {b}\t{x} {y}\n" for a, x in [("un", "one"), ("deux", "two")] for b, y in [("trois", "three")] * 6
)
TINY_RUN = ["--epochs", "1", "--hidden-size", "8", "--embedding-size", "4", "--cell-impl", "torch", "--device", "cpu"]


def run_python(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    environment = {
        **os.environ,
        "PYTHONPATH": str(Path(rnnfast.__file__).parent.parent),
        "COLUMNS": str(SCREEN_COLUMNS),
    }
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=environment, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    "argv, usage",
    [
        ([], "usage: python -m rnnfast [-h] {seq2seq} ..."),
        (["seq2seq"], "usage: python -m rnnfast seq2seq [-h] {train,evaluate,translate} ..."),
        (["seq2seq", "train"], "usage: python -m rnnfast seq2seq train [options]"),
    ],
    ids=["rnnfast", "seq2seq", "train"],
)
def test_help_fits_one_screen_and_names_the_program(tmp_path, argv, usage):
    result = run_python(tmp_path, "-m", "rnnfast", *argv, "--help")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == usage
    assert len(lines) <= SCREEN_LINES and max(map(len, lines)) <= SCREEN_COLUMNS, result.stdout


@pytest.mark.parametrize("command", ["train", "evaluate", "translate"])
def test_help_is_that_of_python_m_rnnfast_seq2seq(tmp_path, command):
    """One parser serves both: the same options and help, under each one's name."""
    ours = run_python(tmp_path, "-m", "rnnfast", "seq2seq", command, "--help")
    theirs = run_python(tmp_path, "-m", "rnnfast.seq2seq", command, "--help")
    assert theirs.stdout.startswith(f"usage: python -m rnnfast.seq2seq {command} ")
    assert ours.stdout.replace("python -m rnnfast seq2seq", "python -m rnnfast.seq2seq") == theirs.stdout


@pytest.mark.parametrize(
    "argv, message",
    [
        (["bogus"], "python -m rnnfast: error: argument program: invalid choice: 'bogus' (choose from 'seq2seq')"),
        (["seq2seq", "bogus"], "python -m rnnfast seq2seq: error: argument command: invalid choice: 'bogus'"),
        (["seq2seq", "train", "--epochs", "0"], "python -m rnnfast seq2seq train: error: argument --epochs:"),
    ],
    ids=["program", "command", "option"],
)
def test_bad_command_line_is_argparse_error_with_status_2(tmp_path, argv, message):
    result = run_python(tmp_path, "-m", "rnnfast", *argv)
    assert result.returncode == 2
    assert result.stderr.startswith(message) and len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stdout == ""


def test_python_m_rnnfast_seq2seq_train_runs(tmp_path):
    (tmp_path / "pairs.tsv").write_text(PAIRS_TSV, encoding="utf-8")
    result = run_python(tmp_path, "-m", "rnnfast", "seq2seq", "train", "--tsv", "pairs.tsv", *TINY_RUN)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].startswith("best checkpoint: epoch 1, ")
    assert (tmp_path / "seq2seq-run" / "best.pt").exists()


def test_main_runs_the_seq2seq_commands_in_process(tmp_path, capsys):
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text(PAIRS_TSV, encoding="utf-8")
    run = tmp_path / "run"
    main(["seq2seq", "train", "--tsv", str(tsv), *TINY_RUN, "--output-dir", str(run), "--quiet"])
    assert capsys.readouterr().out.startswith("best checkpoint: epoch 1, ")
    main(["seq2seq", "translate", "--checkpoint", str(run / "best.pt"), "--device", "cpu", "un trois", "deux"])
    assert len(capsys.readouterr().out.splitlines()) == 2
    with pytest.raises(SystemExit) as exit_:
        main(["seq2seq", "evaluate", "--checkpoint", str(tmp_path / "missing.pt")])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.startswith("rnnfast seq2seq evaluate: error: ")


def test_a_missing_optional_module_is_one_line_naming_the_fix(tmp_path):
    code = "import sys; sys.modules['tqdm'] = None; from rnnfast.cli import main; main(['seq2seq', 'train'])"
    result = run_python(tmp_path, "-c", code)
    assert result.returncode == 1
    assert (
        result.stderr
        == 'rnnfast seq2seq train: error: tqdm is not installed; pip install "rnnfast[seq2seq]" installs it\n'
    )


def test_import_is_cheap(tmp_path):
    code = (
        "import sys, rnnfast.cli; print(sorted(m for m in sys.modules if m.startswith(('triton', 'rnnfast.seq2seq'))))"
    )
    result = run_python(tmp_path, "-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "[]\n"


def test_the_installed_console_script(tmp_path):
    """`pip install -e .` (CI's set-up) puts `rnnfast` on the PATH, from pyproject's [project.scripts]."""
    script = Path(sys.executable).parent / "rnnfast"
    if not script.exists():
        pytest.skip("the rnnfast console script is not installed beside this Python")
    environment = {**os.environ, "COLUMNS": str(SCREEN_COLUMNS)}
    for argv, usage in (([], "usage: rnnfast "), (["seq2seq", "train"], "usage: rnnfast seq2seq train [options]")):
        result = subprocess.run(
            [str(script), *argv, "--help"], cwd=tmp_path, env=environment, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(usage)
        assert len(result.stdout.splitlines()) <= SCREEN_LINES
