"""Drop-in replacements for torch.nn's recurrent modules.

LSTM, GRU and RNN subclass torch.nn.RNNBase (not torch.nn.LSTM etc., which torch.compile refuses to
trace) and the cells their torch.nn twins, so parameters, their names, initialisation, state_dict and
argument checks are torch.nn's own; only forward is rnnfast's: it asks rnnfast.dispatch for the path
(torch's native kernels, rnnfast's PyTorch scan or its Triton kernels) and runs it.
"""

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from . import native
from .dispatch import NATIVE, TRITON, backend_name, choose_path, tracing
from .ops import error_flags_read_once, scan, stack_directions
from .wavefront import dropout_noise, stack_scan, wavefront_problem

_BACKEND_DOC = """backend (rnnfast only): "auto" (Triton kernels for CUDA tensors; on CPU, per call, torch's
            native kernels or rnnfast's PyTorch scan, whichever was measured faster), "triton" (always;
            CPU tensors only under TRITON_INTERPRET=1) or "scan" (always rnnfast's PyTorch scan). None
            reads the RNNFAST_BACKEND environment variable, default "auto"."""


# What torch.nn runs in the autocast dtype: on CUDA cuDNN's RNN and the cell ops are all in autocast's
# lower-precision list; on CPU (measured with torch 2.13) the LSTM, the Elman RNN and RNNCell are, while
# the GRU, LSTMCell and GRUCell run in float32.
_AUTOCAST_LOW_PRECISION = {
    "cuda": {"lstm", "gru", "rnn_tanh", "rnn_relu", "lstm_cell", "gru_cell", "rnn_cell"},
    "cpu": {"lstm", "rnn_tanh", "rnn_relu", "rnn_cell"},
}


def _autocast(x: torch.Tensor, hidden: tuple[torch.Tensor, ...], kind: str):
    """(x, hidden, run dtype) with x and hidden cast to the dtype a module of `kind` runs in under autocast
    on x's device, as torch.nn's does; as given, with run dtype None, where autocast is off there."""
    device_type = x.device.type
    if device_type not in _AUTOCAST_LOW_PRECISION or not torch.is_autocast_enabled(device_type):
        return x, hidden, None
    low_precision = kind in _AUTOCAST_LOW_PRECISION[device_type]
    run_dtype = torch.get_autocast_dtype(device_type) if low_precision else torch.float32
    return x.to(run_dtype), tuple(h.to(run_dtype) for h in hidden), run_dtype


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


class _Backend:
    """The `backend` argument every rnnfast module adds to its torch.nn constructor."""

    def _init_backend(self, backend: str | None) -> None:
        self.backend = backend_name(backend)

    def extra_repr(self) -> str:
        backend = "" if self.backend is None else f", backend={self.backend!r}"
        return super().extra_repr() + backend

    def __prepare_scriptable__(self):
        """torch.jit.script calls this first: TorchScript can compile neither the forward's keyword-only
        `lengths=` nor the Triton kernels, so it gets a clear error instead of one about the signature."""
        name = type(self).__name__
        raise RuntimeError(
            f"torch.jit.script cannot compile rnnfast.{name}: use torch.compile, or script a torch.nn copy of "
            "the model: torch.jit.script(rnnfast.revert(copy.deepcopy(model)))"
        )


class _RecurrentLayers(_Backend):
    """forward() shared by LSTM, GRU and RNN, mixed into their torch.nn base classes."""

    def _cell_name(self) -> str:
        return {"LSTM": "lstm", "GRU": "gru", "RNN_TANH": "rnn_tanh", "RNN_RELU": "rnn_relu"}[self.mode]

    def forward(self, input, hx=None, *, lengths=None):
        """As torch.nn's forward, plus an rnnfast extension: `lengths` [B] (integer tensor or list, any
        order, each in 1..T) for padded batched input. Rows then stop updating after their length, their
        outputs there are zero and the final states are those at each row's last valid step, exactly as
        if the batch had been packed (without the cost of packing)."""
        name = type(self).__name__
        is_lstm = self.mode == "LSTM"
        packed = input if isinstance(input, PackedSequence) else None
        if packed is not None:
            if lengths is not None:
                raise ValueError(f"{name}: lengths= cannot be combined with PackedSequence input, which has its own")
            path = self._path(packed.data, hx, varlen=True, batch=int(packed.batch_sizes[0]))
            if path == NATIVE:
                return self._native_packed(packed, hx)
            input, lengths = pad_packed_sequence(packed, batch_first=self.batch_first)
        elif input.dim() not in (2, 3):
            # torch.nn's words, which differ by class.
            tensor = " tensor" if self.mode.startswith("RNN") else ""
            raise ValueError(f"{name}: Expected input to be 2D or 3D, got {input.dim()}D{tensor} instead")
        is_batched = input.dim() == 3
        if lengths is not None and not is_batched:
            raise ValueError(f"{name}: lengths= needs batched 3-D input, got {input.dim()}-D input")
        batch_dim = 0 if self.batch_first else 1
        if not is_batched:
            input = input.unsqueeze(batch_dim)
        batch = input.size(batch_dim)
        hidden = self._hidden_or_zeros(input, hx, batch, is_batched)
        self.check_forward_args(input, hidden if is_lstm else hidden[0], None)
        if lengths is not None:
            lengths = _checked_lengths(lengths, input.size(1 - batch_dim), batch, input.device)
        if packed is None:
            path = self._path(input, hidden, varlen=lengths is not None, batch=batch)
        if path == NATIVE and lengths is None:
            output, final = self._native_layers(input, None, hidden)
        elif path == NATIVE:
            output, final = self._native_padded_with_lengths(input, hidden, lengths)
        else:
            input, hidden, run_dtype = _autocast(input, hidden, self._cell_name())
            _check_same_device_and_dtype(input, getattr(self, self._flat_weights_names[0]), hidden)
            x = input.transpose(0, 1) if self.batch_first else input
            output, final = self._scan_layers(path, x, hidden, lengths, run_dtype, packed)
            if self.batch_first:
                output = output.transpose(0, 1)
        if packed is not None:
            return _pack_like(output, packed, lengths, self.batch_first), final if is_lstm else final[0]
        if not is_batched:
            output = output.squeeze(batch_dim)
            final = tuple(state.squeeze(1) for state in final)
        return output, final if is_lstm else final[0]

    def _hidden_or_zeros(self, input: torch.Tensor, hx, batch: int, is_batched: bool) -> tuple[torch.Tensor, ...]:
        if hx is not None:
            return self._hidden_tuple(hx, is_batched)
        states = self.num_layers * (2 if self.bidirectional else 1)
        h_zeros = input.new_zeros(states, batch, self.proj_size or self.hidden_size)
        return (h_zeros, input.new_zeros(states, batch, self.hidden_size)) if self.mode == "LSTM" else (h_zeros,)

    def _path(self, input: torch.Tensor, hidden, varlen: bool, batch: int) -> str:
        """The path this call runs (rnnfast.dispatch.choose_path), in the dtype autocast gives it."""
        cell = self._cell_name()
        states = hidden if isinstance(hidden, (tuple, list)) else (hidden,)
        training = torch.is_grad_enabled() and (
            input.requires_grad
            or any(isinstance(h, torch.Tensor) and h.requires_grad for h in states)
            or any(p.requires_grad for p in self.parameters())  # leaves: computes no parametrization
        )
        _, _, run_dtype = _autocast(input, (), cell)
        return choose_path(
            self.backend, input.device, run_dtype or input.dtype, cell=cell, traced=tracing(input),
            training=training, varlen=varlen, batch=batch, hidden_size=self.hidden_size,
        )  # fmt: skip

    def _native_weights(self, run_dtype: torch.dtype | None) -> list[torch.Tensor]:
        """Every layer's weights in torch.nn's _flat_weights order, read through _layer_weights."""
        weights = [w for index in range(len(self._all_weights)) for w in self._layer_weights(index) if w is not None]
        return weights if run_dtype is None else [w.to(run_dtype) for w in weights]

    def _native_layers(self, input: torch.Tensor, batch_sizes: torch.Tensor | None, hidden: tuple[torch.Tensor, ...]):
        """torch's native layer kernel on padded input (batch_sizes None) or on sorted packed data, with
        torch.nn's autocast dtype (autocast itself casts the weights, as for torch.nn)."""
        input, hidden, run_dtype = _autocast(input, hidden, self._cell_name())
        weights = self._native_weights(run_dtype)
        _check_same_device_and_dtype(input, weights[0], hidden)
        return native.run_layers(
            self._cell_name(), input, batch_sizes, hidden, weights, self.bias, self.num_layers, self.dropout,
            self.training, self.bidirectional, self.batch_first,
        )  # fmt: skip

    def _native_packed(self, packed: PackedSequence, hx):
        """torch.nn's own handling of PackedSequence input, on its native kernels."""
        data, batch_sizes, sorted_indices, unsorted_indices = packed
        hidden = self._hidden_or_zeros(data, hx, int(batch_sizes[0]), is_batched=True)
        self.check_forward_args(data, hidden if self.mode == "LSTM" else hidden[0], batch_sizes)
        if sorted_indices is not None:
            hidden = tuple(h.index_select(1, sorted_indices) for h in hidden)
        output, final = self._native_layers(data, batch_sizes, hidden)
        if unsorted_indices is not None:
            final = tuple(h.index_select(1, unsorted_indices) for h in final)
        output = PackedSequence(output, batch_sizes, sorted_indices, unsorted_indices)
        return output, final if self.mode == "LSTM" else final[0]

    def _native_padded_with_lengths(self, input: torch.Tensor, hidden: tuple[torch.Tensor, ...], lengths):
        """lengths= on the native kernels: packed, run, and padded back (zeros past each length)."""
        packed = pack_padded_sequence(input, lengths.cpu(), batch_first=self.batch_first, enforce_sorted=False)
        hx = hidden if self.mode == "LSTM" else hidden[0]
        output, final = self._native_packed(packed, hx)
        total_length = input.size(1 if self.batch_first else 0)
        output, _ = pad_packed_sequence(output, batch_first=self.batch_first, total_length=total_length)
        return output, final if self.mode == "LSTM" else (final,)

    def _hidden_tuple(self, hx, is_batched: bool) -> tuple[torch.Tensor, ...]:
        """hx as a tuple of 3-D tensors, with torch.nn's errors for the wrong kind or rank."""
        expected_dim = 3 if is_batched else 2
        kind = "batched 3-D" if is_batched else "unbatched 2-D"
        if self.mode == "LSTM":
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError("LSTM: hx must be a tuple (h_0, c_0) of tensors")
            if hx[0].dim() != expected_dim or hx[1].dim() != expected_dim:
                raise RuntimeError(
                    f"For {kind} input, hx and cx should also be {expected_dim}-D but got "
                    f"({hx[0].dim()}-D, {hx[1].dim()}-D) tensors"
                )
            hidden = tuple(hx)
        else:
            if not isinstance(hx, torch.Tensor):
                raise TypeError(f"{type(self).__name__}: hx must be a tensor")
            if hx.dim() != expected_dim:
                raise RuntimeError(f"For {kind} input, hx should also be {expected_dim}-D but got {hx.dim()}-D tensor")
            hidden = (hx,)
        return hidden if is_batched else tuple(h.unsqueeze(1) for h in hidden)

    def _scan_layers(
        self,
        path: str,
        x: torch.Tensor,
        hidden: tuple[torch.Tensor, ...],
        lengths: torch.Tensor | None,
        run_dtype: torch.dtype | None,
        packed: PackedSequence | None = None,
    ):
        if x.size(0) == 0:
            raise RuntimeError("Expected sequence length to be larger than 0 in RNN")
        cell = self._cell_name()
        num_directions = 2 if self.bidirectional else 1
        finals = [[] for _ in hidden]
        layer_input = x
        if path == TRITON and not tracing(x):
            dropout = self.dropout if self.training else 0.0
            problem = wavefront_problem(
                cell, self.num_layers, self.bidirectional, dropout > 0, self.proj_size > 0, self.hidden_size,
                x.size(1), x.dtype, x.device,
            )  # fmt: skip
            if problem is None:
                weights = [self._layer_weights(index) for index in range(self.num_layers)]
                weights = [tuple(None if w is None else w.to(run_dtype) if run_dtype else w for w in layer)
                           for layer in weights]  # fmt: skip
                c0 = hidden[1] if len(hidden) == 2 else None
                y, *states = stack_scan(cell, x, lengths, hidden[0], c0, weights, dropout, packed)
                return y, tuple(states)
        # One device-to-host wait per forward (the grid barriers' error flags), after every layer is queued.
        with error_flags_read_once(path, x):
            for layer in range(self.num_layers):
                # Both directions of a layer go to one scan, which runs them in the same kernel launches.
                indices = range(layer * num_directions, (layer + 1) * num_directions)
                per_direction = zip(*(self._layer_weights(index) for index in indices))
                weights = [None if w[0] is None else _stack_directions(w, run_dtype) for w in per_direction]
                h0 = hidden[0][indices.start : indices.stop]
                c0 = hidden[1][indices.start : indices.stop] if len(hidden) == 2 else None
                layer_input, *states = scan(cell, path, layer_input, lengths, h0, c0, *weights)
                for final, state in zip(finals, states):
                    final.append(state)
                if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                    # torch.nn draws over its layer's output: packed rows for PackedSequence input.
                    if packed is None:
                        layer_input = F.dropout(layer_input, self.dropout, training=True)
                    else:
                        layer_input = layer_input * dropout_noise(layer_input, self.dropout, packed)
        return layer_input, tuple(torch.cat(final) for final in finals)

    def _layer_weights(self, index: int) -> tuple:
        """(w_ih, w_hh, b_ih, b_hh, w_hr) of one layer-direction; biases None when bias=False, w_hr None
        without projections.

        Read by name on every call, as torch.nn re-reads its weights: a parametrization (weight_norm)
        computes the tensor anew, torch.func.functional_call swaps it, and torch.nn's cached
        `_flat_weights` list would still hold the old one."""
        names = self._all_weights[index]
        weights = [getattr(self, name) for name in names]
        w_hr = weights[-1] if self.proj_size > 0 else None
        biases = tuple(weights[2:4]) if self.bias else (None, None)
        return (weights[0], weights[1], *biases, w_hr)


class LSTM(_RecurrentLayers, nn.RNNBase):
    __doc__ = f"""torch.nn.LSTM, drop-in: same constructor, parameters, initialisation, state_dict and numbers.

    CUDA tensors run rnnfast's fused Triton kernels; CPU tensors run torch's own kernels (oneDNN) or
    rnnfast's PyTorch scan, whichever was measured faster for the call (rnnfast.dispatch).

    Args: those of torch.nn.LSTM (proj_size included), plus
        {_BACKEND_DOC}

    forward(input, hx=None, *, lengths=None): as torch.nn.LSTM's, plus rnnfast's `lengths` [B] (an
    integer tensor or list, any order, each in 1..T) for a padded batch: the result equals torch.nn's on
    the packed batch, padded with zeros, without packing. PackedSequence input works as in torch.nn.

    Returns (output, (h_n, c_n)) exactly as torch.nn.LSTM: output [T, B, D*P] ([B, T, D*P] with
    batch_first, [T, D*P] for unbatched input; P = proj_size or hidden_size), h_n [num_layers*D, B, P],
    c_n [num_layers*D, B, H].

    Example:
        >>> torch_lstm = torch.nn.LSTM(32, 64, num_layers=2, batch_first=True)
        >>> lstm = rnnfast.LSTM(32, 64, num_layers=2, batch_first=True)
        >>> lstm.load_state_dict(torch_lstm.state_dict())
        <All keys matched successfully>
        >>> output, (h_n, c_n) = lstm(torch.randn(8, 100, 32), lengths=[100, 90, 80, 70, 60, 50, 40, 30])
        >>> output.shape, h_n.shape
        (torch.Size([8, 100, 64]), torch.Size([2, 8, 64]))
    """

    # torch.nn.LSTM's checks of (h_0, c_0); the class itself is not a base: torch.compile refuses to trace
    # any instance of torch.nn.LSTM/GRU/RNN.
    check_forward_args = nn.LSTM.check_forward_args
    get_expected_cell_size = nn.LSTM.get_expected_cell_size

    def __init__(self, *args, backend: str | None = None, **kwargs):
        super().__init__("LSTM", *args, **kwargs)
        self._init_backend(backend)


class GRU(_RecurrentLayers, nn.RNNBase):
    __doc__ = f"""torch.nn.GRU, drop-in (gates r z n, b_hn inside the reset product, as torch.nn).

    CUDA tensors run rnnfast's fused Triton kernels; CPU tensors run torch's own loop or rnnfast's
    PyTorch scan, whichever was measured faster for the call (rnnfast.dispatch; the scan trains most
    GRUs faster than torch.nn on CPU).

    Args: those of torch.nn.GRU, plus
        {_BACKEND_DOC}

    forward(input, hx=None, *, lengths=None): as torch.nn.GRU's, plus `lengths` as in rnnfast.LSTM.

    Returns (output, h_n) exactly as torch.nn.GRU: output [T, B, D*H] ([B, T, D*H] with batch_first,
    [T, D*H] unbatched), h_n [num_layers*D, B, H] ([num_layers*D, H] unbatched).

    Example:
        >>> gru = rnnfast.GRU(32, 64, bidirectional=True)
        >>> output, h_n = gru(torch.randn(100, 8, 32))
        >>> output.shape, h_n.shape
        (torch.Size([100, 8, 128]), torch.Size([2, 8, 64]))
    """

    def __init__(self, *args, backend: str | None = None, **kwargs):
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        super().__init__("GRU", *args, **kwargs)
        self._init_backend(backend)


class RNN(_RecurrentLayers, nn.RNNBase):
    __doc__ = f"""torch.nn.RNN (Elman network, nonlinearity "tanh" or "relu"), drop-in.

    Paths as rnnfast.GRU. Args: those of torch.nn.RNN, plus
        {_BACKEND_DOC}

    forward(input, hx=None, *, lengths=None): as torch.nn.RNN's, plus `lengths` as in rnnfast.LSTM.
    Returns (output, h_n) exactly as torch.nn.RNN (shapes as rnnfast.GRU).

    Example:
        >>> rnn = rnnfast.RNN(32, 64, num_layers=2, nonlinearity="relu")
        >>> output, h_n = rnn(torch.randn(100, 8, 32))
        >>> output.shape, h_n.shape
        (torch.Size([100, 8, 64]), torch.Size([2, 8, 64]))
    """

    def __init__(self, *args, backend: str | None = None, **kwargs):
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        if len(args) > 3:
            self.nonlinearity = args[3]
            args = args[:3] + args[4:]
        else:
            self.nonlinearity = kwargs.pop("nonlinearity", "tanh")
        if self.nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"Unknown nonlinearity '{self.nonlinearity}'. Select from 'tanh' or 'relu'.")
        super().__init__(f"RNN_{self.nonlinearity.upper()}", *args, **kwargs)
        self._init_backend(backend)


class _RecurrentCell(_Backend):
    """forward() shared by LSTMCell, GRUCell and RNNCell: one step of the same scan (T = 1)."""

    def _cell_name(self) -> str:
        if isinstance(self, nn.RNNCell):
            if self.nonlinearity not in ("tanh", "relu"):
                raise RuntimeError(f"Unknown nonlinearity: {self.nonlinearity}")
            return f"rnn_{self.nonlinearity}"
        return "lstm" if isinstance(self, nn.LSTMCell) else "gru"

    def forward(self, input, hx=None):
        name = type(self).__name__
        is_lstm = isinstance(self, nn.LSTMCell)
        if input.dim() not in (1, 2):
            raise ValueError(f"{name}: Expected input to be 1D or 2D, got {input.dim()}D instead")
        if hx is None:
            hidden = None
        elif is_lstm:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError("LSTMCell: hx must be a tuple (h_0, c_0) of tensors")
            hidden = tuple(hx)
        else:
            if not isinstance(hx, torch.Tensor):
                raise TypeError(f"{name}: hx must be a tensor")
            hidden = (hx,)
        for i, h in enumerate(hidden or ()):
            if h.dim() not in (1, 2):
                what = f"hx[{i}]" if is_lstm else "hidden"
                raise ValueError(f"{name}: Expected {what} to be 1D or 2D, got {h.dim()}D instead")
        is_batched = input.dim() == 2
        if not is_batched:
            input = input.unsqueeze(0)
        if hidden is None:
            zeros = input.new_zeros(input.size(0), self.hidden_size)
            hidden = (zeros, zeros) if is_lstm else (zeros,)
        elif not is_batched:
            hidden = tuple(h.unsqueeze(0) for h in hidden)
        _check_cell_args(input, hidden, self.input_size, self.hidden_size)
        weights = (self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
        cell = self._cell_name()
        input, hidden, run_dtype = _autocast(input, hidden, cell.split("_")[0] + "_cell")
        if run_dtype is not None:
            weights = tuple(None if w is None else w.to(run_dtype) for w in weights)
        _check_same_device_and_dtype(input, self.weight_ih, hidden)
        if input.dtype != weights[0].dtype:
            raise RuntimeError(f"expected input dtype ({input.dtype}) to match weight dtype ({self.weight_ih.dtype})")

        path = choose_path(self.backend, input.device, input.dtype, cell=cell, traced=tracing(input), one_step=True)
        if path == NATIVE:
            states = native.run_cell(cell, input, hidden, weights)
        else:
            h0, c0 = hidden[0].unsqueeze(0), hidden[1].unsqueeze(0) if is_lstm else None
            one_direction = [None if w is None else stack_directions([w]) for w in weights]
            _, *states = scan(cell, path, input.unsqueeze(0), None, h0, c0, *one_direction, None)
            states = [state[0] for state in states]
        if not is_batched:
            states = [state.squeeze(0) for state in states]
        return tuple(states) if is_lstm else states[0]


class LSTMCell(_RecurrentCell, nn.LSTMCell):
    __doc__ = f"""torch.nn.LSTMCell, drop-in: one step of rnnfast.LSTM's scan (on CUDA, its kernels with T = 1;
    on CPU torch's own cell op, measured faster for one step).

    Args: those of torch.nn.LSTMCell, plus
        {_BACKEND_DOC}

    Returns (h', c'), each [B, H] ([H] for unbatched input).

    Example:
        >>> cell = rnnfast.LSTMCell(10, 20)
        >>> h, c = cell(torch.randn(3, 10))
        >>> h, c = cell(torch.randn(3, 10), (h, c))
        >>> h.shape
        torch.Size([3, 20])
    """

    def __init__(self, *args, backend: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_backend(backend)


class GRUCell(_RecurrentCell, nn.GRUCell):
    __doc__ = f"""torch.nn.GRUCell, drop-in: one step of rnnfast.GRU's scan (paths as rnnfast.LSTMCell).

    Args: those of torch.nn.GRUCell, plus
        {_BACKEND_DOC}

    Returns h' [B, H] ([H] for unbatched input).

    Example:
        >>> cell = rnnfast.GRUCell(10, 20)
        >>> cell(torch.randn(3, 10)).shape
        torch.Size([3, 20])
    """

    def __init__(self, *args, backend: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_backend(backend)


class RNNCell(_RecurrentCell, nn.RNNCell):
    __doc__ = f"""torch.nn.RNNCell (tanh or relu), drop-in: one step of rnnfast.RNN's scan (paths as
    rnnfast.LSTMCell).

    Args: those of torch.nn.RNNCell, plus
        {_BACKEND_DOC}

    Returns h' [B, H] ([H] for unbatched input).

    Example:
        >>> cell = rnnfast.RNNCell(10, 20, nonlinearity="relu")
        >>> cell(torch.randn(10)).shape
        torch.Size([20])
    """

    def __init__(self, *args, backend: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_backend(backend)


def _stack_directions(weights: tuple[torch.Tensor, ...], run_dtype: torch.dtype | None) -> torch.Tensor:
    """One parameter of each direction of a layer as [D, ...] (a view for one direction), cast to the
    autocast dtype when there is one."""
    stacked = stack_directions(weights)
    return stacked if run_dtype is None else stacked.to(run_dtype)


def _check_cell_args(x: torch.Tensor, hidden: tuple[torch.Tensor, ...], input_size: int, hidden_size: int) -> None:
    """The argument checks of torch's *_cell ops, with their messages."""
    if x.size(1) != input_size:
        raise RuntimeError(f"input has inconsistent input_size: got {x.size(1)} expected {input_size}")
    for i, h in enumerate(hidden):
        if h.size(0) != x.size(0):
            raise RuntimeError(f"Input batch size {x.size(0)} doesn't match hidden{i} batch size {h.size(0)}")
        if h.size(1) != hidden_size:
            raise RuntimeError(f"hidden{i} has inconsistent hidden_size: got {h.size(1)}, expected {hidden_size}")


def _checked_lengths(lengths, seq_len: int, batch: int, device: torch.device) -> torch.Tensor:
    """lengths as an int64 tensor on `device`, or a ValueError naming what is wrong with it."""
    if not isinstance(lengths, torch.Tensor):
        lengths = torch.as_tensor(lengths)
    if lengths.dtype.is_floating_point or lengths.dtype.is_complex or lengths.dtype == torch.bool:
        raise ValueError(f"lengths must be an integer tensor, got {lengths.dtype}")
    if lengths.dim() != 1 or lengths.numel() != batch:
        raise ValueError(f"lengths must be a 1-D tensor of {batch} sequence lengths, got shape {tuple(lengths.shape)}")
    if lengths.device.type != "cpu" and lengths.device != device:
        raise ValueError(f"lengths must be on the CPU or on the input's device ({device}), got {lengths.device}")
    # Value checks read the tensor: done eagerly, not while torch.compile traces (they would break the graph).
    if batch > 0 and not torch.compiler.is_compiling():
        if lengths.min() <= 0:
            raise ValueError(
                "Length of all samples has to be greater than 0, but found an element in 'lengths' that is <= 0"
            )
        if lengths.max() > seq_len:
            raise ValueError(f"lengths must not exceed the sequence length {seq_len}, got {int(lengths.max())}")
    return lengths.to(device=device, dtype=torch.int64).contiguous()


def _pack_like(
    output: torch.Tensor, packed: PackedSequence, lengths: torch.Tensor, batch_first: bool
) -> PackedSequence:
    """Padded output in the original batch order, packed with the input's batch_sizes and indices."""
    batch_dim = 0 if batch_first else 1
    sorted_lengths = lengths.cpu()
    if packed.sorted_indices is not None:
        output = output.index_select(batch_dim, packed.sorted_indices)
        sorted_lengths = sorted_lengths[packed.sorted_indices.cpu()]
    data = pack_padded_sequence(output, sorted_lengths, batch_first=batch_first, enforce_sorted=True).data
    return PackedSequence(data, packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices)
