"""A unidirectional stack of LSTM, GRU or Elman RNN layers as one wavefront: every layer in the same
grid-synchronised launch, layer l running WAVEFRONT_LAG steps behind layer l - 1 (kernels/recurrence.py),
so a pass takes T + 2(L - 1) barrier steps instead of L x T. Forward and backward are one launch each.

Layer 0's input projection is a GEMM before the launch, as in a layer's scan (rnnfast.ops); an upper
layer projects its input inside the kernel, from the layer below's state slots scaled by its dropout
noise. The noise is drawn before the launch, one tensor per upper layer in layer order, with the very
call torch.nn's dropout between layers makes (F.dropout, here of ones): the same random numbers as the
layer-by-layer scan, which draws them between its layers. With proj_size the upper layers' input
weights are W_ih W_hr of the layer below (the kernels' state is r = o * tanh(c), ops.scan), so dropout
there (on h = W_hr r) cannot be applied in the kernel: such a stack in training runs layer by layer
(`wavefront_problem`). The backward's recurrence also runs the gradient reaching each layer's input
down to the layer below inside the kernel; the weight gradients are GEMMs after it. The GRU keeps b_hh in
its recurrence (inside the reset product) and its input projection's gate gradients apart (dgates_x):
the gradient reaching the layer below is dgates_x W_ih, not the recurrent gates' dgates_h W_ih.

Eager only (an autograd.Function): under torch.compile the layers run as scans of the custom op.
"""

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from . import differentiable
from .ops import _autocast_off, _error_flags, _padding_mask


def wavefront_problem(
    cell: str, num_layers: int, bidirectional: bool, dropout_in_training: bool, projections: bool, hidden: int,
    batch: int, dtype: torch.dtype, device: torch.device,
) -> str | None:  # fmt: skip
    """Why a stack on the TRITON path runs layer by layer instead of as one wavefront forward (None: it
    runs as a wavefront): one layer, bidirectional (configs.NO_BIDIRECTIONAL_WAVEFRONT), proj_size with
    dropout in training, a device whose barrier timed out, a plan that cannot keep every layer's programs
    in one grid-synchronised launch, or an input weight too large to stream each step
    (configs.WAVEFRONT_MAX_W_IH_BYTES) where it does not fit on chip."""
    from .kernels import launch
    from .kernels.configs import (
        MIN_DOT,
        NO_BIDIRECTIONAL_WAVEFRONT,
        WIDE_TILE_ROWS,
        input_weight_bytes,
        plan_wavefront_lanes,
        streams_well,
    )

    if num_layers < 2:
        return "one layer"
    if bidirectional:
        return NO_BIDIRECTIONAL_WAVEFRONT
    if projections and dropout_in_training:
        return "proj_size with dropout: the dropout applies to W_hr r, which the kernel does not compute"
    if launch.timed_out(device):
        return "a grid barrier timed out on this device"
    plan = plan_wavefront_lanes(cell, hidden, batch, dtype, device, num_layers)
    if not plan.grid_sync or plan.directions != num_layers:
        return "the layers' programs are not all resident in one grid-synchronised launch"
    if hidden % MIN_DOT and plan.forward.block_b >= WIDE_TILE_ROWS:
        # Compiled as launched (Triton 3.9), the LSTM fp32 B64 H257 forward spilled 48 B on sm_90 and
        # did not fit a block's shared memory on sm_80 (176,128 B).
        return "H not a multiple of 16 with 64-row tiles: the wavefront's forward does not compile within limits"
    if not plan.forward.in_pieces and not streams_well(cell, hidden, dtype, "forward"):
        size = input_weight_bytes(cell, hidden, dtype)
        return f"an upper layer's W_ih ({size:,} B) does not fit on chip and is too large to stream"
    return None


def backward_wavefront(
    cell: str, num_layers: int, hidden: int, batch: int, dtype: torch.dtype, device: torch.device | None
) -> bool:  # fmt: skip
    """Whether a wavefront forward's backward is a wavefront too (else its layers run one after the other):
    where the layer above's W_in is small enough to stream each step, or its plan holds it on chip
    (configs.plan_wavefront_lanes)."""
    from .kernels.configs import plan_wavefront_lanes, streams_well

    if streams_well(cell, hidden, dtype, "backward"):
        return True
    return bool(plan_wavefront_lanes(cell, hidden, batch, dtype, device, num_layers).backward.in_pieces)


def dropout_noise(like: torch.Tensor, p: float, packed: PackedSequence | None = None) -> torch.Tensor:
    """The scales torch.nn's dropout multiplies a layer's output like [T, B, width] by, drawn by the same
    call (F.dropout, of ones) over the same tensor shape: the padded output, or for PackedSequence input
    the packed rows (torch.nn's layers run on packed data), laid out padded (padding rows get 0)."""
    if packed is None:
        return F.dropout(like.new_ones(like.shape), p, training=True)
    noise = F.dropout(like.new_ones(packed.data.shape[0], like.shape[2]), p, training=True)
    padded, _ = pad_packed_sequence(
        PackedSequence(noise, packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices),
        total_length=like.shape[0],
    )
    return padded


def stack_scan(cell, x, lengths, h0, c0, layer_weights, dropout: float, packed: PackedSequence | None = None):
    """The stack of len(layer_weights) unidirectional layers of `cell` over time-major x [T, B, I], as
    ops.scan runs one layer: h0 [L, B, P], c0 [L, B, H], layer_weights a (w_ih, w_hh, b_ih, b_hh, w_hr) per
    layer (torch.nn layout, no direction axis; biases None without bias, w_hr None without projections),
    `dropout` the probability applied to every layer's output but the last (0: none; `packed`: the
    PackedSequence x was padded from, whose rows torch.nn's dropout draws over). Returns
    (y [T, B, P], h_n [L, B, P], c_n [L, B, H])."""
    seq_len, batch = x.shape[:2]
    num_layers = len(layer_weights)
    w_ih = [w[0] for w in layer_weights]
    w_hh = [w[1] for w in layer_weights]
    w_hr = [w[4] for w in layer_weights]
    projections = w_hr[0] is not None
    hidden = w_hh[0].shape[1] if not projections else w_hr[0].shape[1]
    if projections:
        w_rec = torch.stack([a @ b for a, b in zip(w_hh, w_hr)])
        first_gates = torch.stack([h @ w.t() for h, w in zip(h0, w_hh)])
        h_init = h0.new_zeros(num_layers, batch, hidden)
        upper = [a @ b for a, b in zip(w_ih[1:], w_hr[:-1])]
    else:
        w_rec, first_gates, h_init = torch.stack(w_hh), None, h0
        upper = w_ih[1:]
    has_bias = layer_weights[0][2] is not None
    # The input bias, added to the gates before the launch (the GRU's b_ih; the others fold b_hh in), and
    # the GRU's recurrent bias b_hh.
    b_rec = None
    if not has_bias:
        bias = None
    elif cell == "gru":
        bias, b_rec = torch.stack([w[2] for w in layer_weights]), torch.stack([w[3] for w in layer_weights])
    else:
        bias = torch.stack([w[2] + w[3] for w in layer_weights])
    # Layer 0's lane loads a slice of its W_in too, multiplied by nothing but zeros: zeros, not garbage
    # (which may hold NaNs). Its noise is never read.
    w_in = torch.stack([torch.zeros_like(upper[0]), *upper])
    noise = None
    if dropout > 0:
        noise = x.new_empty(num_layers, seq_len, batch, hidden)
        for layer in range(1, num_layers):  # in layer order, as torch.nn draws them
            noise[layer] = dropout_noise(noise[layer], dropout, packed)
    inputs = (x, h_init, c0, w_ih[0], w_in, w_rec.contiguous(), bias, b_rec, first_gates)
    h_all, c_n = _WavefrontScan.apply(cell, lengths, noise, *inputs)
    y, finals = h_all[-1, 1:], h_all[:, seq_len]
    if projections:
        y = y @ w_hr[-1].t()
        finals = torch.stack([h @ w.t() for h, w in zip(finals, w_hr)])
    if lengths is not None:
        y = y.masked_fill(_padding_mask(lengths, seq_len), 0)
    return (y, finals, c_n) if cell == "lstm" else (y, finals)


def _scan_fwd(cell, gates, w_rec, b_rec, h_all, saved, lengths, training, wavefront):
    """The cell's wavefront forward launch (kernels/lstm.py, kernels/gru.py, kernels/rnn.py)."""
    from .kernels import gru_scan_fwd, lstm_scan_fwd, rnn_scan_fwd

    if cell == "lstm":
        lstm_scan_fwd(gates, w_rec, h_all, saved, lengths, training, wavefront)
    elif cell == "gru":
        gru_scan_fwd(gates, w_rec, b_rec, h_all, saved, lengths, training, wavefront)
    else:
        rnn_scan_fwd(gates, w_rec, h_all, lengths, cell == "rnn_relu", wavefront)


def _scan_bwd(cell, dgates_all, dgates_x, gates, w_rec, saved, h_all, dh, dc, dh_carry, lengths, wavefront=None):
    """The cell's backward launch, of every lane (a wavefront) or of the lanes given (one layer)."""
    from .kernels import gru_scan_bwd, lstm_scan_bwd, rnn_scan_bwd

    if cell == "lstm":
        lstm_scan_bwd(dgates_all, gates, w_rec, saved, dh, dc, dh_carry, lengths, wavefront)
    elif cell == "gru":
        gru_scan_bwd(dgates_all, dgates_x, gates, w_rec, h_all, saved, dh, dh_carry, lengths, wavefront)
    else:
        rnn_scan_bwd(dgates_all, w_rec, h_all, dh, dh_carry, lengths, cell == "rnn_relu", wavefront)


def _wavefront_buffers(cell, x, lengths, h_init, c0, w_ih0, w_rec, bias, first_gates, training):
    """The forward's buffers: gates [L, T, B, G*H] (layer 0: x W_ih^T + bias; upper layers: their bias,
    the kernel adds their input projection), h_all [L, T + 1, B, H] with the initial states in slot 0,
    and the cell's saved state fp32: the LSTM's c_all [L, T + 1 or 2, B, H] with c0 in slot 0, the GRU's
    hn_all [L, T or 0, B, H] (W_hn h_{t-1} + b_hn, when training), else empty."""
    seq_len, batch, _ = x.shape
    num_layers, gate_width, hidden = w_rec.shape
    gates = x.new_empty(num_layers, seq_len, batch, gate_width)
    x2d, first = x.reshape(seq_len * batch, -1), gates[0].view(seq_len * batch, gate_width)
    if bias is None:
        torch.mm(x2d, w_ih0.t(), out=first)
        gates[1:] = 0
    else:
        torch.addmm(bias[0], x2d, w_ih0.t(), out=first)  # as ops.scan's projection, one rounding
        gates[1:] = bias[1:, None, None, :]
    if first_gates is not None:
        gates[:, 0] += first_gates
    h_all = x.new_empty(num_layers, seq_len + 1, batch, hidden)
    h_all[:, 0] = h_init
    if cell == "gru":
        return gates, h_all, x.new_empty(num_layers, seq_len if training else 0, batch, hidden, dtype=torch.float32)
    if c0 is None:
        return gates, h_all, x.new_empty(0, dtype=torch.float32)
    c_all = x.new_empty(num_layers, seq_len + 1 if training else 2, batch, hidden, dtype=torch.float32)
    c_all[:, 0] = c0
    return gates, h_all, c_all


class _WavefrontScan(torch.autograd.Function):
    """(h_all [L, T + 1, B, H], c_n [L, B, H] or empty) of a stack: x [T, B, I], h_init [L, B, H], c0
    [L, B, H] (LSTM, else None), w_ih0 [G*H, I] (layer 0's), w_in [L, G*H, H] (each layer's input weight,
    layer 0's zeros), w_rec [L, G*H, H], bias [L, G*H] or None (the input bias), b_rec [L, G*H] or None
    (the GRU's recurrent bias b_hh), first_gates [L, B, G*H] or None (added to step 0's gates); lengths [B]
    or None, noise [L, T, B, H] or None (each layer's dropout scales, layer 0's unread; not
    differentiated)."""

    @staticmethod
    def forward(ctx, cell, lengths, noise, x, h_init, c0, w_ih0, w_in, w_rec, bias, b_rec, first_gates):
        from .kernels import Wavefront

        seq_len, batch, _ = x.shape
        training = any(ctx.needs_input_grad)
        kernel_lengths = lengths if lengths is not None else torch.full((batch,), seq_len, device=x.device)
        with _autocast_off(x.device):  # the module chose the dtype
            gates, h_all, saved = _wavefront_buffers(
                cell, x, lengths, h_init, c0, w_ih0, w_rec, bias, first_gates, training
            )
            if batch > 0:
                with _error_flags("triton"):
                    wavefront = Wavefront(w_in, noise)
                    kernel_b_rec = b_rec if b_rec is not None or cell != "gru" else w_rec.new_zeros(w_rec.shape[:2])
                    _scan_fwd(cell, gates, w_rec, kernel_b_rec, h_all, saved, kernel_lengths, training, wavefront)
        c_n = saved[:, seq_len % saved.shape[1]].to(x.dtype) if c0 is not None else x.new_empty(0)
        ctx.cell, ctx.has_bias, ctx.has_first_gates = cell, bias is not None, first_gates is not None
        ctx.save_for_backward(x, kernel_lengths, noise, h_init, c0, w_ih0, w_in, w_rec, bias, b_rec, first_gates,
                              h_all, saved, gates)  # fmt: skip
        ctx.lengths_given = lengths is not None
        num_layers, _, hidden = w_rec.shape
        ctx.backward_wavefront = backward_wavefront(cell, num_layers, hidden, batch, x.dtype, x.device)
        return h_all, c_n

    @staticmethod
    def backward(ctx, d_h_all, d_c_n):
        x, lengths, noise, h_init, c0, w_ih0, w_in, w_rec, bias, b_rec, first_gates, h_all, saved, gates = (
            ctx.saved_tensors
        )
        if d_h_all is None:
            d_h_all = torch.zeros_like(h_all)
        if d_c_n is None:
            d_c_n = torch.zeros_like(c0) if c0 is not None else x.new_empty(0)
        if torch.is_grad_enabled():  # create_graph=True: a backward autograd can differentiate again
            inputs = (x, h_init, c0, w_ih0, w_in, w_rec, bias, b_rec, first_gates)
            return None, None, None, *_differentiable_grads(ctx, lengths if ctx.lengths_given else None, noise,
                                                             inputs, d_h_all, d_c_n)  # fmt: skip
        with _autocast_off(x.device):
            grads = _wavefront_backward(
                ctx.cell, x, lengths, noise, w_ih0, w_in, w_rec, h_all, saved, gates, d_h_all, d_c_n,
                ctx.backward_wavefront,
            )  # fmt: skip
        needs = ctx.needs_input_grad[3:]
        picked = [g if need else None for g, need in zip(grads, needs)]
        if not ctx.has_bias:
            picked[6] = picked[7] = None
        if b_rec is None:
            picked[7] = None
        if not ctx.has_first_gates:
            picked[8] = None
        return None, None, None, *picked


def _layer_inputs(x, noise, h_all):
    """Each layer's input sequence [T, B, *]: x, then the layer below's outputs scaled by the noise."""
    inputs = [x]
    for layer in range(1, h_all.shape[0]):
        below = h_all[layer - 1, 1:]
        inputs.append(below if noise is None else below * noise[layer])
    return inputs


def _wavefront_backward(
    cell, x, lengths, noise, w_ih0, w_in, w_rec, h_all, saved, gates, d_h_all, d_c_n, as_wavefront
):  # fmt: skip
    """The gradients of _WavefrontScan's inputs: the backward recurrence of every layer as one wavefront
    launch (`as_wavefront`), or layer by layer from the top, each layer's launch reading the gradient of its
    output from the layer above (the gradient of its input projection @ W_in, times the noise: a GEMM),
    then the weight GEMMs. The input projection's gate gradients are the recurrent ones (dgates_h) but for
    the GRU's (dgates_x)."""
    from .kernels import Wavefront

    num_layers, seq_len, batch, hidden = h_all.shape
    seq_len -= 1
    dh = d_h_all[:, 1:].to(torch.float32, copy=True)
    dgates_all = gates.new_empty(num_layers, seq_len + 1, batch, gates.shape[3])
    dgates_all[:, seq_len].zero_()
    dgates_x = torch.empty_like(gates) if cell == "gru" else None
    dc = d_c_n.to(torch.float32, copy=True) if cell == "lstm" else None
    dh_carry = dh.new_zeros(num_layers, batch, hidden)
    if batch > 0:
        with _error_flags("triton", backward=True):
            buffers = (dgates_all, dgates_x, gates, w_rec, saved, h_all, dh, dc, dh_carry)
            if as_wavefront:
                _scan_bwd(cell, *buffers, lengths, Wavefront(w_in, noise))
            for layer in () if as_wavefront else reversed(range(num_layers)):
                if layer < num_layers - 1:
                    above_gates = dgates_all[layer + 1, :seq_len] if dgates_x is None else dgates_x[layer + 1]
                    above = above_gates @ w_in[layer + 1]
                    dh[layer] += above if noise is None else above * noise[layer + 1]
                lanes = slice(layer, layer + 1)
                _scan_bwd(cell, *(None if b is None else b[lanes] for b in buffers), lengths)
        dgates = dgates_all[:, :seq_len]
    else:
        dgates = dgates_all[:, :seq_len].zero_()
        if dgates_x is not None:
            dgates_x.zero_()
    dgates_in = dgates if dgates_x is None else dgates_x
    inputs = _layer_inputs(x, noise, h_all)
    d_h_init, d_w_rec, d_w_in = [], [], []
    for layer in range(num_layers):
        dgates2d, dgates_in2d = dgates[layer].flatten(0, 1), dgates_in[layer].flatten(0, 1)
        d_h_init.append(dgates[layer, 0].float() @ w_rec[layer].float() + dh_carry[layer] + d_h_all[layer, 0])
        d_w_rec.append(dgates2d.t() @ h_all[layer, :seq_len].flatten(0, 1))
        d_w_in.append(dgates_in2d.t() @ inputs[layer].flatten(0, 1) if layer else torch.zeros_like(w_in[0]))
    dgates0 = dgates_in[0].flatten(0, 1)
    dx = (dgates0 @ w_ih0).view(x.shape)
    d_w_ih0 = dgates0.t() @ x.flatten(0, 1)
    d_bias = dgates_in.sum((1, 2))
    d_b_rec = dgates.sum((1, 2)) if dgates_x is not None else None
    d_first = dgates_in[:, 0]
    d_c0 = dc.to(x.dtype) if dc is not None else None
    return (dx, torch.stack(d_h_init).to(x.dtype), d_c0, d_w_ih0, torch.stack(d_w_in),
            torch.stack(d_w_rec), d_bias, d_b_rec, d_first)  # fmt: skip


def _differentiable_grads(ctx, lengths, noise, inputs, d_h_all, d_c_n) -> list:
    """The gradients of the stack's inputs as a graph autograd can differentiate again: every layer
    recomputed with plain torch ops (rnnfast.differentiable) and differentiated with create_graph."""
    x, h_init, c0, w_ih0, w_in, w_rec, bias, b_rec, first_gates = inputs
    wanted = [i for i, t in enumerate(inputs) if t is not None and ctx.needs_input_grad[3 + i]]
    seq_len, batch = x.shape[:2]
    rows = torch.arange(batch, device=x.device)
    first_steps = (torch.zeros_like(rows), rows)
    with _autocast_off(x.device):
        layer_input, slots, finals = x, [], []
        for layer in range(w_rec.shape[0]):
            w_ih = w_ih0 if layer == 0 else w_in[layer]
            b_ih = None if bias is None else bias[layer]
            # (the other cells' b_hh is folded into bias: its place is zeros)
            b_hh = None if b_ih is None else b_rec[layer] if b_rec is not None else torch.zeros_like(b_ih)
            first = None if first_gates is None else first_gates[layer]
            h_all, c_n = differentiable.scan_slots(
                ctx.cell, False, layer_input, lengths, h_init[layer], None if c0 is None else c0[layer], w_ih,
                w_rec[layer], b_ih, b_hh, first,
                first_steps,
            )  # fmt: skip
            slots.append(h_all)
            finals.append(c_n)
            layer_input = h_all[1:] if noise is None or layer == w_rec.shape[0] - 1 else h_all[1:] * noise[layer + 1]
        found = torch.autograd.grad(
            [torch.stack(slots), *([torch.stack(finals)] if c0 is not None else [])],
            [inputs[i] for i in wanted],
            [d_h_all, *([d_c_n] if c0 is not None else [])],
            create_graph=True, allow_unused=True,
        )  # fmt: skip
    grads = [None] * len(inputs)
    for i, grad in zip(wanted, found):
        grads[i] = torch.zeros_like(inputs[i]) if grad is None else grad
    return grads
