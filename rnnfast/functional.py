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
    x [T, B, I]. Returns y [T, B, P] and h_n [B, P], plus c_n [B, H] for the LSTM (c0 is None otherwise).

    lengths [B] (int64 on x's device, each in 1..T; None: every row has length T): a row stops updating
    after its length, its outputs there are zero and h_n/c_n are taken at its last valid step (the reverse
    direction starts there). b_ih and b_hh are both None without bias. w_hr [P, H] (LSTM proj_size, else
    None): h = W_hr (o * tanh(c)); the scan then runs on r = o * tanh(c) with the recurrent weight
    W_hh W_hr, h0 entering through the first step's gates, and outputs are projected after the scan.
    """

    @staticmethod
    def forward(ctx, cell: str, reverse: bool, backend: str, x, lengths, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr):
        seq_len, batch, input_size = x.shape
        hidden = w_ih.shape[0] // GATE_COUNT[cell]
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
        first_slot, last_slot = (seq_len, 0) if reverse else (0, seq_len)
        kernel_lengths = lengths
        if backend == "triton" and lengths is None:
            kernel_lengths = torch.full((batch,), seq_len, dtype=torch.int64, device=x.device)

        w_rec = w_hh
        h_all = x.new_empty(seq_len + 1, batch, hidden)
        if w_hr is None:
            h_all[first_slot] = h0
        else:
            w_rec = w_hh @ w_hr
            h_all[first_slot] = 0
            gates[_first_steps(lengths, reverse, batch, seq_len, x.device)] += h0 @ w_hh.t()
        state_dtype = reference.state_dtype(x.dtype)
        run = batch > 0
        if cell == "lstm":
            cell_state = x.new_empty(seq_len + 1 if training else 2, batch, hidden, dtype=state_dtype)
            cell_state[first_slot % cell_state.shape[0]] = c0
            if run:
                recurrence.lstm_scan_fwd(gates, w_rec, h_all, cell_state, kernel_lengths, reverse, training)
        elif cell == "gru":
            cell_state = x.new_empty(seq_len if training else 0, batch, hidden, dtype=state_dtype)  # W_hn h + b_hn
            if run:
                recurrence.gru_scan_fwd(gates, w_hh, b_hh, h_all, cell_state, kernel_lengths, reverse, training)
        else:
            cell_state = x.new_empty(0)
            if run:
                recurrence.elman_scan_fwd(gates, w_hh, h_all, kernel_lengths, reverse, cell == "rnn_relu")

        if training:
            ctx.save_for_backward(x2d, w_ih, w_hh, w_hr, w_rec, h0, h_all, cell_state, gates, kernel_lengths)
            ctx.cell, ctx.reverse, ctx.backend, ctx.has_bias = cell, reverse, backend, has_bias
        y = h_all[:seq_len] if reverse else h_all[1:]
        h_n = h_all[last_slot]
        if w_hr is not None:
            y, h_n = y @ w_hr.t(), h_n @ w_hr.t()
        if lengths is not None:
            y = y.masked_fill(_padding_mask(lengths, seq_len), 0)
        h_n = h_n.clone() if w_hr is None else h_n
        if cell == "lstm":
            return y, h_n, cell_state[last_slot % cell_state.shape[0]].to(x.dtype)
        return y, h_n

    @staticmethod
    @once_differentiable
    def backward(ctx, dy, dh_n, dc_n=None):
        x2d, w_ih, w_hh, w_hr, w_rec, h0, h_all, cell_state, gates, lengths = ctx.saved_tensors
        cell, reverse = ctx.cell, ctx.reverse
        seq_len, batch, hidden = h_all.shape[0] - 1, h_all.shape[1], h_all.shape[2]
        first_t, last_t = (seq_len - 1, 0) if reverse else (0, seq_len - 1)
        grad_dtype = reference.state_dtype(gates.dtype)
        recurrence = _recurrence(ctx.backend)
        run = batch > 0
        r_all = h_all[:seq_len] if reverse else h_all[1:]  # the scan's own state: h, or o * tanh(c) with w_hr

        # A fresh contiguous copy: grad_output may be a strided view (after torch.cat, say).
        if dy is None:
            dh = torch.zeros(seq_len, batch, hidden, dtype=grad_dtype, device=h_all.device)
        else:
            dy = dy.to(grad_dtype, memory_format=torch.contiguous_format, copy=True)
            if lengths is not None:
                dy.masked_fill_(_padding_mask(lengths, seq_len), 0)  # those outputs are constant zeros
            dh = dy if w_hr is None else dy @ w_hr.to(grad_dtype)
        if dh_n is not None:
            dh[last_t] += dh_n if w_hr is None else dh_n.to(grad_dtype) @ w_hr.to(grad_dtype)

        dgates_h_all = gates.new_empty(seq_len + 1, batch, gates.shape[2], dtype=grad_dtype)
        dgates_h_all[0 if reverse else seq_len].zero_()
        dgates_h = dgates_h_all[1:] if reverse else dgates_h_all[:seq_len]
        dgates_x, dc0 = dgates_h, None
        dh_carry = torch.zeros_like(dh[0])  # the part of dh0 that does not go through W_hh
        if cell == "lstm":
            dc = torch.zeros_like(dh[0]) if dc_n is None else dc_n.to(grad_dtype, copy=True)
            if run:
                recurrence.lstm_scan_bwd(dgates_h_all, gates, w_rec, cell_state, dh, dc, dh_carry, lengths, reverse)
            dc0 = dc.to(gates.dtype) if ctx.needs_input_grad[6] else None
        elif cell == "gru":
            dgates_x = torch.empty_like(gates, dtype=grad_dtype)
            if run:
                recurrence.gru_scan_bwd(
                    dgates_h_all, dgates_x, gates, w_hh, h_all, cell_state, dh, dh_carry, lengths, reverse
                )
        elif run:
            recurrence.elman_scan_bwd(dgates_h_all, w_hh, h_all, dh, dh_carry, lengths, reverse, cell == "rnn_relu")

        needs = ctx.needs_input_grad
        weight_dtype = w_ih.dtype
        dgates_x2d, dgates_h2d = dgates_x.flatten(0, 1).to(weight_dtype), dgates_h.flatten(0, 1).to(weight_dtype)
        dx = (dgates_x2d @ w_ih).view(seq_len, batch, w_ih.shape[1]) if needs[3] else None
        dw_ih = dgates_x2d.t() @ x2d if needs[7] else None
        db_ih = dgates_x2d.sum(0) if ctx.has_bias and needs[9] else None
        db_hh = dgates_h2d.sum(0) if ctx.has_bias and needs[10] else None
        r_prev = h_all[1:] if reverse else h_all[:seq_len]
        dw_rec = dgates_h2d.t() @ r_prev.flatten(0, 1)
        dh0 = dw_hh = dw_hr = None
        if w_hr is None:
            if needs[5]:  # h0 sits in the first step's read slot (carried past padding in reverse)
                dh0 = (dgates_h[first_t] @ w_hh.to(grad_dtype) + dh_carry).to(w_hh.dtype)
            dw_hh = dw_rec if needs[8] else None
        else:
            # W_rec = W_hh W_hr carries the steps after each row's first; h0 enters that one through W_hh.
            dgates_first = dgates_h[_first_steps(lengths, reverse, batch, seq_len, h_all.device)]
            if needs[5]:
                dh0 = (dgates_first @ w_hh.to(grad_dtype)).to(w_hh.dtype)
            if needs[8]:
                dw_hh = dw_rec @ w_hr.t() + dgates_first.t().to(weight_dtype) @ h0
            if needs[11]:
                dy_total = torch.zeros_like(r_all[:, :, : w_hr.shape[0]], dtype=grad_dtype) if dy is None else dy
                if dh_n is not None:
                    dy_total = dy_total.clone()
                    dy_total[last_t] += dh_n
                dw_hr = w_hh.t() @ dw_rec + dy_total.flatten(0, 1).to(weight_dtype).t() @ r_all.flatten(0, 1)
        return None, None, None, dx, None, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr


def _first_steps(lengths, reverse: bool, batch: int, seq_len: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Index (t, b) of each row's first step: t = 0 forward, its last valid step in reverse."""
    rows = torch.arange(batch, device=device)
    if not reverse:
        return torch.zeros_like(rows), rows
    return (torch.full_like(rows, seq_len - 1) if lengths is None else lengths - 1), rows


def _padding_mask(lengths: torch.Tensor, seq_len: int) -> torch.Tensor:
    """[T, B, 1] True where t >= the row's length."""
    return (torch.arange(seq_len, device=lengths.device).unsqueeze(1) >= lengths).unsqueeze(2)
