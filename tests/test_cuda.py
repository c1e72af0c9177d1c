"""The Triton kernels compiled for a real GPU against torch.nn (cuDNN) on the same device.

Runs where CUDA is available and Triton's interpreter is off:
    TRITON_INTERPRET=0 python -m pytest -q tests/test_cuda.py
Elsewhere the module is skipped: the interpreter runs of the other test files cover the same kernels on
CPU. RNNFAST_TEST_DEVICE=cpu runs these checks through the interpreter instead (a check of the checks).
"""

import os

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import rnnfast
from tests.oracle import Case, assert_matches, compare_with_torch, make_inputs

DEVICE = torch.device(os.environ.get("RNNFAST_TEST_DEVICE", "cuda"))
if DEVICE.type == "cuda" and (not torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"):
    pytest.skip("needs a CUDA device with TRITON_INTERPRET=0", allow_module_level=True)

CELLS = {
    "lstm": (rnnfast.LSTM, nn.LSTM, {}),
    "lstm-proj": (rnnfast.LSTM, nn.LSTM, {"proj_size": 7}),
    "gru": (rnnfast.GRU, nn.GRU, {}),
    "rnn-tanh": (rnnfast.RNN, nn.RNN, {}),
    "rnn-relu": (rnnfast.RNN, nn.RNN, {"nonlinearity": "relu"}),
}
# Hidden sizes on both sides of the planner's switch from the persistent to the step variant.
HIDDEN_SIZES = [24, 300]


def make_pair(cell: str, hidden: int, dtype: torch.dtype, **options):
    module_class, reference_class, extra = CELLS[cell]
    reference = reference_class(16, hidden, num_layers=2, bidirectional=True, **extra, **options)
    module = module_class(16, hidden, num_layers=2, bidirectional=True, backend="triton", **extra, **options)
    module = module.to(device=DEVICE, dtype=dtype)
    module.load_state_dict(reference.state_dict())
    reference.load_state_dict(module.state_dict())  # the same rounded weights, compared in fp32
    return module, reference.to(device=DEVICE, dtype=torch.float32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("hidden", HIDDEN_SIZES)
@pytest.mark.parametrize("cell", CELLS)
def test_kernels_on_the_device_match_torch_nn(cell, hidden, dtype):
    torch.manual_seed(0)
    module, reference = make_pair(cell, hidden, dtype, batch_first=True)
    case = Case(19, 9, 16, hidden, num_layers=2, bidirectional=True, batch_first=True, with_hx=False)
    x, _ = make_inputs(case)
    # relu's derivative jumps at 0: a unit whose pre-activation rounds to the other side in 16 bits flips its
    # whole gradient path, so against an fp32 oracle only the forward is well-posed there.
    gradients = not (cell == "rnn-relu" and dtype != torch.float32)
    compare_with_torch(module, reference, x.to(DEVICE).to(dtype).float(), dtype=dtype, gradients=gradients)


@pytest.mark.parametrize("hidden", HIDDEN_SIZES)
@pytest.mark.parametrize("cell", CELLS)
def test_variable_lengths_on_the_device_match_packed_torch_nn(cell, hidden):
    torch.manual_seed(1)
    module, reference = make_pair(cell, hidden, torch.float32)
    lengths = torch.tensor([9, 1, 5, 9, 3])
    x = torch.randn(9, 5, 16, device=DEVICE)
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    output, final = module(packed)
    expected, expected_final = reference(packed)
    assert_matches(output.data, expected.data, torch.float32, "packed output")
    finals = final if isinstance(final, tuple) else (final,)
    expected_finals = expected_final if isinstance(expected_final, tuple) else (expected_final,)
    for mine, theirs in zip(finals, expected_finals):
        assert_matches(mine, theirs, torch.float32, "final state")
    grads = torch.autograd.grad(output.data.sum(), list(module.parameters()))
    expected_grads = torch.autograd.grad(expected.data.sum(), list(reference.parameters()))
    for mine, theirs in zip(grads, expected_grads):
        assert_matches(mine, theirs, torch.float32, "parameter gradient")


def test_long_sequence_persistent_kernel():
    """Many steps through one persistent launch: each step must see the h_{t-1} other warps wrote."""
    torch.manual_seed(2)
    module, reference = make_pair("lstm", 128, torch.float32)
    x = torch.randn(512, 3, 16, device=DEVICE)
    compare_with_torch(module, reference, x)
