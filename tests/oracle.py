"""Comparison of an rnnfast module against its torch.nn twin: outputs, final states and every gradient;
the layer kinds, shapes and twin pairs the tests share; and the state-tuple helpers."""

from dataclasses import dataclass

import torch
from torch import nn

import rnnfast

# Every layer kind, keyed by torch's mode name (plus the LSTM with projections): (rnnfast class, torch.nn
# class, constructor options).
LAYERS = {
    "lstm": (rnnfast.LSTM, nn.LSTM, {}),
    "lstm-proj": (rnnfast.LSTM, nn.LSTM, {"proj_size": 3}),
    "gru": (rnnfast.GRU, nn.GRU, {}),
    "rnn_tanh": (rnnfast.RNN, nn.RNN, {}),
    "rnn_relu": (rnnfast.RNN, nn.RNN, {"nonlinearity": "relu"}),
}
# The same for the single-step cells.
CELLS = {
    "lstm": (rnnfast.LSTMCell, nn.LSTMCell, {}),
    "gru": (rnnfast.GRUCell, nn.GRUCell, {}),
    "rnn_tanh": (rnnfast.RNNCell, nn.RNNCell, {}),
    "rnn_relu": (rnnfast.RNNCell, nn.RNNCell, {"nonlinearity": "relu"}),
}


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
        flags = [
            "bidir" if self.bidirectional else "",
            "bfirst" if self.batch_first else "",
            "" if self.with_hx else "nohx",
        ]
        parts = [
            f"B{self.batch}",
            f"T{self.seq_len}",
            f"I{self.input_size}",
            f"H{self.hidden_size}",
            f"L{self.num_layers}",
        ]
        return "-".join(parts + [f for f in flags if f])


def make_pair(module_class, reference_class, case: Case, dtype=torch.float32, backend="scan", **kwargs):
    """An rnnfast module in `dtype` and its torch.nn twin (fp32) with the same weights."""
    args = (case.input_size, case.hidden_size, case.num_layers)
    options = dict(bidirectional=case.bidirectional, batch_first=case.batch_first, **kwargs)
    reference = reference_class(*args, **options)
    module = module_class(*args, **options, backend=backend).to(dtype)
    module.load_state_dict(reference.state_dict())
    if dtype != torch.float32:  # compare against fp32 on the very same rounded weights
        reference.load_state_dict(module.state_dict())
        reference.float()
    return module, reference


def make_inputs(case: Case, dtype=torch.float32, strided=True, lstm=True):
    """Input and hx ((h0, c0) for the LSTM, h0 otherwise); the input is a strided view (every other
    feature of a wider tensor) when asked."""
    shape = (case.batch, case.seq_len) if case.batch_first else (case.seq_len, case.batch)
    x = (
        torch.randn(*shape, 2 * case.input_size, dtype=dtype)[..., ::2]
        if strided
        else torch.randn(*shape, case.input_size)
    )
    states = case.num_layers * (2 if case.bidirectional else 1)
    hx = None
    if case.with_hx:
        hx = tuple(torch.randn(states, case.batch, case.hidden_size, dtype=dtype) for _ in range(2 if lstm else 1))
        hx = hx if lstm else hx[0]
    return x, hx


def strided_grad_output(case: Case) -> torch.Tensor:
    directions = 2 if case.bidirectional else 1
    shape = (case.batch, case.seq_len) if case.batch_first else (case.seq_len, case.batch)
    return torch.randn(*shape, 3 * directions * case.hidden_size)[..., ::3]


@dataclass(frozen=True)
class CellSpec:
    """One cell kind as the shared cell checks see it (tests/test_cells.py)."""

    mode: str  # torch's mode name, also the planner's cell name: lstm, gru, rnn_tanh or rnn_relu
    module: type  # rnnfast.LSTM ...
    reference: type  # torch.nn.LSTM ...
    cell: type  # rnnfast.LSTMCell ...
    reference_cell: type  # torch.nn.LSTMCell ...
    options: dict  # e.g. nonlinearity="relu"

    @property
    def is_lstm(self) -> bool:
        return self.mode == "lstm"

    def pair(self, case: Case, **kwargs):
        return make_pair(self.module, self.reference, case, **self.options, **kwargs)

    def inputs(self, case: Case, **kwargs):
        return make_inputs(case, lstm=self.is_lstm, **kwargs)

    def state(self, *shape):
        """A zero state of `shape`: (h, c) for the LSTM, h otherwise."""
        return (torch.zeros(*shape), torch.zeros(*shape)) if self.is_lstm else torch.zeros(*shape)


SPECS = [CellSpec(mode, *LAYERS[mode][:2], *CELLS[mode]) for mode in ("lstm", "gru", "rnn_tanh", "rnn_relu")]


# Largest error allowed, relative to the largest magnitude of the expected tensor (at least 1).
# fp32 is compared with torch.nn in fp32; fp16/bf16 with torch.nn in fp32 on the same rounded inputs
# and weights, so the error is that of storing h, the gates and their gradients in 16 bits.
TOLERANCE = {
    torch.float64: 1e-10,
    torch.float32: 1e-5,
    torch.float16: 1e-2,
    torch.bfloat16: 4e-2,
}


def assert_matches(
    actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, what: str, relative: bool = False
) -> None:
    """relative=True scales the tolerance by the expected tensor's own magnitude even below 1 (tensors of
    tiny values, where an absolute comparison would pass anything)."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    error = (actual.double() - expected.double()).abs().max().item() if expected.numel() else 0.0
    magnitude = expected.double().abs().max().item() if expected.numel() else 0.0
    scale = magnitude if relative else max(1.0, magnitude)
    assert error <= TOLERANCE[dtype] * scale, f"{what}: max error {error:.3g} (scale {scale:.3g}) for {dtype}"


def as_list(state) -> list[torch.Tensor]:
    """[h] for a state h, [h, c] for an LSTM's (h, c)."""
    return list(state) if isinstance(state, tuple) else [state]


def as_state(tensors, like):
    """`tensors` shaped as the state `like`: a tuple for an LSTM's (h, c), the one tensor otherwise."""
    return tuple(tensors) if isinstance(like, tuple) else tensors[0]


def compare_with_torch(
    module,
    reference,
    x: torch.Tensor,
    hx=None,
    dtype: torch.dtype = torch.float32,
    grad_output=None,
    gradients: bool = True,
) -> None:
    """Runs `reference` (torch.nn, fp32/fp64) and `module` (rnnfast, in `dtype`, same state_dict) on the
    same inputs and compares output, final states and (unless gradients=False) the gradients of input, hx
    and every parameter.

    x and hx are given in the reference's dtype; grad_output (any layout) defaults to random.
    """
    ref_inputs = [x.detach().requires_grad_()]
    ref_state = None if hx is None else tuple(h.detach().requires_grad_() for h in as_list(hx))
    ref_out, ref_final = reference(ref_inputs[0], None if hx is None else as_state(ref_state, hx))

    inputs = [x.detach().to(dtype).requires_grad_()]
    state = None if hx is None else tuple(h.detach().to(dtype).requires_grad_() for h in as_list(hx))
    out, final = module(inputs[0], None if hx is None else as_state(state, hx))

    assert out.dtype == dtype
    assert_matches(out, ref_out, dtype, "output")
    for i, (mine, theirs) in enumerate(zip(as_list(final), as_list(ref_final))):
        assert_matches(mine, theirs, dtype, f"final state {i}")

    if not gradients:
        return
    if grad_output is None:
        grad_output = torch.randn_like(ref_out)
    # Gradients are handed to autograd as they are: a strided grad_output reaches the backward strided.
    final_grads = [torch.randn_like(f) for f in as_list(ref_final)]
    ref_leaves = ref_inputs + list(ref_state or ()) + list(reference.parameters())
    leaves = inputs + list(state or ()) + list(module.parameters())
    ref_grads = torch.autograd.grad([ref_out, *as_list(ref_final)], ref_leaves, [grad_output, *final_grads])
    grads = torch.autograd.grad(
        [out, *as_list(final)], leaves, [grad_output.to(dtype), *(g.to(dtype) for g in final_grads)]
    )
    names = ["input"] + [f"hx[{i}]" for i in range(len(state or ()))] + [n for n, _ in module.named_parameters()]
    for name, mine, theirs in zip(names, grads, ref_grads):
        assert_matches(mine, theirs, dtype, f"grad of {name}")
