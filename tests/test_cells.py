"""The checks every rnnfast cell must pass against its torch.nn twin (same state_dict), driven by one `spec`
fixture over torch's modes (lstm, gru, rnn_tanh, rnn_relu), then the checks of one cell alone.

backend "triton" runs the kernels through Triton's interpreter (conftest sets TRITON_INTERPRET=1);
backend "scan" is rnnfast's PyTorch scan.
"""

import pytest
import torch
from torch import nn

import rnnfast
from rnnfast.dispatch import choose_path
from rnnfast.kernels import configs
from tests.oracle import (
    SPECS,
    Case,
    CellSpec,
    as_list,
    as_state,
    assert_matches,
    compare_with_torch,
    strided_grad_output,
)

BACKENDS = ["scan", "triton"]

CASES = [
    Case(3, 6, 5, 17),
    Case(1, 1, 5, 17),  # T=1, batch 1
    Case(4, 5, 16, 100, num_layers=2),  # H not a power of two, over one tile
    Case(2, 4, 7, 20, num_layers=3, bidirectional=True),
    Case(5, 3, 6, 8, num_layers=2, bidirectional=True, batch_first=True, with_hx=False),
    Case(17, 3, 5, 5),  # batch over one tile, tiny H
]


@pytest.fixture(params=SPECS, ids=lambda spec: spec.mode)
def spec(request) -> CellSpec:
    return request.param


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_matches_torch_nn(spec, case, backend):
    torch.manual_seed(0)
    module, reference = spec.pair(case, backend=backend)
    x, hx = spec.inputs(case)
    compare_with_torch(module, reference, x, hx, grad_output=strided_grad_output(case))
    with torch.no_grad():  # inference: the kernels keep no activations (the LSTM's c in a ring of 2 slots)
        compare_with_torch(module, reference, x, hx, gradients=False)


@pytest.mark.parametrize("weights", ["stationary", "streamed"])
def test_weight_slice_stationary_and_streamed(spec, weights, monkeypatch):
    if weights == "streamed":  # no operand fits the budget: every pass streams W_hh in chunks
        monkeypatch.setattr(configs, "OPERAND_BUDGET_BYTES", 0)
        monkeypatch.setattr(configs, "_PLANS", {})  # plans made under this budget only, then forgotten
    case = Case(3, 4, 6, 70, bidirectional=True)  # H = 64 + 16 (one K piece rounded up)
    plan = configs.plan_layer(spec.mode, case.hidden_size, case.batch, torch.float32)
    assert plan.forward.stationary == plan.backward.stationary == (weights == "stationary")
    assert plan.forward.hidden_tiles > 1
    torch.manual_seed(1)
    module, reference = spec.pair(case, backend="triton")
    compare_with_torch(module, reference, *spec.inputs(case))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_k_split_across_warps(spec, dtype):
    case = Case(3, 3, 8, 192, bidirectional=True)  # K = 128 + 64 (forward), split 2 or 4 ways per piece
    plan = configs.plan_layer(spec.mode, case.hidden_size, case.batch, dtype)
    assert plan.forward.k_split > 1 and plan.backward.k_split > 1 and len(plan.forward.k_pieces) > 1
    torch.manual_seed(5)
    module, reference = spec.pair(case, dtype=dtype, backend="triton")
    x, hx = spec.inputs(case)
    round_trip = lambda t: t.to(dtype).float()  # noqa: E731  the same rounded values for both
    hx = as_state([round_trip(h) for h in as_list(hx)], hx)
    compare_with_torch(module, reference, round_trip(x), hx, dtype=dtype, grad_output=strided_grad_output(case))


def test_several_batch_tiles(spec):
    case = Case(70, 2, 4, 9)
    plan = configs.plan_layer(spec.mode, case.hidden_size, case.batch, torch.float32)
    assert plan.forward.batch_tiles == plan.backward.batch_tiles == 2
    torch.manual_seed(2)
    module, reference = spec.pair(case, backend="triton")
    compare_with_torch(module, reference, *spec.inputs(case))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_precision(spec, dtype, backend):
    torch.manual_seed(3)
    case = Case(3, 5, 8, 20, num_layers=2, bidirectional=True)
    module, reference = spec.pair(case, dtype=dtype, backend=backend)
    x, hx = spec.inputs(case)
    round_trip = lambda t: t.to(dtype).float()  # noqa: E731  the same rounded values for both
    hx = as_state([round_trip(h) for h in as_list(hx)], hx)
    compare_with_torch(module, reference, round_trip(x), hx, dtype=dtype)


@pytest.mark.parametrize("backend", BACKENDS)
def test_unbatched_input(spec, backend):
    torch.manual_seed(4)
    module, reference = spec.pair(Case(1, 4, 5, 9, num_layers=2, bidirectional=True), backend=backend)
    x = torch.randn(4, 5)
    hx = tuple(torch.randn(4, 9) for _ in range(2)) if spec.is_lstm else torch.randn(4, 9)
    compare_with_torch(module, reference, x, hx)
    compare_with_torch(module, reference, x)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_cell(spec, backend, batched, bias):
    torch.manual_seed(5)
    reference = spec.reference_cell(6, 11, bias=bias, **spec.options)
    cell = spec.cell(6, 11, bias=bias, backend=backend, **spec.options)
    cell.load_state_dict(reference.state_dict())
    shape = (3,) if batched else ()
    x = torch.randn(*shape, 6)
    hx = tuple(torch.randn(*shape, 11) for _ in range(2 if spec.is_lstm else 1))

    def call(module, x, hx):
        return as_list(module(x, hx if spec.is_lstm else hx[0]))

    for mine, theirs in zip(as_list(cell(x)), as_list(reference(x))):
        assert_matches(mine, theirs, torch.float32, "fp32 result")
    inputs = [t.clone().requires_grad_() for t in (x, *hx)]
    ref_inputs = [t.clone().requires_grad_() for t in (x, *hx)]
    outputs = call(cell, inputs[0], tuple(inputs[1:]))
    ref_outputs = call(reference, ref_inputs[0], tuple(ref_inputs[1:]))
    for mine, theirs in zip(outputs, ref_outputs):
        assert_matches(mine, theirs, torch.float32, "fp32 result")
    grad_outputs = [torch.randn_like(o) for o in ref_outputs]
    grads = torch.autograd.grad(outputs, inputs + list(cell.parameters()), grad_outputs)
    ref_grads = torch.autograd.grad(ref_outputs, ref_inputs + list(reference.parameters()), grad_outputs)
    for mine, theirs in zip(grads, ref_grads):
        assert_matches(mine, theirs, torch.float32, "fp32 result")


@pytest.mark.parametrize("bidirectional", [False, True])
def test_float64_gradcheck_of_the_scan(spec, bidirectional):
    torch.manual_seed(6)
    module = spec.module(3, 4, num_layers=2, bidirectional=bidirectional, backend="scan", **spec.options).double()
    states = 4 if bidirectional else 2
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    hx = [torch.randn(states, 2, 4, dtype=torch.float64, requires_grad=True) for _ in range(2 if spec.is_lstm else 1)]
    names = [name for name, _ in module.named_parameters()]

    def run(x, *tensors):
        hidden, weights = tensors[: len(hx)], tensors[len(hx) :]
        out, final = torch.func.functional_call(
            module, dict(zip(names, weights)), (x, tuple(hidden) if spec.is_lstm else hidden[0])
        )
        return (out, *as_list(final))

    weights = [p.detach().clone().requires_grad_() for p in module.parameters()]
    assert torch.autograd.gradcheck(run, (x, *hx, *weights))


def test_dropout_matches_torch_nn_rng(spec):
    torch.manual_seed(7)
    module, reference = spec.pair(Case(2, 5, 4, 6, num_layers=3), dropout=0.5)
    x = torch.randn(5, 2, 4)
    torch.manual_seed(8)
    expected, _ = reference(x)
    torch.manual_seed(8)
    actual, _ = module(x)
    assert_matches(actual, expected, torch.float32, "fp32 result")
    module.eval()
    reference.eval()
    assert_matches(module(x)[0], reference(x)[0], torch.float32, "fp32 result")


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bidir"])
def test_dropout_on_packed_input_matches_torch_nn_rng(spec, bidirectional):
    """torch.nn's layers run on the packed rows, so its dropout draws over them, not over a padded
    tensor: rnnfast draws the same scales (wavefront.dropout_noise) and gets the same outputs and
    gradients."""
    torch.manual_seed(9)
    module, reference = spec.pair(Case(3, 5, 4, 6, num_layers=3, bidirectional=bidirectional), dropout=0.5)
    x = torch.randn(5, 3, 4)
    packed = nn.utils.rnn.pack_padded_sequence(x, torch.tensor([3, 5, 2]), enforce_sorted=False)
    results = []
    for layers in (module, reference):
        torch.manual_seed(10)
        out, _ = layers(packed)
        results.append((out.data, *torch.autograd.grad(out.data.sum(), list(layers.parameters()))))
    for mine, theirs in zip(*results):
        assert_matches(mine, theirs, torch.float32, "output or gradient with dropout on packed input")


def test_state_dict_round_trip(spec):
    options = dict(num_layers=2, bidirectional=True, bias=False, **spec.options)
    reference = spec.reference(5, 7, **options)
    module = spec.module(5, 7, **options)
    module.load_state_dict(reference.state_dict())
    back = spec.reference(5, 7, **options)
    back.load_state_dict(module.state_dict())
    assert list(module.state_dict()) == list(reference.state_dict())
    for key, value in reference.state_dict().items():
        assert torch.equal(back.state_dict()[key], value)


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_grad_saves_nothing(spec, backend):
    module = spec.module(4, 8, num_layers=2, backend=backend, **spec.options)
    x = torch.randn(3, 2, 4)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        with torch.no_grad():
            out, _ = module(x)
        assert out.grad_fn is None and not saved
        module(x)
    assert saved


@pytest.mark.parametrize("backend", BACKENDS)
def test_backward_twice_with_retain_graph(spec, backend):
    module = spec.module(4, 8, backend=backend, **spec.options)
    out, final = module(torch.randn(3, 2, 4))
    loss = out.sum() + (final[1] if spec.is_lstm else final).sum()
    first = torch.autograd.grad(loss, list(module.parameters()), retain_graph=True)
    second = torch.autograd.grad(loss, list(module.parameters()))
    for a, b in zip(first, second):
        assert torch.equal(a, b)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_batch_like_torch_nn(spec, backend):
    module, reference = spec.pair(Case(0, 4, 3, 5, num_layers=2, bidirectional=True), backend=backend)
    x = torch.randn(4, 0, 3, requires_grad=True)
    out, final = module(x)
    ref_out, ref_final = reference(x)
    assert out.shape == ref_out.shape
    for mine, theirs in zip(as_list(final), as_list(ref_final)):
        assert mine.shape == theirs.shape
    out.sum().backward()
    assert x.grad.shape == x.shape


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_input_gives_nan_output(spec, backend):
    module = spec.module(3, 5, backend=backend, **spec.options)
    with torch.no_grad():  # keep every unit's pre-activation away from relu's flat side
        module.weight_ih_l0.fill_(0.5)
    x = torch.rand(4, 2, 3)
    x[1, 0, 0] = float("nan")
    out, final = module(x)
    h_n = as_list(final)[0]
    assert out[1:, 0].isnan().all() and not out[:, 1].isnan().any()
    assert h_n[0, 0].isnan().all() and not h_n[0, 1].isnan().any()


# What a layer must refuse, by name: (call(module, spec), error, message). In the message, {name} stands for
# the layer's class name and {hidden} for torch.nn's name of h0 ("hidden[0]" in an LSTM's (h0, c0)).
BAD_INPUTS = {
    "input-1d": (lambda m, s: m(torch.randn(3)), ValueError, "{name}: Expected input to be 2D or 3D, got 1D"),
    "input-4d": (lambda m, s: m(torch.randn(4, 2, 3, 1)), ValueError, "Expected input to be 2D or 3D, got 4D"),
    "input-size": (
        lambda m, s: m(torch.randn(4, 2, 6)),
        RuntimeError,
        "input.size(-1) must be equal to input_size. Expected 3, got 6",
    ),
    "input-dtype": (
        lambda m, s: m(torch.randn(4, 2, 3).double()),
        ValueError,
        "RNN input dtype (torch.float64) does not match weight dtype",
    ),
    "hidden-batch": (
        lambda m, s: m(torch.randn(4, 2, 3), s.state(1, 3, 5)),
        RuntimeError,
        "Expected {hidden} size (1, 2, 5), got [1, 3, 5]",
    ),
    "hidden-2d-with-3d-input": (
        lambda m, s: m(torch.randn(4, 2, 3), s.state(2, 5)),
        RuntimeError,
        "should also be 3-D",
    ),
    "hidden-3d-with-2d-input": (
        lambda m, s: m(torch.randn(4, 3), s.state(1, 1, 5)),
        RuntimeError,
        "should also be 2-D",
    ),
    "hidden-of-the-other-kind": (  # a lone tensor for the LSTM, a tuple for the others
        lambda m, s: m(torch.randn(4, 2, 3), s.state(1, 2, 5)[0] if s.is_lstm else (torch.zeros(1, 2, 5),)),
        TypeError,
        "hx must be a",
    ),
    "input-on-another-device": (
        lambda m, s: m(torch.randn(4, 2, 3, device="meta")),
        RuntimeError,
        "Input and parameter tensors are not at the same device",
    ),
    "empty-sequence": (
        lambda m, s: m(torch.randn(0, 2, 3)),
        RuntimeError,
        "Expected sequence length to be larger than 0 in RNN",
    ),
}


@pytest.mark.parametrize("bad", BAD_INPUTS)
def test_bad_input_errors(spec, bad):
    call, error, message = BAD_INPUTS[bad]
    with pytest.raises(error) as raised:
        call(spec.module(3, 5, **spec.options), spec)
    message = message.format(name=spec.module.__name__, hidden="hidden[0]" if spec.is_lstm else "hidden")
    assert message in str(raised.value)


@pytest.mark.parametrize("dims", [1, 4])
def test_input_rank_error_is_torch_nns(spec, dims):
    """The same words as torch.nn's, which differ by class ("got 1D tensor instead" for nn.RNN only)."""
    x = torch.randn(*[2] * (dims - 1), 3)
    with pytest.raises(ValueError) as expected:
        spec.reference(3, 5, **spec.options)(x)
    with pytest.raises(ValueError) as raised:
        spec.module(3, 5, **spec.options)(x)
    assert str(raised.value) == str(expected.value)


def test_hidden_dtype_mismatch_is_refused(spec):
    hx = (torch.zeros(1, 2, 5).double(), torch.zeros(1, 2, 5)) if spec.is_lstm else torch.zeros(1, 2, 5).double()
    with pytest.raises(RuntimeError, match="Input and hidden tensors are not the same dtype"):
        spec.module(3, 5, **spec.options)(torch.randn(4, 2, 3), hx)


def test_bad_cell_input_errors(spec):
    cell = spec.cell(3, 5, **spec.options)
    hx = spec.state
    cases = [
        (
            lambda: cell(torch.randn(2, 2, 3)),
            ValueError,
            f"{spec.cell.__name__}: Expected input to be 1D or 2D, got 3D instead",
        ),
        (lambda: cell(torch.randn(2, 4)), RuntimeError, "input has inconsistent input_size: got 4 expected 3"),
        (
            lambda: cell(torch.randn(2, 3), hx(3, 5)),
            RuntimeError,
            "Input batch size 2 doesn't match hidden0 batch size 3",
        ),
        (
            lambda: cell(torch.randn(2, 3), hx(2, 4)),
            RuntimeError,
            "hidden0 has inconsistent hidden_size: got 4, expected 5",
        ),
    ]
    for call, error, message in cases:
        with pytest.raises(error) as raised:
            call()
        assert message in str(raised.value)


def test_unknown_backend_is_refused(spec):
    with pytest.raises(ValueError, match="backend must be one of"):
        spec.module(3, 5, backend="cudnn", **spec.options)
    with pytest.raises(ValueError, match="backend must be one of"):
        spec.cell(3, 5, backend="cudnn", **spec.options)


# ------------------------------------------------------------------------------------- one cell alone


def test_lstm_cell_state_shape_error():
    with pytest.raises(RuntimeError, match=r"Expected hidden\[1\] size \(1, 2, 5\), got \[1, 2, 4\]"):
        rnnfast.LSTM(3, 5)(torch.randn(4, 2, 3), (torch.zeros(1, 2, 5), torch.zeros(1, 2, 4)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_rnn_relu_units_on_both_sides_of_zero(backend):
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


def test_backend_resolution(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")

    def path(backend, device, dtype):
        return choose_path(backend, device, dtype, cell="lstm", traced=True)

    assert path("auto", cpu, torch.float32) == "scan"
    assert path("auto", cuda, torch.float32) == "triton"
    assert path("auto", cuda, torch.float64) == "scan"
    monkeypatch.setenv("RNNFAST_BACKEND", "scan")
    assert path(None, cuda, torch.float32) == "scan"
    with pytest.raises(RuntimeError, match="supports float32, float16 and bfloat16"):
        path("triton", cuda, torch.float64)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="needs CUDA tensors"):
        path("triton", cpu, torch.float32)
    monkeypatch.setenv("RNNFAST_BACKEND", "cudnn")
    with pytest.raises(ValueError, match="backend must be one of"):
        path(None, cpu, torch.float32)
