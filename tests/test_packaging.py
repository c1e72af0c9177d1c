"""Packaging: rnnfast works without triton (the PyTorch path alone), using it on CPU imports neither triton
nor torch._dynamo (a second of start-up and about 160 MB), and the Triton code is importable only as
rnnfast.kernels, never as a top-level `kernels` module (that name belongs to another PyPI package)."""

import os
import shutil
import subprocess
import sys
from importlib.metadata import PackageNotFoundError
from pathlib import Path

import pytest
import torch

import rnnfast
from rnnfast import dispatch

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
          rnnfast.LSTM(3, 4, backend="scan")]
for layer in layers:
    for lengths in (None, torch.tensor([5, 2])):
        layer(x, lengths=lengths)[0].sum().backward()
        with torch.no_grad():
            layer(x, lengths=lengths)
for cell in (rnnfast.LSTMCell(3, 4), rnnfast.GRUCell(3, 4), rnnfast.RNNCell(3, 4, backend="scan")):
    cell(x[0])[0].sum().backward()
print(sorted(name for name in sys.modules if name.split(".")[0] == "triton" or name.startswith("torch._dynamo")))
"""


def test_cpu_use_imports_neither_triton_nor_dynamo(tmp_path):
    """Every CPU path, both backends, inference and training, fixed and variable lengths."""
    result = subprocess.run([sys.executable, "-c", CPU_USE], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_kernels_come_from_the_package_s_own_tree(tmp_path):
    """A second checkout first on the path (beside this one, installed editable) gives rnnfast and
    rnnfast.kernels both from that checkout: the kernels are a subpackage, not a mapped folder."""
    other_checkout = tmp_path / "other-checkout"
    shutil.copytree(Path(rnnfast.__file__).parent, other_checkout / "rnnfast", ignore=shutil.ignore_patterns("*.pyc"))
    code = "import rnnfast, rnnfast.kernels.lstm as k; print(rnnfast.__file__); print(k.__file__)"
    env = {**os.environ, "PYTHONPATH": str(other_checkout)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    package, kernels = (Path(line) for line in result.stdout.split())
    assert package == other_checkout / "rnnfast" / "__init__.py"
    assert kernels == other_checkout / "rnnfast" / "kernels" / "lstm.py"


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

    assert dispatch.installed_triton_version(reader({"triton": "3.6.0"})) == (3, 6)
    assert dispatch.installed_triton_version(reader({"pytorch-triton": "3.10.0+git4f1b4e1f"})) == (3, 10)
    assert dispatch.installed_triton_version(reader({})) is None


def test_triton_older_than_the_kernels_support(monkeypatch):
    """With a Triton older than MIN_TRITON backend="triton" is refused by name, and "auto" on CUDA runs
    torch's own kernels (cuDNN), as it does for float64; with a recent one the Triton kernels run."""
    cuda = torch.device("cuda")

    def path(backend, dtype):
        return dispatch.choose_path(backend, cuda, dtype, cell="lstm")

    assert dispatch.triton_problem((3, 6)) is None
    monkeypatch.setattr(dispatch, "installed_triton_version", lambda: (3, 4))
    with pytest.raises(RuntimeError, match=r"backend='triton' needs triton >= 3.6, found 3.4"):
        path("triton", torch.float16)
    assert path("auto", torch.float16) == "native"
    assert path("scan", torch.float16) == "scan"
    monkeypatch.setattr(dispatch, "installed_triton_version", lambda: (3, 9))
    assert path("auto", torch.float16) == "triton"
    assert path("auto", torch.float64) == "native"
    with pytest.raises(RuntimeError, match="supports float32, float16 and bfloat16"):
        path("triton", torch.float64)
