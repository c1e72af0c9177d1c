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


class LSTMScan(torch.autograd.Function):
    """One LSTM layer in one direction over time-major x [T, B, I]: returns y [T, B, H], h_n, c_n [B, H]."""

    @staticmethod
    def forward(ctx, x, h0, c0, w_ih, w_hh, b_ih, b_hh, reverse: bool, backend: str):
        seq_len, batch, input_size = x.shape
        hidden = w_hh.shape[1]
        x2d = x.reshape(seq_len * batch, input_size)
        bias = None if b_ih is None else b_ih + b_hh
        gates = _input_projection(x2d, w_ih, bias).view(seq_len, batch, 4 * hidden)
        training = any(ctx.needs_input_grad)

        cell_dtype = reference.state_dtype(x.dtype)
        h_all = x.new_empty(seq_len + 1, batch, hidden)
        c_all = x.new_empty(seq_len + 1 if training else 2, batch, hidden, dtype=cell_dtype)
        first_slot, last_slot = (seq_len, 0) if reverse else (0, seq_len)
        h_all[first_slot] = h0
        c_all[first_slot % c_all.shape[0]] = c0
        if batch > 0:
            _recurrence(backend).lstm_scan_fwd(gates, w_hh, h_all, c_all, reverse, training)

        if training:
            ctx.save_for_backward(x2d, w_ih, w_hh, h_all, c_all, gates)
            ctx.reverse = reverse
            ctx.backend = backend
            ctx.has_bias = b_ih is not None
        y = h_all[:seq_len] if reverse else h_all[1:]
        return y, h_all[last_slot].clone(), c_all[last_slot % c_all.shape[0]].to(x.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, dy, dh_n, dc_n):
        x2d, w_ih, w_hh, h_all, c_all, gates = ctx.saved_tensors
        seq_len, batch, hidden = h_all.shape[0] - 1, h_all.shape[1], h_all.shape[2]
        reverse = ctx.reverse
        grad_dtype = c_all.dtype

        # A fresh contiguous copy: grad_output may be a strided view (after torch.cat, say).
        if dy is None:
            dh = torch.zeros(seq_len, batch, hidden, dtype=grad_dtype, device=h_all.device)
        else:
            dh = dy.to(grad_dtype, memory_format=torch.contiguous_format, copy=True)
        last_t = 0 if reverse else seq_len - 1
        if dh_n is not None:
            dh[last_t] += dh_n
        dc = torch.zeros_like(dh[0]) if dc_n is None else dc_n.to(grad_dtype, copy=True)

        dgates_all = torch.empty(seq_len + 1, batch, 4 * hidden, dtype=gates.dtype, device=gates.device)
        dgates_all[0 if reverse else seq_len].zero_()
        if batch > 0:
            _recurrence(ctx.backend).lstm_scan_bwd(dgates_all, gates, w_hh, c_all, dh, dc, reverse)
        dgates = dgates_all[1:] if reverse else dgates_all[:seq_len]
        dx, dh0, dw_ih, dw_hh, dbias = _projection_grads(ctx, x2d, w_ih, w_hh, h_all, dgates, reverse)
        dc0 = dc.to(gates.dtype) if ctx.needs_input_grad[2] else None
        return dx, dh0, dc0, dw_ih, dw_hh, dbias, dbias, None, None


def _projection_grads(ctx, x2d, w_ih, w_hh, h_all, dgates, reverse):
    """dx, dh0 and the weight and bias gradients from the gate pre-activation gradients [T, B, G*H]."""
    seq_len, batch, _ = dgates.shape
    needs = ctx.needs_input_grad
    dgates2d = dgates.flatten(0, 1)
    dx = (dgates2d @ w_ih).view(seq_len, batch, w_ih.shape[1]) if needs[0] else None
    dh0 = dgates[seq_len - 1 if reverse else 0] @ w_hh if needs[1] else None
    dw_ih = dgates2d.t() @ x2d if needs[3] else None
    h_prev = h_all[1:] if reverse else h_all[:seq_len]
    dw_hh = dgates2d.t() @ h_prev.flatten(0, 1) if needs[4] else None
    dbias = dgates2d.sum(0) if ctx.has_bias and (needs[5] or needs[6]) else None
    return dx, dh0, dw_ih, dw_hh, dbias
