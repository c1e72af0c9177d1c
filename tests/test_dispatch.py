"""rnnfast.dispatch.choose_path, the one decision of which implementation runs a call, as a table: backend,
device, dtype, tracing and the installed Triton in, NATIVE / SCAN / TRITON or a named error out. The CPU
rules' own table is in test_cpu_dispatch.py, and the modules are checked to follow the choice there."""

import pytest
import torch

from rnnfast import dispatch

CPU, CUDA, META = torch.device("cpu"), torch.device("cuda"), torch.device("meta")
F16, F32, F64 = torch.float16, torch.float32, torch.float64


def choose(backend, device, dtype, traced=False, triton=(3, 9), monkeypatch=None, **rules):
    monkeypatch.setattr(dispatch, "installed_triton_version", lambda: triton)
    return dispatch.choose_path(backend, device, dtype, cell="gru", traced=traced, **rules)


# (backend, device, dtype, traced, Triton version) -> path
TABLE = [
    ("auto", CUDA, F16, False, (3, 9), "triton"),
    ("auto", CUDA, F32, False, (3, 6), "triton"),
    ("auto", CUDA, F64, False, (3, 9), "native"),  # the kernels have no float64: cuDNN, as torch.nn
    ("auto", CUDA, F16, False, (3, 4), "native"),  # a Triton too old for the kernels
    ("auto", CUDA, F64, True, (3, 9), "scan"),  # traced: only rnnfast's custom ops may run
    ("auto", CUDA, F16, True, (3, 4), "scan"),
    ("auto", CUDA, F16, True, (3, 9), "triton"),
    ("auto", CPU, F32, True, (3, 9), "scan"),
    ("auto", CPU, F32, False, (3, 9), "native"),  # inference: torch's C++ loop (the CPU rules)
    ("auto", META, F32, False, (3, 9), "scan"),
    ("scan", CUDA, F16, False, (3, 9), "scan"),
    ("scan", CPU, F64, False, (3, 4), "scan"),
    ("triton", CUDA, F32, False, (3, 9), "triton"),
    ("triton", CUDA, F16, True, (3, 6), "triton"),
    ("triton", CPU, F32, False, (3, 9), "triton"),  # TRITON_INTERPRET=1 (tests/conftest.py)
]


@pytest.mark.parametrize("backend, device, dtype, traced, triton, expected", TABLE, ids=str)
def test_the_path_by_backend_device_dtype_tracing_and_triton(
    backend, device, dtype, traced, triton, expected, monkeypatch
):
    assert choose(backend, device, dtype, traced, triton, monkeypatch) == expected


def test_the_cpu_rules_decide_auto_on_cpu_only(monkeypatch):
    """GRU training at B16 H64 runs the scan on CPU by the rules; on CUDA the same call runs Triton."""
    training = dict(training=True, batch=16, hidden_size=64)
    assert choose("auto", CPU, F32, monkeypatch=monkeypatch, **training) == "scan"
    assert choose("auto", CPU, F32, monkeypatch=monkeypatch, **training, one_step=True) == "native"
    assert choose("auto", CUDA, F32, monkeypatch=monkeypatch, **training) == "triton"


@pytest.mark.parametrize(
    "backend, device, dtype, triton, message",
    [
        ("triton", CUDA, F64, (3, 9), "backend='triton' supports float32, float16 and bfloat16, got torch.float64"),
        ("triton", CUDA, F16, (3, 4), r"backend='triton' needs triton >= 3.6, found 3.4 \(backend='auto' runs"),
        ("triton", META, F32, (3, 9), None),
    ],
    ids=str,
)
def test_triton_refused_with_the_reason(backend, device, dtype, triton, message, monkeypatch):
    if message is None:
        monkeypatch.setenv("TRITON_INTERPRET", "0")
        message = r"backend='triton' needs CUDA tensors \(got meta\); set TRITON_INTERPRET=1"
    with pytest.raises(RuntimeError, match=message):
        choose(backend, device, dtype, False, triton, monkeypatch)


def test_triton_not_installed(monkeypatch):
    monkeypatch.setattr(dispatch, "_TRITON_AVAILABLE", False)
    assert choose("auto", CUDA, F16, monkeypatch=monkeypatch) == "native"
    with pytest.raises(RuntimeError, match="backend='triton' needs the triton package, which is not installed"):
        choose("triton", CUDA, F16, monkeypatch=monkeypatch)


def test_backend_names(monkeypatch):
    """None reads RNNFAST_BACKEND (default "auto"); a name that is none of them is a ValueError listing
    them; "torch", the scan's former name, maps to "scan" with a FutureWarning."""
    assert dispatch.requested_backend(None) == "auto"
    monkeypatch.setenv("RNNFAST_BACKEND", "triton")
    assert dispatch.requested_backend(None) == "triton"
    assert dispatch.requested_backend("scan") == "scan"
    with pytest.raises(ValueError, match=r"backend must be one of \('auto', 'triton', 'scan'\), got 'cudnn'"):
        dispatch.backend_name("cudnn")
    with pytest.warns(FutureWarning, match="backend='torch' is deprecated"):
        assert dispatch.backend_name("torch") == "scan"
