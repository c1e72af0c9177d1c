"""autograd Functions around one scan (one layer, one direction), and the choice of backend.

A scan is: one GEMM for the input projection of every step, the recurrence (Triton kernel or the
pure-PyTorch reference, same buffers), then in backward the recurrence run backwards in time followed
by a few large GEMMs for dx and the weight and bias gradients.
"""

import importlib.util
import os

import torch
from torch.autograd.function import once_differentiable

from . import reference

BACKENDS = ("auto", "triton", "torch")
TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_TRITON_AVAILABLE = importlib.util.find_spec("triton") is not None


def check_backend_name(backend: str | None) -> str | None:
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


def resolve_backend(backend: str | None, device: torch.device, dtype: torch.dtype) -> str:
    """'triton' or 'torch' for tensors on `device` of `dtype`.

    backend=None takes the RNNFAST_BACKEND environment variable, else "auto": Triton for CUDA tensors of
    a dtype the kernels support, pure PyTorch otherwise (CPU tensors, float64).
    """
    backend = backend or check_backend_name(os.environ.get("RNNFAST_BACKEND", "auto"))
    if backend == "auto":
        use_triton = _TRITON_AVAILABLE and device.type == "cuda" and dtype in TRITON_DTYPES
        return "triton" if use_triton else "torch"
    if backend == "triton":
        if not _TRITON_AVAILABLE:
            raise RuntimeError("backend='triton' needs the triton package, which is not installed")
        if dtype not in TRITON_DTYPES:
            raise RuntimeError(f"backend='triton' supports float32, float16 and bfloat16, got {dtype}")
        if device.type != "cuda" and os.environ.get("TRITON_INTERPRET", "0") != "1":
            raise RuntimeError(
                f"backend='triton' needs CUDA tensors (got {device.type}); set TRITON_INTERPRET=1 before "
                "importing triton to run the kernels on CPU tensors through Triton's interpreter"
            )
    return backend


def _recurrence(backend: str):
    if backend == "triton":
        from . import kernels

        return kernels
    return reference


def _input_projection(x2d: torch.Tensor, w_ih: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    if bias is None:
        return x2d @ w_ih.t()
    return torch.addmm(bias, x2d, w_ih.t())


GATE_COUNT = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}


class Scan(torch.autograd.Function):
    """One layer of `cell` ("lstm", "gru", "rnn_tanh", "rnn_relu") in one direction over time-major
    x [T, B, I]. Returns y [T, B, H] and h_n [B, H], plus c_n [B, H] for the LSTM (c0 is None otherwise).
    b_ih and b_hh are both None when the layer has no bias."""

    @staticmethod
    def forward(ctx, cell: str, reverse: bool, backend: str, x, h0, c0, w_ih, w_hh, b_ih, b_hh):
        seq_len, batch, input_size = x.shape
        hidden = w_hh.shape[1]
        x2d = x.reshape(seq_len * batch, input_size)
        has_bias = b_ih is not None
        # GRU keeps b_hh inside the reset product; the other cells fold it into the input projection.
        if cell == "gru":
            input_bias = b_ih
            b_hh = b_hh if has_bias else w_hh.new_zeros(3 * hidden)
        else:
            input_bias = b_ih + b_hh if has_bias else None
        gates = _input_projection(x2d, w_ih, input_bias).view(seq_len, batch, GATE_COUNT[cell] * hidden)
        training = any(ctx.needs_input_grad)
        recurrence = _recurrence(backend)

        state_dtype = reference.state_dtype(x.dtype)
        h_all = x.new_empty(seq_len + 1, batch, hidden)
        first_slot, last_slot = (seq_len, 0) if reverse else (0, seq_len)
        h_all[first_slot] = h0
        run = batch > 0
        if cell == "lstm":
            cell_state = x.new_empty(seq_len + 1 if training else 2, batch, hidden, dtype=state_dtype)
            cell_state[first_slot % cell_state.shape[0]] = c0
            if run:
                recurrence.lstm_scan_fwd(gates, w_hh, h_all, cell_state, reverse, training)
        elif cell == "gru":
            cell_state = x.new_empty(seq_len if training else 0, batch, hidden, dtype=state_dtype)  # W_hn h + b_hn
            if run:
                recurrence.gru_scan_fwd(gates, w_hh, b_hh, h_all, cell_state, reverse, training)
        else:
            cell_state = x.new_empty(0)
            if run:
                recurrence.elman_scan_fwd(gates, w_hh, h_all, reverse, cell == "rnn_relu")

        if training:
            ctx.save_for_backward(x2d, w_ih, w_hh, h_all, cell_state, gates)
            ctx.cell, ctx.reverse, ctx.backend, ctx.has_bias = cell, reverse, backend, has_bias
        y = h_all[:seq_len] if reverse else h_all[1:]
        h_n = h_all[last_slot].clone()
        if cell == "lstm":
            return y, h_n, cell_state[last_slot % cell_state.shape[0]].to(x.dtype)
        return y, h_n

    @staticmethod
    @once_differentiable
    def backward(ctx, dy, dh_n, dc_n=None):
        x2d, w_ih, w_hh, h_all, cell_state, gates = ctx.saved_tensors
        cell, reverse = ctx.cell, ctx.reverse
        seq_len, batch, hidden = h_all.shape[0] - 1, h_all.shape[1], h_all.shape[2]
        grad_dtype = reference.state_dtype(gates.dtype)
        recurrence = _recurrence(ctx.backend)
        run = batch > 0

        # A fresh contiguous copy: grad_output may be a strided view (after torch.cat, say).
        if dy is None:
            dh = torch.zeros(seq_len, batch, hidden, dtype=grad_dtype, device=h_all.device)
        else:
            dh = dy.to(grad_dtype, memory_format=torch.contiguous_format, copy=True)
        if dh_n is not None:
            dh[0 if reverse else seq_len - 1] += dh_n

        # Gate gradients stay in the state dtype through time (16-bit rounding at every step would compound);
        # they meet the 16-bit weights only in the GEMMs after the loop.
        dgates_h_all = gates.new_empty(seq_len + 1, batch, gates.shape[2], dtype=grad_dtype)
        dgates_h_all[0 if reverse else seq_len].zero_()
        dgates_h = dgates_h_all[1:] if reverse else dgates_h_all[:seq_len]
        dgates_x, dc0, dh0_direct = dgates_h, None, None
        if cell == "lstm":
            dc = torch.zeros_like(dh[0]) if dc_n is None else dc_n.to(grad_dtype, copy=True)
            if run:
                recurrence.lstm_scan_bwd(dgates_h_all, gates, w_hh, cell_state, dh, dc, reverse)
            dc0 = dc.to(gates.dtype) if ctx.needs_input_grad[5] else None
        elif cell == "gru":
            dgates_x = torch.empty_like(gates, dtype=grad_dtype)
            dh0_direct = torch.zeros_like(dh[0])
            if run:
                recurrence.gru_scan_bwd(dgates_h_all, dgates_x, gates, w_hh, h_all, cell_state, dh, dh0_direct, reverse)
        elif run:
            recurrence.elman_scan_bwd(dgates_h_all, w_hh, h_all, dh, reverse, cell == "rnn_relu")

        needs = ctx.needs_input_grad
        dgates_x2d, dgates_h2d = dgates_x.flatten(0, 1).to(w_ih.dtype), dgates_h.flatten(0, 1).to(w_ih.dtype)
        dx = (dgates_x2d @ w_ih).view(seq_len, batch, w_ih.shape[1]) if needs[3] else None
        dh0 = None
        if needs[4]:
            dh0 = dgates_h[seq_len - 1 if reverse else 0] @ w_hh.to(grad_dtype)
            if dh0_direct is not None:
                dh0 += dh0_direct
            dh0 = dh0.to(w_hh.dtype)
        dw_ih = dgates_x2d.t() @ x2d if needs[6] else None
        h_prev = h_all[1:] if reverse else h_all[:seq_len]
        dw_hh = dgates_h2d.t() @ h_prev.flatten(0, 1) if needs[7] else None
        db_ih = dgates_x2d.sum(0) if ctx.has_bias and needs[8] else None
        db_hh = dgates_h2d.sum(0) if ctx.has_bias and needs[9] else None
        return None, None, None, dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh
