"""Every way torch.nn's parameters are used reaches rnnfast too: parametrizations (weight_norm and custom
ones), torch.func.functional_call, non-contiguous parameters, second-order gradients, and torch.nn's
constructor checks. Each against torch.nn with the same parameters, on both backends (Triton through the
interpreter)."""

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations, parametrize

import rnnfast
from tests.oracle import assert_matches

BACKENDS = ["scan", "triton", "auto"]
SEQ_LEN, BATCH, INPUT, HIDDEN = 4, 3, 5, 6
# (rnnfast/torch.nn class name, constructor options): every cell kind, layers and cells.
LAYERS = [
    ("LSTM", {}),
    ("LSTM", {"proj_size": 4}),
    ("GRU", {}),
    ("RNN", {"nonlinearity": "tanh"}),
    ("RNN", {"nonlinearity": "relu"}),
]
LAYER_IDS = ["lstm", "lstm-proj", "gru", "rnn_tanh", "rnn_relu"]
CELLS = [
    ("LSTMCell", {}),
    ("GRUCell", {}),
    ("RNNCell", {"nonlinearity": "tanh"}),
    ("RNNCell", {"nonlinearity": "relu"}),
]
CELL_IDS = ["lstm_cell", "gru_cell", "rnn_tanh_cell", "rnn_relu_cell"]


def make_twins(name: str, options: dict, backend: str, **extra):
    torch.manual_seed(0)
    is_cell = name.endswith("Cell")
    args = (INPUT, HIDDEN) if is_cell else (INPUT, HIDDEN, 2)
    if not is_cell:
        extra = dict(bidirectional=True, **extra)
    reference = getattr(nn, name)(*args, **options, **extra)
    module = getattr(rnnfast, name)(*args, **options, **extra, backend=backend)
    module.load_state_dict(reference.state_dict())
    return module, reference


def make_input(name: str) -> torch.Tensor:
    return torch.randn(BATCH, INPUT) if name.endswith("Cell") else torch.randn(SEQ_LEN, BATCH, INPUT)


def call(module, x: torch.Tensor) -> torch.Tensor:
    """The output sequence of a layer, h' of a cell (h' of an LSTMCell's (h', c')). Cells get a non-zero
    state, so that weight_hh matters."""
    if not isinstance(module, nn.RNNCellBase):
        return module(x)[0]
    h = torch.linspace(-1, 1, x.shape[0] * module.hidden_size).view(x.shape[0], -1)
    result = module(x, (h, h.flip(0)) if isinstance(module, nn.LSTMCell) else h)
    return result[0] if isinstance(result, tuple) else result


def assert_same_run(module, reference, x, what: str) -> None:
    """Output and the gradients of the input and of every leaf parameter (parametrization originals
    included) match torch.nn's."""
    ref_x, my_x = x.clone().requires_grad_(), x.clone().requires_grad_()
    ref_out, out = call(reference, ref_x), call(module, my_x)
    assert_matches(out, ref_out, torch.float32, f"{what}: output")
    grad_output = torch.randn_like(ref_out)
    ref_params, params = dict(reference.named_parameters()), dict(module.named_parameters())
    assert ref_params.keys() == params.keys()
    ref_grads = torch.autograd.grad(ref_out, [ref_x, *ref_params.values()], grad_output)
    grads = torch.autograd.grad(out, [my_x, *params.values()], grad_output)
    for name, mine, theirs in zip(["input", *params], grads, ref_grads):
        assert_matches(mine, theirs, torch.float32, f"{what}: grad of {name}")


def weight_names(module) -> list[str]:
    return [name for name, _ in module.named_parameters()]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name, options", LAYERS + CELLS, ids=LAYER_IDS + CELL_IDS)
def test_weight_norm_on_the_recurrent_weight(name, options, backend):
    """torch's recommended weight_norm: the forward follows g, and g and v get torch.nn's gradients."""
    module, reference = make_twins(name, options, backend)
    weight = "weight_hh" if name.endswith("Cell") else "weight_hh_l1_reverse"
    for m in (module, reference):
        parametrizations.weight_norm(m, weight)
    x = make_input(name)
    before = call(module, x).detach()
    for m in (module, reference):
        with torch.no_grad():
            getattr(m.parametrizations, weight).original0.mul_(3)
    assert not torch.allclose(call(module, x), before), "the forward ignored the new g"
    assert_same_run(module, reference, x, "weight_norm")


class Scaled(nn.Module):
    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return 0.5 * weight.tanh()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name, options", LAYERS + CELLS, ids=LAYER_IDS + CELL_IDS)
def test_custom_parametrization_of_every_weight(name, options, backend):
    module, reference = make_twins(name, options, backend)
    for m in (module, reference):
        for weight in weight_names(m):
            parametrize.register_parametrization(m, weight, Scaled())
    assert_same_run(module, reference, make_input(name), "parametrize")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name, options", LAYERS + CELLS, ids=LAYER_IDS + CELL_IDS)
def test_functional_call_with_new_values(name, options, backend):
    module, reference = make_twins(name, options, backend)
    new_values = {weight: torch.randn_like(value).requires_grad_() for weight, value in reference.named_parameters()}
    x = make_input(name)
    ref_out = torch.func.functional_call(reference, new_values, (x,), strict=True)
    out = torch.func.functional_call(module, new_values, (x,), strict=True)
    ref_out, out = (o if isinstance(o, torch.Tensor) else o[0] for o in (ref_out, out))
    assert_matches(out, ref_out, torch.float32, "functional_call output")
    grad_output = torch.randn_like(ref_out)
    ref_grads = torch.autograd.grad(ref_out, list(new_values.values()), grad_output)
    grads = torch.autograd.grad(out, list(new_values.values()), grad_output)
    for weight, mine, theirs in zip(new_values, grads, ref_grads):
        assert_matches(mine, theirs, torch.float32, f"functional_call grad of {weight}")
    assert_same_run(module, reference, x, "after functional_call")  # the module's own weights are back


def strided_copy(value: torch.Tensor) -> torch.Tensor:
    """The same values in a non-contiguous layout: a transposed copy for matrices, every other element of
    a wider tensor for vectors."""
    if value.dim() == 2:
        return value.t().contiguous().t()
    return torch.stack((value, torch.full_like(value, float("nan"))), dim=1)[:, 0]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name, options", LAYERS + CELLS, ids=LAYER_IDS + CELL_IDS)
def test_non_contiguous_parameters(name, options, backend):
    """Weights ported as W.T, views or `p.data = ...`: every parameter at once made non-contiguous."""
    module, reference = make_twins(name, options, backend)
    for weight in weight_names(module):
        parameter = getattr(module, weight)
        parameter.data = strided_copy(parameter.data)
        assert not parameter.is_contiguous()
    assert_same_run(module, reference, make_input(name), "non-contiguous parameters")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name, options", LAYERS + CELLS, ids=LAYER_IDS + CELL_IDS)
def test_second_order_gradients_match_torch(name, options, backend):
    """A gradient penalty: the gradient of |d(loss)/dx|^2 with respect to the input and every parameter."""
    module, reference = make_twins(name, options, backend)
    x = make_input(name)
    results = []
    for m in (reference, module):
        leaf = x.clone().requires_grad_()
        (grad_x,) = torch.autograd.grad(call(m, leaf).pow(2).sum(), leaf, create_graph=True)
        results.append(torch.autograd.grad(grad_x.pow(2).sum(), [leaf, *m.parameters()]))
    for what, mine, theirs in zip(["input", *weight_names(module)], results[1], results[0]):
        assert_matches(mine, theirs, torch.float32, f"second-order grad of {what}")


@pytest.mark.parametrize(
    "name, options",
    [("LSTM", {}), ("LSTM", {"proj_size": 2}), ("GRU", {}), ("RNN", {}), ("RNN", {"nonlinearity": "relu"})],
    ids=["lstm", "lstm-proj", "gru", "rnn_tanh", "rnn_relu"],
)
def test_gradgradcheck_float64(name, options):
    torch.manual_seed(0)
    module = getattr(rnnfast, name)(2, 3, bidirectional=True, backend="scan", **options).double()
    x = torch.randn(3, 2, 2, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([3, 2])
    params = list(module.parameters())

    def run(x, *weights):
        values = dict(zip(weight_names(module), weights))
        return torch.func.functional_call(module, values, (x,), {"lengths": lengths})[0]

    if name == "RNN" and options:  # relu: keep pre-activations away from the kink finite differences straddle
        with torch.no_grad():
            for p in params:
                p.abs_()
    assert torch.autograd.gradgradcheck(run, (x, *params))


def test_unknown_cell_nonlinearity_raises_like_torch():
    x = torch.randn(2, 3)
    with pytest.raises(RuntimeError, match="^Unknown nonlinearity: garbage$"):
        nn.RNNCell(3, 4, nonlinearity="garbage")(x)
    with pytest.raises(RuntimeError, match="^Unknown nonlinearity: garbage$"):
        rnnfast.RNNCell(3, 4, nonlinearity="garbage")(x)


BAD_CONSTRUCTORS = {
    "hidden-zero": ("LSTM", (3, 0), {}),
    "layers-zero": ("GRU", (3, 4, 0), {}),
    "dropout-above-1": ("RNN", (3, 4, 2), {"dropout": 1.5}),
    "dropout-bool": ("LSTM", (3, 4, 2), {"dropout": True}),
    "proj-not-below-hidden": ("LSTM", (3, 4), {"proj_size": 4}),
    "proj-negative": ("LSTM", (3, 4), {"proj_size": -1}),
    "hidden-float": ("GRU", (3, 4.0), {}),
    "rnn-nonlinearity": ("RNN", (3, 4), {"nonlinearity": "sigmoid"}),
    "gru-proj": ("GRU", (3, 4), {"proj_size": 2}),
    "cell-hidden-float": ("GRUCell", (3, 4.5), {}),
}


@pytest.mark.parametrize("name, args, kwargs", BAD_CONSTRUCTORS.values(), ids=BAD_CONSTRUCTORS.keys())
def test_constructor_checks_match_torch(name, args, kwargs):
    with pytest.raises(Exception) as expected:
        getattr(nn, name)(*args, **kwargs)
    with pytest.raises(type(expected.value)) as raised:
        getattr(rnnfast, name)(*args, **kwargs)
    assert str(raised.value) == str(expected.value)
