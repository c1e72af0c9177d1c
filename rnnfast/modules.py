"""Drop-in replacements for torch.nn's recurrent modules.

Each class subclasses its torch.nn twin, so parameters, their names, initialisation, state_dict and
argument checks are torch.nn's own; only forward runs through rnnfast.functional.
"""

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from .functional import LSTMScan, check_backend_name, resolve_backend


def _check_same_device_and_dtype(x: torch.Tensor, weight: torch.Tensor, hidden: tuple[torch.Tensor, ...]) -> None:
    if x.device != weight.device:
        raise RuntimeError(
            "Input and parameter tensors are not at the same device, found input tensor at "
            f"{x.device} and parameter tensor at {weight.device}"
        )
    for h in hidden:
        if h.device != x.device:
            raise RuntimeError(
                "Input and hidden tensors are not at the same device, found input tensor at "
                f"{x.device} and hidden tensor at {h.device}"
            )
        if h.dtype != x.dtype:
            raise RuntimeError(
                f"Input and hidden tensors are not the same dtype, found input tensor with {x.dtype} and "
                f"hidden tensor with {h.dtype}"
            )


class LSTM(nn.LSTM):
    """torch.nn.LSTM with fused Triton kernels on CUDA and a pure-PyTorch scan on CPU.

    Args: those of torch.nn.LSTM, plus
        backend: "auto" (Triton for CUDA tensors, PyTorch otherwise), "triton" (always; CPU tensors only
            under TRITON_INTERPRET=1) or "torch". None reads RNNFAST_BACKEND, default "auto".

    Returns (output, (h_n, c_n)) exactly as torch.nn.LSTM: output [T, B, D*H] ([B, T, D*H] with
    batch_first, [T, D*H] for unbatched input), h_n and c_n [num_layers*D, B, H] ([num_layers*D, H]).

    Example:
        >>> lstm = rnnfast.LSTM(32, 64, num_layers=2, batch_first=True)
        >>> lstm.load_state_dict(torch_lstm.state_dict())
        >>> output, (h_n, c_n) = lstm(torch.randn(8, 100, 32))
    """

    def __init__(self, *args, backend: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if self.proj_size > 0:
            raise NotImplementedError("rnnfast.LSTM does not support proj_size > 0 yet")
        self.backend = check_backend_name(backend)

    def extra_repr(self) -> str:
        backend = "" if self.backend is None else f", backend={self.backend!r}"
        return super().extra_repr() + backend

    def forward(self, input, hx=None):
        if isinstance(input, PackedSequence):
            raise NotImplementedError("rnnfast.LSTM does not accept PackedSequence input yet")
        if input.dim() not in (2, 3):
            raise ValueError(f"LSTM: Expected input to be 2D or 3D, got {input.dim()}D instead")
        is_batched = input.dim() == 3
        batch_dim = 0 if self.batch_first else 1
        if not is_batched:
            input = input.unsqueeze(batch_dim)
        num_directions = 2 if self.bidirectional else 1
        if hx is None:
            zeros = input.new_zeros(self.num_layers * num_directions, input.size(batch_dim), self.hidden_size)
            hx = (zeros, zeros)
        else:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError("LSTM: hx must be a tuple (h_0, c_0) of tensors")
            expected_dim = 3 if is_batched else 2
            if hx[0].dim() != expected_dim or hx[1].dim() != expected_dim:
                kind = "batched 3-D input, hx and cx should also be 3-D" if is_batched else (
                    "unbatched 2-D input, hx and cx should also be 2-D"
                )
                raise RuntimeError(f"For {kind} but got ({hx[0].dim()}-D, {hx[1].dim()}-D) tensors")
            if not is_batched:
                hx = (hx[0].unsqueeze(1), hx[1].unsqueeze(1))
        self.check_forward_args(input, hx, None)
        _check_same_device_and_dtype(input, self.weight_ih_l0, hx)

        x = input.transpose(0, 1) if self.batch_first else input
        output, h_n, c_n = self._scan_layers(x, hx[0], hx[1])
        if self.batch_first:
            output = output.transpose(0, 1)
        if not is_batched:
            output = output.squeeze(batch_dim)
            h_n, c_n = h_n.squeeze(1), c_n.squeeze(1)
        return output, (h_n, c_n)

    def _scan_layers(self, x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor):
        if x.size(0) == 0:
            raise RuntimeError("Expected sequence length to be larger than 0 in RNN")
        backend = resolve_backend(self.backend, x.device, x.dtype)
        num_directions = 2 if self.bidirectional else 1
        h_n, c_n = [], []
        layer_input = x
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(num_directions):
                index = layer * num_directions + direction
                weights = self._layer_weights(index)
                y, h, c = LSTMScan.apply(layer_input, h0[index], c0[index], *weights, direction == 1, backend)
                outputs.append(y)
                h_n.append(h)
                c_n.append(c)
            layer_input = outputs[0] if num_directions == 1 else torch.cat(outputs, dim=2)
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                layer_input = F.dropout(layer_input, self.dropout, training=True)
        return layer_input, torch.stack(h_n), torch.stack(c_n)

    def _layer_weights(self, index: int) -> tuple:
        """(w_ih, w_hh, b_ih, b_hh) of one layer-direction; biases None when bias=False."""
        per_layer = len(self._flat_weights) // len(self._all_weights)
        weights = self._flat_weights[index * per_layer : (index + 1) * per_layer]
        return tuple(weights) if self.bias else (weights[0], weights[1], None, None)


class LSTMCell(nn.LSTMCell):
    """torch.nn.LSTMCell on rnnfast's LSTM scan with T = 1 (same kernels as rnnfast.LSTM).

    Args: those of torch.nn.LSTMCell, plus backend (as rnnfast.LSTM).
    Returns (h', c'), each [B, H] ([H] for unbatched input).
    """

    def __init__(self, *args, backend: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.backend = check_backend_name(backend)

    def forward(self, input, hx=None):
        if input.dim() not in (1, 2):
            raise ValueError(f"LSTMCell: Expected input to be 1D or 2D, got {input.dim()}D instead")
        if hx is not None and (not isinstance(hx, (tuple, list)) or len(hx) != 2):
            raise TypeError("LSTMCell: hx must be a tuple (h_0, c_0) of tensors")
        if hx is not None:
            for i, h in enumerate(hx):
                if h.dim() not in (1, 2):
                    raise ValueError(f"LSTMCell: Expected hx[{i}] to be 1D or 2D, got {h.dim()}D instead")
        is_batched = input.dim() == 2
        if not is_batched:
            input = input.unsqueeze(0)
        if hx is None:
            zeros = input.new_zeros(input.size(0), self.hidden_size)
            hx = (zeros, zeros)
        elif not is_batched:
            hx = (hx[0].unsqueeze(0), hx[1].unsqueeze(0))
        _check_cell_args(input, hx, self.input_size, self.hidden_size)
        _check_same_device_and_dtype(input, self.weight_ih, hx)
        if input.dtype != self.weight_ih.dtype:
            raise RuntimeError(
                f"expected input dtype ({input.dtype}) to match weight dtype ({self.weight_ih.dtype})"
            )

        backend = resolve_backend(self.backend, input.device, input.dtype)
        _, h, c = LSTMScan.apply(
            input.unsqueeze(0), hx[0], hx[1], self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh, False, backend
        )
        if not is_batched:
            h, c = h.squeeze(0), c.squeeze(0)
        return h, c


def _check_cell_args(x: torch.Tensor, hidden: tuple[torch.Tensor, ...], input_size: int, hidden_size: int) -> None:
    """The argument checks of torch's *_cell ops, with their messages."""
    if x.size(1) != input_size:
        raise RuntimeError(f"input has inconsistent input_size: got {x.size(1)} expected {input_size}")
    for i, h in enumerate(hidden):
        if h.size(0) != x.size(0):
            raise RuntimeError(f"Input batch size {x.size(0)} doesn't match hidden{i} batch size {h.size(0)}")
        if h.size(1) != hidden_size:
            raise RuntimeError(f"hidden{i} has inconsistent hidden_size: got {h.size(1)}, expected {hidden_size}")
