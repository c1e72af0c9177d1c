"""The documentation cannot rot: every ```python block of README.md and docs/*.md runs (the blocks of one
file in order, in one namespace, as a reader pasting them would), and every docstring example of the public
names passes as a doctest."""

import doctest
import importlib
import re
from pathlib import Path

import pytest
import torch
from torch import nn

import rnnfast

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)
# The modules whose docstrings carry the public names' examples.
DOCUMENTED_MODULES = ["rnnfast.modules", "rnnfast.convert", "rnnfast.ops"]


def python_blocks(path: Path) -> list[str]:
    return PYTHON_BLOCK.findall(path.read_text())


def test_the_readme_has_a_quick_start():
    assert python_blocks(ROOT / "README.md"), "README.md has no python block"


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda path: path.name)
def test_python_blocks_run(path, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # a block that writes files writes them here
    namespace = {"__name__": "__main__"}
    for number, block in enumerate(python_blocks(path), 1):
        code = compile(block, f"{path.name}, python block {number}", "exec")
        torch.manual_seed(0)
        exec(code, namespace)


@pytest.mark.parametrize("module_name", DOCUMENTED_MODULES)
def test_docstring_examples(module_name):
    module = importlib.import_module(module_name)
    globs = {"torch": torch, "nn": nn, "rnnfast": rnnfast}
    torch.manual_seed(0)
    results = doctest.testmod(module, extraglobs=globs, optionflags=doctest.ELLIPSIS, report=True)
    assert results.attempted > 0, f"{module_name} has no docstring example"
    assert results.failed == 0


def test_every_public_name_has_a_docstring_with_an_example():
    """The six modules and convert/revert say what differs from torch.nn and show one example."""
    for name in rnnfast.__all__:
        doc = getattr(rnnfast, name).__doc__ or ""
        assert ">>> " in doc, f"rnnfast.{name} has no example in its docstring"


def test_the_readme_fits_one_screen_of_sections():
    """Issue 25's shape: at most 200 lines, a quick start of at most 15 lines of Python, the translator's
    command line in at most 6 commands, a performance table of at most 10 rows, and links into docs/."""
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    assert len(python_blocks(ROOT / "README.md")[0].strip().splitlines()) <= 15
    seq2seq = text.split("## The Seq2Seq translator", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    assert len(seq2seq.strip().splitlines()) <= 6
    performance = text.split("## Performance", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in performance.splitlines() if line.startswith("| ") and not line.startswith("| case")]
    assert 0 < len(rows) <= 10
    for path in sorted((ROOT / "docs").glob("*.md")):
        assert f"(docs/{path.name})" in text, f"README.md does not link docs/{path.name}"
