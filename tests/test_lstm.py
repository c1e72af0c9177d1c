"""rnnfast.LSTM / LSTMCell against torch.nn.LSTM / LSTMCell with the same state_dict.

backend "triton" runs the kernels through Triton's interpreter (conftest sets TRITON_INTERPRET=1);
backend "torch" is the pure-PyTorch fallback.
"""

from dataclasses import dataclass

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import rnnfast
from rnnfast.functional import resolve_backend
from rnnfast.kernels import configs
from tests.oracle import compare_with_torch

BACKENDS = ["torch", "triton"]


@dataclass(frozen=True)
class Case:
    batch: int
    seq_len: int
    input_size: int
    hidden_size: int
    num_layers: int = 1
    bidirectional: bool = False
    batch_first: bool = False
    with_hx: bool = True

    def __str__(self):
        flags = ["bidir" if self.bidirectional else "", "bfirst" if self.batch_first else "", "" if self.with_hx else "nohx"]
        parts = [f"B{self.batch}", f"T{self.seq_len}", f"I{self.input_size}", f"H{self.hidden_size}", f"L{self.num_layers}"]
        return "-".join(parts + [f for f in flags if f])


CASES = [
    Case(3, 6, 5, 17),
    Case(1, 1, 5, 17),  # T=1, batch 1
    Case(4, 5, 16, 100, num_layers=2),  # H not a power of two, over one tile
    Case(2, 4, 7, 20, num_layers=3, bidirectional=True),
    Case(5, 3, 6, 8, num_layers=2, bidirectional=True, batch_first=True, with_hx=False),
    Case(17, 3, 5, 5),  # batch over one tile, tiny H
]


def make_pair(case: Case, dtype=torch.float32, backend="torch", **kwargs):
    args = (case.input_size, case.hidden_size, case.num_layers)
    options = dict(bidirectional=case.bidirectional, batch_first=case.batch_first, **kwargs)
    reference = nn.LSTM(*args, **options)
    module = rnnfast.LSTM(*args, **options, backend=backend).to(dtype)
    module.load_state_dict(reference.state_dict())
    if dtype != torch.float32:  # compare against fp32 on the very same rounded weights
        reference.load_state_dict(module.state_dict())
        reference.float()
    return module, reference


def make_inputs(case: Case, dtype=torch.float32, strided=True):
    """Input and hx; the input is a strided view (every other feature of a wider tensor) when asked."""
    shape = (case.batch, case.seq_len) if case.batch_first else (case.seq_len, case.batch)
    x = torch.randn(*shape, 2 * case.input_size, dtype=dtype)[..., ::2] if strided else torch.randn(*shape, case.input_size)
    states = case.num_layers * (2 if case.bidirectional else 1)
    hx = None
    if case.with_hx:
        hx = (torch.randn(states, case.batch, case.hidden_size, dtype=dtype), torch.randn(states, case.batch, case.hidden_size, dtype=dtype))
    return x, hx


def strided_grad_output(case: Case) -> torch.Tensor:
    directions = 2 if case.bidirectional else 1
    shape = (case.batch, case.seq_len) if case.batch_first else (case.seq_len, case.batch)
    return torch.randn(*shape, 3 * directions * case.hidden_size)[..., ::3]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_matches_torch_nn(case, backend):
    torch.manual_seed(0)
    module, reference = make_pair(case, backend=backend)
    x, hx = make_inputs(case)
    compare_with_torch(module, reference, x, hx, grad_output=strided_grad_output(case))


@pytest.mark.parametrize("variant", ["persistent", "step"])
@pytest.mark.parametrize("hidden_size", [24, 70])
def test_both_kernel_variants(hidden_size, variant, monkeypatch):
    monkeypatch.setattr(configs, "PERSISTENT_MAX_HIDDEN", 10_000 if variant == "persistent" else 0)
    assert configs.plan_scan(hidden_size, torch.float32).variant == variant
    torch.manual_seed(1)
    case = Case(3, 4, 6, hidden_size, bidirectional=True)
    module, reference = make_pair(case, backend="triton")
    compare_with_torch(module, reference, *make_inputs(case))


def test_step_variant_at_its_real_size():
    case = Case(2, 2, 4, 300)
    assert configs.plan_scan(case.hidden_size, torch.float32).variant == "step"
    torch.manual_seed(2)
    module, reference = make_pair(case, backend="triton")
    compare_with_torch(module, reference, *make_inputs(case))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_precision(dtype, backend):
    torch.manual_seed(3)
    case = Case(3, 5, 8, 20, num_layers=2, bidirectional=True)
    module, reference = make_pair(case, dtype=dtype, backend=backend)
    x, hx = make_inputs(case)
    x = x.to(dtype).float()  # the same rounded input for both
    hx = tuple(h.to(dtype).float() for h in hx)
    compare_with_torch(module, reference, x, hx, dtype=dtype)


@pytest.mark.parametrize("backend", BACKENDS)
def test_unbatched_input(backend):
    torch.manual_seed(4)
    module, reference = make_pair(Case(1, 4, 5, 9, num_layers=2, bidirectional=True), backend=backend)
    x = torch.randn(4, 5)
    hx = (torch.randn(4, 9), torch.randn(4, 9))
    compare_with_torch(module, reference, x, hx)
    compare_with_torch(module, reference, x)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_lstm_cell(backend, batched, bias):
    torch.manual_seed(5)
    reference = nn.LSTMCell(6, 11, bias=bias)
    cell = rnnfast.LSTMCell(6, 11, bias=bias, backend=backend)
    cell.load_state_dict(reference.state_dict())
    shape = (3,) if batched else ()
    x = torch.randn(*shape, 6)
    hx = (torch.randn(*shape, 11), torch.randn(*shape, 11))

    ref_h, ref_c = reference(x, hx)
    h, c = cell(x, hx)
    torch.testing.assert_close(h, ref_h, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(c, ref_c, atol=1e-5, rtol=1e-5)
    h0, c0 = cell(x)
    ref_h0, ref_c0 = reference(x)
    torch.testing.assert_close(h0, ref_h0, atol=1e-5, rtol=1e-5)

    inputs = [t.clone().requires_grad_() for t in (x, *hx)]
    ref_inputs = [t.clone().requires_grad_() for t in (x, *hx)]
    g_h, g_c = torch.randn_like(h), torch.randn_like(c)
    grads = torch.autograd.grad(cell(inputs[0], tuple(inputs[1:])), inputs + list(cell.parameters()), (g_h, g_c))
    ref_grads = torch.autograd.grad(
        reference(ref_inputs[0], tuple(ref_inputs[1:])), ref_inputs + list(reference.parameters()), (g_h, g_c)
    )
    for mine, theirs in zip(grads, ref_grads):
        torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_float64_gradcheck_of_fallback(bidirectional):
    torch.manual_seed(6)
    module = rnnfast.LSTM(3, 4, num_layers=2, bidirectional=bidirectional, backend="torch").double()
    states = 4 if bidirectional else 2
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(states, 2, 4, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(states, 2, 4, dtype=torch.float64, requires_grad=True)
    names = [name for name, _ in module.named_parameters()]

    def run(x, h0, c0, *weights):
        out, (h, c) = torch.func.functional_call(module, dict(zip(names, weights)), (x, (h0, c0)))
        return out, h, c

    weights = [p.detach().clone().requires_grad_() for p in module.parameters()]
    assert torch.autograd.gradcheck(run, (x, h0, c0, *weights))


def test_dropout_matches_torch_nn_rng():
    torch.manual_seed(7)
    module, reference = make_pair(Case(2, 5, 4, 6, num_layers=3), dropout=0.5)
    x = torch.randn(5, 2, 4)
    torch.manual_seed(8)
    expected, _ = reference(x)
    torch.manual_seed(8)
    actual, _ = module(x)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)
    module.eval()
    reference.eval()
    torch.testing.assert_close(module(x)[0], reference(x)[0], atol=1e-5, rtol=1e-5)


def test_state_dict_round_trip():
    reference = nn.LSTM(5, 7, num_layers=2, bidirectional=True, bias=False)
    module = rnnfast.LSTM(5, 7, num_layers=2, bidirectional=True, bias=False)
    module.load_state_dict(reference.state_dict())
    back = nn.LSTM(5, 7, num_layers=2, bidirectional=True, bias=False)
    back.load_state_dict(module.state_dict())
    assert list(module.state_dict()) == list(reference.state_dict())
    for key, value in reference.state_dict().items():
        assert torch.equal(back.state_dict()[key], value)


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_grad_saves_nothing(backend):
    module = rnnfast.LSTM(4, 8, num_layers=2, backend=backend)
    x = torch.randn(3, 2, 4)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        with torch.no_grad():
            out, _ = module(x)
        assert out.grad_fn is None and not saved
        module(x)
    assert saved


@pytest.mark.parametrize("backend", BACKENDS)
def test_backward_twice_with_retain_graph(backend):
    module = rnnfast.LSTM(4, 8, backend=backend)
    out, (h, c) = module(torch.randn(3, 2, 4))
    loss = out.sum() + c.sum()
    first = torch.autograd.grad(loss, list(module.parameters()), retain_graph=True)
    second = torch.autograd.grad(loss, list(module.parameters()))
    for a, b in zip(first, second):
        assert torch.equal(a, b)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_batch_like_torch_nn(backend):
    module, reference = make_pair(Case(0, 4, 3, 5, num_layers=2, bidirectional=True), backend=backend)
    x = torch.randn(4, 0, 3, requires_grad=True)
    out, (h, c) = module(x)
    ref_out, (ref_h, ref_c) = reference(x)
    assert out.shape == ref_out.shape and h.shape == ref_h.shape and c.shape == ref_c.shape
    out.sum().backward()
    assert x.grad.shape == x.shape


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_input_gives_nan_output(backend):
    module = rnnfast.LSTM(3, 5, backend=backend)
    x = torch.randn(4, 2, 3)
    x[1, 0, 0] = float("nan")
    out, (h, c) = module(x)
    assert out[1:, 0].isnan().all() and not out[:, 1].isnan().any()
    assert h[0, 0].isnan().all() and c[0, 0].isnan().all()


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda m: m(torch.randn(3)), ValueError, "Expected input to be 2D or 3D, got 1D"),
        (lambda m: m(torch.randn(4, 2, 3, 1)), ValueError, "Expected input to be 2D or 3D, got 4D"),
        (lambda m: m(torch.randn(4, 2, 6)), RuntimeError, "input.size(-1) must be equal to input_size. Expected 3, got 6"),
        (lambda m: m(torch.randn(4, 2, 3).double()), ValueError, "RNN input dtype (torch.float64) does not match weight dtype"),
        (lambda m: m(torch.randn(4, 2, 3), (torch.zeros(1, 3, 5), torch.zeros(1, 3, 5))), RuntimeError, "Expected hidden[0] size (1, 2, 5), got [1, 3, 5]"),
        (lambda m: m(torch.randn(4, 2, 3), (torch.zeros(1, 2, 5), torch.zeros(1, 2, 4))), RuntimeError, "Expected hidden[1] size (1, 2, 5), got [1, 2, 4]"),
        (lambda m: m(torch.randn(4, 2, 3), (torch.zeros(2, 5), torch.zeros(2, 5))), RuntimeError, "hx and cx should also be 3-D"),
        (lambda m: m(torch.randn(4, 2, 3), torch.zeros(1, 2, 5)), TypeError, "hx must be a tuple (h_0, c_0)"),
        (lambda m: m(torch.randn(4, 2, 3), (torch.zeros(1, 2, 5).double(), torch.zeros(1, 2, 5))), RuntimeError, "Input and hidden tensors are not the same dtype"),
        (lambda m: m(torch.randn(4, 2, 3, device="meta")), RuntimeError, "Input and parameter tensors are not at the same device"),
        (lambda m: m(torch.randn(0, 2, 3)), RuntimeError, "Expected sequence length to be larger than 0 in RNN"),
        (lambda m: m(pack_padded_sequence(torch.randn(4, 2, 3), torch.tensor([4, 2]))), NotImplementedError, "PackedSequence"),
    ],
)
def test_bad_input_errors(call, error, message):
    module = rnnfast.LSTM(3, 5)
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        call(module)


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda c: c(torch.randn(2, 2, 3)), ValueError, "LSTMCell: Expected input to be 1D or 2D, got 3D instead"),
        (lambda c: c(torch.randn(2, 4)), RuntimeError, "input has inconsistent input_size: got 4 expected 3"),
        (lambda c: c(torch.randn(2, 3), (torch.zeros(3, 5), torch.zeros(3, 5))), RuntimeError, "Input batch size 2 doesn't match hidden0 batch size 3"),
        (lambda c: c(torch.randn(2, 3), (torch.zeros(2, 5), torch.zeros(2, 4))), RuntimeError, "hidden1 has inconsistent hidden_size: got 4, expected 5"),
    ],
)
def test_bad_cell_input_errors(call, error, message):
    with pytest.raises(error, match=message):
        call(rnnfast.LSTMCell(3, 5))


def test_unsupported_settings_are_refused():
    with pytest.raises(NotImplementedError, match="proj_size"):
        rnnfast.LSTM(3, 5, proj_size=2)
    with pytest.raises(ValueError, match="backend must be one of"):
        rnnfast.LSTM(3, 5, backend="cudnn")


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
