"""Packaging: rnnfast works without triton (the PyTorch path alone), and the Triton code is importable only
as rnnfast.kernels, never as a top-level `kernels` module (that name belongs to another PyPI package)."""

import subprocess
import sys

WITHOUT_TRITON = """
import sys
sys.modules["triton"] = None  # `import triton` now fails, as where it is not installed
import torch, rnnfast
output, _ = rnnfast.GRU(3, 4)(torch.randn(5, 2, 3))
assert output.shape == (5, 2, 4)
assert "rnnfast.kernels" not in sys.modules
try:
    rnnfast.LSTM(3, 4, backend="triton")(torch.randn(5, 2, 3))
except RuntimeError as error:
    print(error)
"""


def test_import_and_cpu_path_without_triton(tmp_path):
    result = subprocess.run([sys.executable, "-c", WITHOUT_TRITON], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "backend='triton' needs the triton package, which is not installed" in result.stdout


def test_kernels_are_not_a_top_level_module(tmp_path):
    code = "import importlib.util, rnnfast.kernels; print(importlib.util.find_spec('kernels'))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "None"
