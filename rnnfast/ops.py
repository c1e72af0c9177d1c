"""A layer's scan (one layer, both directions) as custom ops with registered autograd.

A scan is: one GEMM for the input projection of every step, the recurrence (the Triton kernels of
rnnfast.kernels or rnnfast.pytorch_scan, on the same buffers), then in backward the recurrence run
backwards in time followed by a few large GEMMs for dx and the weight and bias gradients. Which of the
two recurrences runs is the `path` (rnnfast.dispatch: TRITON or SCAN), chosen by the caller.
"""

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch

from . import differentiable, pytorch_scan
from .dispatch import SCAN, TRITON, tracing


def _recurrence(path: str):
    if path == TRITON:
        from . import kernels

        return kernels
    return pytorch_scan


def error_flags_read_once(path: str, x: torch.Tensor):
    """A context inside which the grid barriers of every scan on the TRITON path report a timeout to one
    error flag per device, read once (one device-to-host wait) when it exits: around all the layers of a
    module, so that the host queues them all before it waits. GridSyncTimeout is then raised at its
    exit. Without it each scan's forward reads its own flag; nothing here while tracing (the compiled
    graph's scans read theirs when they run)."""
    if path != TRITON or tracing(x):
        return contextlib.nullcontext()
    from .kernels import launch

    return launch.error_flags_read_once()


def _error_flags(path: str, backward: bool = False):
    """The forward's flags read when the scan ends (or the caller's context: error_flags_read_once), the
    backward's when autograd's whole backward call ends (kernels/launch.py)."""
    if path != TRITON:
        return contextlib.nullcontext()
    from .kernels import launch

    return launch.error_flags_read_after_backward() if backward else launch.error_flags_read_once()


def stack_directions(tensors) -> torch.Tensor:
    """[D, ...] from one tensor per direction: a view of the tensor when there is one direction."""
    return tensors[0].unsqueeze(0) if len(tensors) == 1 else torch.stack(tensors)


def _input_projection(x2d: torch.Tensor, w_ih: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x2d [N, I] projected by each direction's w_ih [D, G, I] (+ bias [D, G]): [D, N, G], one GEMM."""
    if w_ih.shape[0] == 1:
        gates = x2d @ w_ih[0].t() if bias is None else torch.addmm(bias[0], x2d, w_ih[0].t())
        return gates.unsqueeze(0)
    if bias is None:
        return x2d @ w_ih.transpose(1, 2)
    return torch.baddbmm(bias.unsqueeze(1), x2d.expand(w_ih.shape[0], -1, -1), w_ih.transpose(1, 2))


def scan(cell: str, path: str, x, lengths, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr):
    """One layer of `cell` ("lstm", "gru", "rnn_tanh", "rnn_relu") over time-major x [T, B, I], in D
    directions (1, or 2 for a bidirectional layer: direction 1 runs in reverse, as torch.nn numbers
    them), on `path` TRITON (rnnfast.kernels) or SCAN (rnnfast.pytorch_scan). Per-direction arguments have
    a leading axis D: h0 [D, B, P], c0 [D, B, H] (LSTM, else None),
    w_ih [D, G*H, I], w_hh [D, G*H, P], b_ih and b_hh [D, G*H] (both None without bias), w_hr [D, P, H]
    (LSTM proj_size, else None). Returns (y [T, B, D*P], h_n [D, B, P]), plus c_n [D, B, H] for the LSTM.
    Both directions run in the same kernel launches where the plan allows (kernels/configs.plan_scan).

    lengths [B] (int64 on x's device, each in 1..T; None: every row has length T): a row stops updating
    after its length, its outputs there are zero and h_n/c_n are taken at its last valid step (the reverse
    direction starts there). The SCAN path runs such a batch longest rows first (and restores the
    order), so that each step's matmuls stop at its last active row. With w_hr, h = W_hr (o * tanh(c)):
    the scan then runs on r = o * tanh(c) with the recurrent weight W_hh W_hr, h0 entering each row's
    first step through W_hh, and outputs are projected after the scan.

    This is the functional entry point beneath the modules: no argument checks, no autocast, no dispatch
    (the modules do those), differentiable in every tensor argument.

    Example (an LSTM layer, one direction, on the PyTorch scan):
        >>> x = torch.randn(5, 2, 3)  # [T, B, I]
        >>> w_ih, w_hh = torch.randn(1, 16, 3), torch.randn(1, 16, 4)  # [D, 4H, I], [D, 4H, H]
        >>> h0 = c0 = torch.zeros(1, 2, 4)
        >>> y, h_n, c_n = rnnfast.ops.scan("lstm", "scan", x, None, h0, c0, w_ih, w_hh, None, None, None)
        >>> y.shape, h_n.shape
        (torch.Size([5, 2, 4]), torch.Size([1, 2, 4]))
    """
    if path == SCAN and lengths is not None:
        # The PyTorch scan's step matmuls cover the rows up to the last active one: longest rows first.
        order = torch.argsort(lengths, descending=True, stable=True)
        restore = torch.argsort(order)
        c0 = None if c0 is None else c0.index_select(1, order)
        results = _scan_layer(
            cell, path, x.index_select(1, order), lengths[order], h0.index_select(1, order), c0,
            w_ih, w_hh, b_ih, b_hh, w_hr,
        )  # fmt: skip
        return tuple(result.index_select(1, restore) for result in results)
    return _scan_layer(cell, path, x, lengths, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr)


def _scan_layer(cell: str, path: str, x, lengths, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr):
    """scan in the batch's own order."""
    seq_len = x.shape[0]
    h_init, w_rec, first_gates = h0, w_hh, None
    if w_hr is not None:
        h_init = h0.new_zeros(*h0.shape[:2], w_hr.shape[2])
        w_rec, first_gates = w_hh @ w_hr, h0 @ w_hh.transpose(1, 2)
    # The kernels address the recurrent weight and b_hh as contiguous: a transposed or strided parameter
    # is copied here, outside the op, so autograd takes its gradient back to the parameter itself.
    w_rec = w_rec.contiguous()
    b_hh = None if b_hh is None else b_hh.contiguous()
    inputs = (x, h_init, c0, w_ih, w_rec, b_ih, b_hh, first_gates)
    training = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs)
    # Eagerly the same implementation runs as a plain autograd.Function: a custom op's first call imports
    # torch._dynamo (and with it triton), about a second that a CPU user would pay for nothing.
    run = torch.ops.rnnfast.scan if tracing(x) else _EagerScan.apply
    h_all, c_n, _, _ = run(cell, path, x, lengths, h_init, c0, w_ih, w_rec, b_ih, b_hh, first_gates, training)
    directions = range(h_all.shape[0])
    outputs = [h_all[d, :seq_len] if d else h_all[d, 1:] for d in directions]
    finals = [h_all[d, _last_slot(d, seq_len)] for d in directions]
    if w_hr is not None:
        outputs = [y @ w_hr[d].t() for d, y in zip(directions, outputs)]
        finals = [h @ w_hr[d].t() for d, h in zip(directions, finals)]
    y = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=2)
    if lengths is not None:
        y = y.masked_fill(_padding_mask(lengths, seq_len), 0)
    h_n = stack_directions(finals)
    return (y, h_n, c_n) if _CELL_SCANS[cell].cell_state else (y, h_n)


# The scan and its backward are custom ops, opaque to torch.compile (no graph break, no tracing into
# the time loop) and exportable; autograd is registered on the forward op.
@torch.library.custom_op("rnnfast::scan", mutates_args=())
def _scan_op(
    cell: str,
    path: str,
    x: torch.Tensor,
    lengths: torch.Tensor | None,
    h_init: torch.Tensor,
    c0: torch.Tensor | None,
    w_ih: torch.Tensor,
    w_rec: torch.Tensor,
    b_ih: torch.Tensor | None,
    b_hh: torch.Tensor | None,
    first_gates: torch.Tensor | None,
    training: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(h_all [D, T + 1, B, H] state slots, c_n [D, B, H] (LSTM, else empty), the cell's saved state and
    its activated gates [D, T, B, G*H] (both for the backward; empty in inference)). first_gates
    [D, B, G*H] is added to each row's first step's gates."""
    return _scan_forward(cell, path, x, lengths, h_init, c0, w_ih, w_rec, b_ih, b_hh, first_gates, training)


def _autocast_off(device: torch.device):
    """A context with autocast off on `device` (the layer chose its dtype; no op re-casts); nothing where
    torch has no autocast (meta tensors)."""
    if not torch.amp.is_autocast_available(device.type):
        return contextlib.nullcontext()
    return torch.autocast(device.type, enabled=False)


def _scan_forward(*inputs):
    with _autocast_off(inputs[2].device):
        return _scan_impl(*inputs)


def _first_slot(direction: int, seq_len: int) -> int:
    """The slot of h_all (per direction) holding h_init: T for the reverse direction (1), 0 forward."""
    return seq_len if direction else 0


def _last_slot(direction: int, seq_len: int) -> int:
    """The slot of h_all (per direction) written by the last step: it holds every row's final state."""
    return 0 if direction else seq_len


@dataclass(frozen=True)
class _CellScan:
    """What a scan does for one cell, beside what every cell shares: the state its forward saves for the
    backward (besides h_all and the activated gates) and its recurrence's forward and backward, called
    on the same buffers in rnnfast.kernels (Triton) or rnnfast.pytorch_scan."""

    saved_state: Callable  # (D, T, B, H, training) -> shape of the saved state
    forward: Callable  # (recurrence, _ScanBuffers) -> None
    backward: Callable  # (recurrence, _ScanBuffers) -> None
    cell_state: bool = False  # an LSTM's c: c0 in, c_n out, dc through the backward
    recurrent_bias: bool = False  # b_hh stays in the recurrence (GRU: inside the reset product)
    input_gate_gradients: bool = False  # the input projection's gate gradients differ from W_hh's (GRU)


@dataclass
class _ScanBuffers:
    """The buffers of one scan (every per-direction tensor [D, ...]; kernels/lstm.py describes the slots)."""

    gates: torch.Tensor  # [D, T, B, G*H]: input projection in, activated gates out when training
    w_rec: torch.Tensor  # [D, G*H, H]
    h_all: torch.Tensor  # [D, T + 1, B, H]
    saved: torch.Tensor  # the cell's saved state (_CellScan.saved_state)
    lengths: torch.Tensor | None
    training: bool = False
    b_hh: torch.Tensor | None = None  # recurrent_bias cells
    dgates_h_all: torch.Tensor | None = None  # backward: [D, T + 1, B, G*H]
    dgates_x_all: torch.Tensor | None = None  # backward, input_gate_gradients cells: [D, T, B, G*H]
    dh: torch.Tensor | None = None  # backward: [D, T, B, H]
    dc: torch.Tensor | None = None  # backward, cell_state cells: [D, B, H]
    dh_carry: torch.Tensor | None = None  # backward: [D, B, H]


def _rnn_scan(relu: bool) -> _CellScan:
    return _CellScan(
        saved_state=lambda *_: (0,),
        forward=lambda r, b: r.rnn_scan_fwd(b.gates, b.w_rec, b.h_all, b.lengths, relu),
        backward=lambda r, b: r.rnn_scan_bwd(b.dgates_h_all, b.w_rec, b.h_all, b.dh, b.dh_carry, b.lengths, relu),
    )


_CELL_SCANS = {
    # c in the state slots (a ring of 2 in inference).
    "lstm": _CellScan(
        saved_state=lambda d, t, b, h, training: (d, t + 1 if training else 2, b, h),
        forward=lambda r, b: r.lstm_scan_fwd(b.gates, b.w_rec, b.h_all, b.saved, b.lengths, b.training),
        backward=lambda r, b: r.lstm_scan_bwd(
            b.dgates_h_all, b.gates, b.w_rec, b.saved, b.dh, b.dc, b.dh_carry, b.lengths
        ),
        cell_state=True,
    ),
    # W_hn h_{t-1} + b_hn per step (training only).
    "gru": _CellScan(
        saved_state=lambda d, t, b, h, training: (d, t if training else 0, b, h),
        forward=lambda r, b: r.gru_scan_fwd(b.gates, b.w_rec, b.b_hh, b.h_all, b.saved, b.lengths, b.training),
        backward=lambda r, b: r.gru_scan_bwd(
            b.dgates_h_all, b.dgates_x_all, b.gates, b.w_rec, b.h_all, b.saved, b.dh, b.dh_carry, b.lengths
        ),
        recurrent_bias=True,
        input_gate_gradients=True,
    ),
    "rnn_tanh": _rnn_scan(relu=False),
    "rnn_relu": _rnn_scan(relu=True),
}


def _saved_state(kind: _CellScan, x: torch.Tensor, directions: int, hidden: int, training: bool) -> torch.Tensor:
    seq_len, batch = x.shape[:2]
    shape = kind.saved_state(directions, seq_len, batch, hidden, training)
    return x.new_empty(shape, dtype=pytorch_scan.state_dtype(x.dtype))


def _scan_impl(cell, path, x, lengths, h_init, c0, w_ih, w_rec, b_ih, b_hh, first_gates, training):
    seq_len, batch, input_size = x.shape
    directions, gate_width, hidden = w_rec.shape
    kind = _CELL_SCANS[cell]
    # GRU keeps b_hh inside the reset product; the other cells fold it into the input projection.
    if kind.recurrent_bias:
        input_bias = b_ih
        b_hh = b_hh if b_hh is not None else w_rec.new_zeros(directions, gate_width)
    else:
        input_bias = b_ih + b_hh if b_ih is not None else None
    gates = _input_projection(x.reshape(seq_len * batch, input_size), w_ih, input_bias)
    gates = gates.view(directions, seq_len, batch, gate_width)
    if first_gates is not None:
        for d in range(directions):
            gates[d][_first_steps(lengths, d, batch, seq_len, x.device)] += first_gates[d]
    lengths = _kernel_lengths(path, lengths, batch, seq_len, x.device)

    h_all = x.new_empty(directions, seq_len + 1, batch, hidden)
    saved = _saved_state(kind, x, directions, hidden, training)
    for d in range(directions):
        h_all[d, _first_slot(d, seq_len)] = h_init[d]
        if kind.cell_state:
            saved[d, _first_slot(d, seq_len) % saved.shape[1]] = c0[d]
    if batch > 0:
        with _error_flags(path):
            kind.forward(_recurrence(path), _ScanBuffers(gates, w_rec, h_all, saved, lengths, training, b_hh))
    c_n = x.new_empty(0)
    if kind.cell_state:
        # A copy: an output of the op may not be a view of another (saved).
        c_n = torch.stack([saved[d, _last_slot(d, seq_len) % saved.shape[1]] for d in range(directions)])
        c_n = c_n.to(x.dtype)
    return h_all, c_n, saved, gates if training else x.new_empty(0)


@_scan_op.register_fake
def _(cell, path, x, lengths, h_init, c0, w_ih, w_rec, b_ih, b_hh, first_gates, training):
    seq_len, batch, _ = x.shape
    directions, gate_width, hidden = w_rec.shape
    kind = _CELL_SCANS[cell]
    saved = _saved_state(kind, x, directions, hidden, training)
    c_n = x.new_empty(directions, batch, hidden) if kind.cell_state else x.new_empty(0)
    gates = x.new_empty(directions, seq_len, batch, gate_width) if training else x.new_empty(0)
    return x.new_empty(directions, seq_len + 1, batch, hidden), c_n, saved, gates


@torch.library.custom_op("rnnfast::scan_backward", mutates_args=())
def _scan_backward_op(
    cell: str,
    path: str,
    d_h_all: torch.Tensor,
    d_c_n: torch.Tensor,
    x: torch.Tensor,
    lengths: torch.Tensor | None,
    w_ih: torch.Tensor,
    w_rec: torch.Tensor,
    h_all: torch.Tensor,
    saved: torch.Tensor,
    gates: torch.Tensor,
    has_bias: bool,
) -> tuple[
    torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor
]:
    """Gradients (x, h_init, c0, w_ih, w_rec, b_ih, b_hh, first_gates) of _scan_op from those of h_all
    [D, T + 1, B, H] and c_n; empty where the scan has no such input."""
    return _scan_backward_run(cell, path, d_h_all, d_c_n, x, lengths, w_ih, w_rec, h_all, saved, gates, has_bias)


def _scan_backward_run(*inputs):
    with _autocast_off(inputs[4].device):
        return _scan_backward_impl(*inputs)


def _scan_backward_impl(cell, path, d_h_all, d_c_n, x, lengths, w_ih, w_rec, h_all, saved, gates, has_bias):
    directions, seq_len, batch, hidden = h_all.shape
    seq_len -= 1
    grad_dtype = pytorch_scan.state_dtype(gates.dtype)
    lengths = _kernel_lengths(path, lengths, batch, seq_len, x.device)

    # A fresh contiguous copy in the state dtype: the gradient may be a strided view (after torch.cat).
    dh = d_h_all.new_empty(directions, seq_len, batch, hidden, dtype=grad_dtype)
    for d in range(directions):
        dh[d] = d_h_all[d, :seq_len] if d else d_h_all[d, 1:]
    # The kernels keep gate gradients in the layer's dtype (the recurrent dot reads them every step, and
    # the GEMMs below cast them to it anyway); the PyTorch scan keeps them in the state dtype.
    dgates_dtype = gates.dtype if path == TRITON else grad_dtype
    dgates_h_all = gates.new_empty(directions, seq_len + 1, batch, gates.shape[3], dtype=dgates_dtype)
    for d in range(directions):
        dgates_h_all[d, _last_slot(d, seq_len)].zero_()
    dgates_h = [dgates_h_all[d, 1:] if d else dgates_h_all[d, :seq_len] for d in range(directions)]
    kind = _CELL_SCANS[cell]
    buffers = _ScanBuffers(
        gates, w_rec, h_all, saved, lengths,
        dgates_h_all=dgates_h_all,
        dgates_x_all=torch.empty_like(gates, dtype=dgates_dtype) if kind.input_gate_gradients else None,
        dh=dh,
        dc=d_c_n.to(grad_dtype, copy=True) if kind.cell_state else None,
        dh_carry=dh.new_zeros(directions, batch, hidden),  # the part of dh0 that does not go through W_hh
    )  # fmt: skip
    if batch > 0:
        with _error_flags(path, backward=True):
            kind.backward(_recurrence(path), buffers)
    dgates_x = dgates_h if buffers.dgates_x_all is None else buffers.dgates_x_all.unbind(0)
    dh_carry = buffers.dh_carry
    d_c0 = buffers.dc.to(x.dtype) if kind.cell_state else x.new_empty(0)

    x2d = x.reshape(seq_len * batch, x.shape[2])
    dx = None
    grads = [[] for _ in range(6)]  # per direction: h_init, w_ih, w_rec, b_ih, b_hh, first_gates
    for d in range(directions):
        # h_init sits in the first step's read slot (carried past padding in reverse).
        first_t = seq_len - 1 if d else 0
        d_h_init = dgates_h[d][first_t].to(grad_dtype) @ w_rec[d].to(grad_dtype) + dh_carry[d]
        d_h_init += d_h_all[d, _first_slot(d, seq_len)]
        dgates_x2d = dgates_x[d].flatten(0, 1).to(w_ih.dtype)
        dgates_h2d = dgates_h[d].flatten(0, 1).to(w_ih.dtype)
        r_prev = h_all[d, 1:] if d else h_all[d, :seq_len]
        dx = dgates_x2d @ w_ih[d] if dx is None else dx.addmm_(dgates_x2d, w_ih[d])
        per_direction = (
            d_h_init.to(x.dtype),
            dgates_x2d.t() @ x2d,
            dgates_h2d.t() @ r_prev.flatten(0, 1),
            dgates_x2d.sum(0) if has_bias else x.new_empty(0),
            dgates_h2d.sum(0) if has_bias else x.new_empty(0),
            dgates_x[d][_first_steps(lengths, d, batch, seq_len, x.device)].to(x.dtype),
        )
        for grad, value in zip(grads, per_direction):
            grad.append(value)
    d_h_init, d_w_ih, d_w_rec, d_b_ih, d_b_hh, d_first_gates = (stack_directions(g) for g in grads[:6])
    if not has_bias:
        d_b_ih = d_b_hh = x.new_empty(0)
    return dx.view(x.shape), d_h_init, d_c0, d_w_ih, d_w_rec, d_b_ih, d_b_hh, d_first_gates


@_scan_backward_op.register_fake
def _(cell, path, d_h_all, d_c_n, x, lengths, w_ih, w_rec, h_all, saved, gates, has_bias):
    directions, _, batch, hidden = h_all.shape
    bias = x.new_empty(directions, w_ih.shape[1]) if has_bias else x.new_empty(0)
    return (
        torch.empty_like(x),
        x.new_empty(directions, batch, hidden),
        x.new_empty(directions, batch, hidden) if _CELL_SCANS[cell].cell_state else x.new_empty(0),
        torch.empty_like(w_ih),
        torch.empty_like(w_rec),
        bias,
        torch.empty_like(bias),
        x.new_empty(directions, batch, w_ih.shape[1]),
    )


# Positions of the differentiable inputs of _scan_op: x, h_init, c0, w_ih, w_rec, b_ih, b_hh, first_gates.
_DIFFERENTIABLE_INPUTS = (2, 4, 5, 6, 7, 8, 9, 10)


def _scan_setup_context(ctx, inputs, output):
    cell, path, x, lengths, h_init, c0, w_ih, w_rec, b_ih, b_hh, first_gates, training = inputs
    h_all, _, saved, gates = output
    # The inputs themselves are kept only for a backward that is differentiated again (no extra memory:
    # they are alive anyway, as the layer's parameters and inputs).
    ctx.save_for_backward(x, lengths, w_ih, w_rec, h_all, saved, gates, h_init, c0, b_ih, b_hh, first_gates)
    ctx.cell, ctx.path, ctx.has_bias = cell, path, b_ih is not None


def _scan_grads(ctx, d_h_all, d_c_n, run_backward):
    """The gradients of every input of the scan, given those of h_all and c_n (None where unused)."""
    x, lengths, w_ih, w_rec, h_all, saved, gates, h_init, c0, b_ih, b_hh, first_gates = ctx.saved_tensors
    if d_h_all is None:
        d_h_all = torch.zeros_like(h_all)
    if d_c_n is None:
        d_c_n = (
            h_all.new_zeros(h_all.shape[0], *h_all.shape[2:])
            if _CELL_SCANS[ctx.cell].cell_state
            else h_all.new_empty(0)
        )
    needs = ctx.needs_input_grad
    if torch.is_grad_enabled():  # create_graph=True: the backward itself must be differentiable
        inputs = (x, h_init, c0, w_ih, w_rec, b_ih, b_hh, first_gates)
        grads = _differentiable_backward(ctx, inputs, lengths, d_h_all, d_c_n)
    else:
        grads = run_backward(
            ctx.cell, ctx.path, d_h_all, d_c_n, x, lengths, w_ih, w_rec, h_all, saved, gates, ctx.has_bias
        )
    picked = [g if needs[i] else None for i, g in zip(_DIFFERENTIABLE_INPUTS, grads)]
    dx, d_h_init, d_c0, d_w_ih, d_w_rec, d_b_ih, d_b_hh, d_first_gates = picked
    return None, None, dx, None, d_h_init, d_c0, d_w_ih, d_w_rec, d_b_ih, d_b_hh, d_first_gates, None


def _differentiable_backward(ctx, inputs, lengths, d_h_all, d_c_n) -> list:
    """The gradients of the scan's inputs as a graph autograd can differentiate again: the scan is
    recomputed with plain torch ops from the saved inputs and differentiated with create_graph."""
    wanted = [i for i, t in enumerate(inputs) if t is not None and ctx.needs_input_grad[_DIFFERENTIABLE_INPUTS[i]]]
    x = inputs[0]
    seq_len, batch = x.shape[:2]
    with _autocast_off(x.device):
        slots, finals = [], []
        for d in range(d_h_all.shape[0]):
            per_direction = [None if t is None else t[d] for t in inputs[1:]]
            first_steps = _first_steps(lengths, d, batch, seq_len, x.device)
            h_all, c_n = differentiable.scan_slots(ctx.cell, d == 1, x, lengths, *per_direction, first_steps)
            slots.append(h_all)
            finals.append(c_n)
        outputs, grad_outputs = [stack_directions(slots)], [d_h_all]
        if _CELL_SCANS[ctx.cell].cell_state:
            outputs.append(stack_directions(finals))
            grad_outputs.append(d_c_n)
        found = torch.autograd.grad(
            outputs, [inputs[i] for i in wanted], grad_outputs, create_graph=True, allow_unused=True
        )
    grads = [None] * len(inputs)
    for i, grad in zip(wanted, found):
        grads[i] = torch.zeros_like(inputs[i]) if grad is None else grad
    return grads


def _scan_backward(ctx, d_h_all, d_c_n, _d_saved, _d_gates):
    return _scan_grads(ctx, d_h_all, d_c_n, torch.ops.rnnfast.scan_backward)


_scan_op.register_autograd(_scan_backward, setup_context=_scan_setup_context)


class _EagerScan(torch.autograd.Function):
    """rnnfast::scan with its registered autograd, run directly (outside tracing)."""

    @staticmethod
    def forward(*inputs):
        return _scan_forward(*inputs)

    setup_context = staticmethod(_scan_setup_context)

    @staticmethod
    def backward(ctx, d_h_all, d_c_n, _d_saved, _d_gates):
        return _scan_grads(ctx, d_h_all, d_c_n, _scan_backward_run)


def _kernel_lengths(path: str, lengths, batch: int, seq_len: int, device) -> torch.Tensor | None:
    """The Triton kernels always take a length vector (T for every row of an unpadded batch); the
    PyTorch scan takes None there and skips the per-step masking."""
    if path == TRITON and lengths is None:
        return torch.full((batch,), seq_len, dtype=torch.int64, device=device)
    return lengths


def _first_steps(lengths, reverse: int, batch: int, seq_len: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Index (t, b) of each row's first step: t = 0 forward, its last valid step in reverse (direction 1)."""
    rows = torch.arange(batch, device=device)
    if not reverse:
        return torch.zeros_like(rows), rows
    return (torch.full_like(rows, seq_len - 1) if lengths is None else lengths - 1), rows


def _padding_mask(lengths: torch.Tensor, seq_len: int) -> torch.Tensor:
    """[T, B, 1] True where t >= the row's length."""
    return (torch.arange(seq_len, device=lengths.device).unsqueeze(1) >= lengths).unsqueeze(2)
