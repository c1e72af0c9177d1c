"""rnnfast.LSTM / LSTMCell against torch.nn.LSTM / LSTMCell: the shared cell suite plus LSTM specifics."""

import pytest
import torch
from torch import nn

import rnnfast
from rnnfast.functional import resolve_backend
from tests.cell_suite import *  # noqa: F403  the checks every cell must pass
from tests.cell_suite import CellSpec


@pytest.fixture
def spec():
    return CellSpec(rnnfast.LSTM, nn.LSTM, rnnfast.LSTMCell, nn.LSTMCell)


def test_cell_state_shape_error():
    with pytest.raises(RuntimeError, match=r"Expected hidden\[1\] size \(1, 2, 5\), got \[1, 2, 4\]"):
        rnnfast.LSTM(3, 5)(torch.randn(4, 2, 3), (torch.zeros(1, 2, 5), torch.zeros(1, 2, 4)))


def test_backend_resolution(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_backend("auto", cpu, torch.float32) == "torch"
    assert resolve_backend("auto", cuda, torch.float32) == "triton"
    assert resolve_backend("auto", cuda, torch.float64) == "torch"
    monkeypatch.setenv("RNNFAST_BACKEND", "torch")
    assert resolve_backend(None, cuda, torch.float32) == "torch"
    with pytest.raises(RuntimeError, match="supports float32, float16 and bfloat16"):
        resolve_backend("triton", cuda, torch.float64)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="needs CUDA tensors"):
        resolve_backend("triton", cpu, torch.float32)
    monkeypatch.setenv("RNNFAST_BACKEND", "cudnn")
    with pytest.raises(ValueError, match="backend must be one of"):
        resolve_backend(None, cpu, torch.float32)
