"""Packaging: rnnfast works without triton (the PyTorch path alone), using it on CPU imports neither triton
nor torch._dynamo (a second of start-up and about 160 MB), and the Triton code is importable only as
rnnfast.kernels, never as a top-level `kernels` module (that name belongs to another PyPI package)."""

import subprocess
import sys
from importlib.metadata import PackageNotFoundError

import pytest
import torch

from rnnfast import functional

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


CPU_USE = """
import sys
import torch, rnnfast
x = torch.randn(5, 2, 3, requires_grad=True)
layers = [rnnfast.LSTM(3, 4, num_layers=2, bidirectional=True), rnnfast.GRU(3, 4), rnnfast.RNN(3, 4),
          rnnfast.LSTM(3, 4, backend="torch")]
for layer in layers:
    for lengths in (None, torch.tensor([5, 2])):
        layer(x, lengths=lengths)[0].sum().backward()
        with torch.no_grad():
            layer(x, lengths=lengths)
for cell in (rnnfast.LSTMCell(3, 4), rnnfast.GRUCell(3, 4), rnnfast.RNNCell(3, 4, backend="torch")):
    cell(x[0])[0].sum().backward()
print(sorted(name for name in sys.modules if name.split(".")[0] == "triton" or name.startswith("torch._dynamo")))
"""


def test_cpu_use_imports_neither_triton_nor_dynamo(tmp_path):
    """Every CPU path, both backends, inference and training, fixed and variable lengths."""
    result = subprocess.run([sys.executable, "-c", CPU_USE], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_kernels_are_not_a_top_level_module(tmp_path):
    code = "import importlib.util, rnnfast.kernels; print(importlib.util.find_spec('kernels'))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "None"


def test_triton_version_read_from_metadata():
    """The installed Triton's version comes from package metadata (Triton is not imported): "triton", else
    torch nightlies' "pytorch-triton"; a local build's suffix is ignored; nothing found: None."""

    def reader(versions):
        def read(name):
            if name not in versions:
                raise PackageNotFoundError(name)
            return versions[name]

        return read

    assert functional.installed_triton_version(reader({"triton": "3.6.0"})) == (3, 6)
    assert functional.installed_triton_version(reader({"pytorch-triton": "3.10.0+git4f1b4e1f"})) == (3, 10)
    assert functional.installed_triton_version(reader({})) is None


def test_triton_older_than_the_kernels_support(monkeypatch):
    """With a Triton older than MIN_TRITON backend="triton" is refused by name, and "auto" on CUDA runs
    torch's own kernels (cuDNN), as it does for float64; with a recent one the Triton kernels run."""
    cuda = torch.device("cuda")
    assert functional.triton_problem((3, 6)) is None
    monkeypatch.setattr(functional, "installed_triton_version", lambda: (3, 4))
    with pytest.raises(RuntimeError, match=r"backend='triton' needs triton >= 3.6, found 3.4"):
        functional.resolve_backend("triton", cuda, torch.float16)
    assert functional.cuda_runs_native("auto", torch.float16)
    assert not functional.cuda_runs_native("torch", torch.float16)
    monkeypatch.setattr(functional, "installed_triton_version", lambda: (3, 9))
    assert functional.resolve_backend("auto", cuda, torch.float16) == "triton"
    assert not functional.cuda_runs_native("auto", torch.float16)
    assert functional.cuda_runs_native("auto", torch.float64)
    assert not functional.cuda_runs_native("triton", torch.float64)  # refused later, by resolve_backend
