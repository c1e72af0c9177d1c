"""rnnfast.RNN / RNNCell (tanh and relu) against torch.nn.RNN / RNNCell: the shared cell suite plus a
relu check whose units sit on both sides of zero."""

import pytest
import torch
from torch import nn

import rnnfast
from tests.cell_suite import *  # noqa: F403  the checks every cell must pass
from tests.cell_suite import CellSpec
from tests.oracle import compare_with_torch


@pytest.fixture(params=["tanh", "relu"])
def spec(request):
    return CellSpec(rnnfast.RNN, nn.RNN, rnnfast.RNNCell, nn.RNNCell, dict(nonlinearity=request.param))


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_relu_units_on_both_sides_of_zero(backend):
    torch.manual_seed(9)
    reference = nn.RNN(6, 12, num_layers=2, nonlinearity="relu", bidirectional=True)
    module = rnnfast.RNN(6, 12, num_layers=2, nonlinearity="relu", bidirectional=True, backend=backend)
    module.load_state_dict(reference.state_dict())
    x = 2 * torch.randn(7, 4, 6)
    out, _ = reference(x)
    inactive = (out == 0).float().mean().item()
    assert 0.2 < inactive < 0.8, (
        f"only {inactive:.0%} of the relu units are at zero: the test does not cover both sides"
    )
    compare_with_torch(module, reference, x, torch.randn(4, 4, 12))
