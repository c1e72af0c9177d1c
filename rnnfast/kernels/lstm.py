"""LSTM recurrence kernels (gate order i f g o, as torch.nn) and their launchers.

The input projection x @ W_ih^T + b_ih + b_hh is a GEMM done by the caller; these kernels run the part
that must go step by step. Every buffer but lengths has a leading direction axis D (1, or 2 for both
directions of a bidirectional layer, run by one launch: kernels/recurrence.py, program_direction); per
direction, buffers use "slots" so that no step needs a special case:

- h_all [T + 1, B, H]: the forward direction reads h_{t-1} from slot t and writes h_t to slot t + 1
  (h0 in slot 0); the reverse direction reads slot t + 1 and writes slot t (h0 in slot T). The output
  sequence and the h_{t-1} operand of the weight gradient are both plain slices of it.
- c_all [T + 1, B, H] fp32 when training, the same slots as h_all, so the backward finds every c_t; in
  inference [2, B, H], a ring of h_all's slots modulo 2 (kernels/lstm.py, _c_slot).
- dgates_all [T + 1, B, 4H] (the layer's dtype): the gradient of step t's gate pre-activations sits in slot t + reverse;
  the slot "after" the last step processed by the forward is zero, so the recurrent gradient of the first
  backward step is a product with zeros.

Rows past their length (lengths [B]) carry h and c through unchanged, so h_all's last slot holds each
row's final state; in the backward their gate gradients are zero and the gradient reaching their state
travels in dh_carry (and dc).

Weight-stationary (kernels/configs.py): program (n, b) owns hidden units n * BLOCK_N ... of all four
gates and batch rows b * BLOCK_B ...; it loads its slice of W_hh once and keeps c (forward) or dc and
dh_carry (backward) in registers across the steps of a launch. Forward: the slice is W_hh^T[:, columns]
with column j = 4 * unit + gate, so one dot gives every gate of the program's units. Backward: the slice
is W_hh[:, units] ([4H, BLOCK_N]), and the dot reads every gate gradient of the step after.
"""

import torch
import triton
import triton.language as tl

from .activations import sigmoid, tanh, to_storage
from .launch import Wavefront, run_scan, scan_constexprs, wavefront_arguments
from .recurrence import (
    above_weight_slice,
    active_rows,
    ahead_mask,
    backward_step_slots,
    barrier_arrive,
    barrier_wait,
    first_step_mask,
    forward_step_slots,
    gate_tiles,
    gradient_from_above,
    hidden_tile,
    input_from_below,
    lane_schedule,
    load_state_tile,
    program_direction,
    program_tile,
    recurrent_dot,
    row_offsets,
    running_masks,
    weight_slice,
)


@triton.jit
def _saved_step(dh_ptr, gates_ptr, c_all_ptr, t, reverse, B, H, offs_b, offs_n, mask):
    """What the backward of step t reads besides the recurrence, in fp32 [BLOCK_B, BLOCK_N] tiles: the
    gradient reaching h_t from above, the activated gates i f g o, c_t and c_{t-1}."""
    dh_out = tl.load(dh_ptr + row_offsets(t, B, offs_b, offs_n, H), mask=mask, other=0.0)
    gate_i, gate_f, gate_g, gate_o = gate_tiles(gates_ptr, t, B, H, offs_b, offs_n, mask, 4)
    c = tl.load(c_all_ptr + row_offsets(t + 1 - reverse, B, offs_b, offs_n, H), mask=mask, other=0.0)
    c_prev = tl.load(c_all_ptr + row_offsets(t + reverse, B, offs_b, offs_n, H), mask=mask, other=0.0)
    return dh_out, gate_i, gate_f, gate_g, gate_o, c, c_prev


@triton.jit
def _c_slots(T, TRAINING: tl.constexpr):
    """The slots of c_all per direction: T + 1 when training (h_all's), else a ring of 2."""
    if TRAINING:
        return T + 1
    else:
        return 2


@triton.jit
def _c_slot(slot, TRAINING: tl.constexpr):
    """The slot of c_all that holds c of h_all's slot `slot` (_c_slots)."""
    if TRAINING:
        return slot
    else:
        return slot % 2


@triton.jit(do_not_specialize=["t_start", "n_steps", "direction_start", "num_layers", "T", "timeout_ns"])
def _lstm_fwd_kernel(
    gates_ptr,  # [D, T, B, 4H] in: x W_ih^T + b_ih + b_hh; out (TRAINING): activated gates i f g o
    w_hh_ptr,  # [D, 4H, H] recurrent weight, torch.nn layout
    h_all_ptr,  # [D, T + 1, B, H] hidden-state slots, h0 already in the first read slot
    c_all_ptr,  # [D, T + 1 (TRAINING) or 2, B, H] fp32 cell-state slots (_c_slot), c0 in the first read slot
    lengths_ptr,  # [B] int64 sequence lengths (T for every row of an unpadded batch)
    w_in_ptr,  # WAVEFRONT: [D, 4H, H] each layer's input weight (layer 0's zero); else unused
    noise_ptr,  # WAVEFRONT and HAS_NOISE: [D, T, B, H] each layer's dropout scales (layer 0's unused)
    exchange_ptr,  # [programs, BLOCK_B, dot columns] fp32 partial products of K groups (K_GROUPS > 1)
    barrier_ptr,  # [2 (+ programs if K_GROUPS > 1)] int32, zero at launch: grid-barrier counters, K-group counts
    error_ptr,  # [1] int32 set to 1 when a barrier timed out
    t_start,  # first step of this launch
    n_steps,  # steps in this launch (1 without the barrier)
    direction_start,  # lane of grid axis 2's first program (recurrence.program_direction)
    num_layers,  # WAVEFRONT: layers of the stack (D)
    T,
    B,
    H,
    timeout_ns,
    TRAINING: tl.constexpr,
    WAVEFRONT: tl.constexpr,  # D is the layers of a unidirectional stack (recurrence.lane_schedule), else directions
    HAS_NOISE: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_N: tl.constexpr,
    K_PIECES: tl.constexpr,  # the recurrent dot's K (H) as pieces: the stationary weight slice's tensors
    K_SPLIT: tl.constexpr,  # warps sharing the stationary dot's K (recurrence.recurrent_dot); 1 streamed
    K_GROUPS: tl.constexpr,  # programs sharing the stationary dot's K (recurrence.k_group_sum); 1 streamed
    BLOCK_K: tl.constexpr,  # 0: the weight slice is stationary; else streamed in chunks of BLOCK_K
    IN_PIECES: tl.constexpr,  # WAVEFRONT: the input weight's K (H) as pieces, held on chip; () streamed
    BLOCK_K_IN: tl.constexpr,  # WAVEFRONT: chunks of the streamed input dot's K (recurrence.input_from_below)
    USE_BARRIER: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BF16_INTERPRETER: tl.constexpr,
):
    lane = program_direction(direction_start)
    reverse, lag = lane_schedule(lane, num_layers, WAVEFRONT, False)
    gates_ptr += lane * T * B * 4 * H
    w_hh_ptr += lane * 4 * H * H
    h_all_ptr += lane * (T + 1) * B * H
    c_all_ptr += lane * _c_slots(T, TRAINING) * B * H
    w_in_ptr += lane * 4 * H * H
    noise_ptr += lane * T * B * H
    offs_b, offs_n, mask_b, _, mask, store_mask = program_tile(B, H, BLOCK_B, BLOCK_N, K_GROUPS)
    offs_j = tl.arange(0, 4 * BLOCK_N)
    unit_j = hidden_tile(K_GROUPS) * BLOCK_N + offs_j // 4
    w_cols = ((offs_j % 4) * H + unit_j) * H  # W_hh^T column j is row (gate, unit) of W_hh
    mask_j = unit_j < H
    w = weight_slice(w_hh_ptr, w_cols, mask_j, H, 1, K_PIECES, K_SPLIT, K_GROUPS, BLOCK_K, BF16_INTERPRETER)
    w_in = ()
    if WAVEFRONT:
        if len(IN_PIECES) > 0:  # (layer 0's lane loads a slice it never reads: every lane runs one kernel)
            w_in = weight_slice(w_in_ptr, w_cols, mask_j, H, 1, IN_PIECES, K_SPLIT, 1, 0, BF16_INTERPRETER)

    # A wavefront's lane that starts later (t < 0 at t_start) starts from the state of its first step.
    first_t = t_start - lag
    if WAVEFRONT:
        first_t = tl.minimum(tl.maximum(first_t, 0), T - 1)
    _, first_read, _ = forward_step_slots(first_t, T, reverse)
    h_own = load_state_tile(h_all_ptr, first_read, B, offs_b, offs_n, H, mask)
    c = load_state_tile(c_all_ptr, _c_slot(first_read, TRAINING), B, offs_b, offs_n, H, mask)
    lengths = tl.load(lengths_ptr + offs_b, mask=mask_b, other=0)
    timeout = timeout_ns
    failed = 0
    t_first = forward_step_slots(t_start - lag, T, reverse)[0]
    first_mask = first_step_mask(mask, t_first, T, WAVEFRONT)
    x_i, x_f, x_g, x_o = gate_tiles(gates_ptr, t_first, B, H, offs_b, offs_n, first_mask, 4)
    below = tl.zeros((BLOCK_B, 4 * BLOCK_N), tl.float32)
    if WAVEFRONT:
        below = input_from_below(
            h_all_ptr, noise_ptr, w_in_ptr, w_in, t_first, lane, T, B, H, offs_b, mask_b, w_cols, mask_j,
            4 * BLOCK_N, IN_PIECES, K_SPLIT, HAS_NOISE, BLOCK_K_IN, DOT_PRECISION, BF16_INTERPRETER,
        )  # fmt: skip
    for s in range(n_steps):
        t, read_slot, write_slot = forward_step_slots(t_start + s - lag, T, reverse)
        rows_mask, step_store_mask = running_masks(t, T, mask_b, store_mask, WAVEFRONT)
        gate_offs = row_offsets(t, B, offs_b, offs_n, 4 * H)
        h_rows = (read_slot.to(tl.int64) * B + offs_b) * H
        acc, failed, timeout = recurrent_dot(
            below, h_all_ptr, h_rows, rows_mask, H, w, w_hh_ptr, w_cols, mask_j, 1,
            exchange_ptr, barrier_ptr, s, failed, timeout,
            K_PIECES, K_SPLIT, K_GROUPS, BLOCK_K, DOT_PRECISION, BF16_INTERPRETER,
        )  # fmt: skip
        # Column j = 4 * unit + 2 * a + b (gate 2a + b): split b, then a.
        even, odd = tl.split(tl.reshape(acc, (BLOCK_B, BLOCK_N, 2, 2)))
        pre_i, pre_g = tl.split(even)
        pre_f, pre_o = tl.split(odd)
        gate_i = sigmoid(pre_i + x_i)
        gate_f = sigmoid(pre_f + x_f)
        gate_g = tanh(pre_g + x_g)
        gate_o = sigmoid(pre_o + x_o)

        active = active_rows(t, lengths, rows_mask, WAVEFRONT)
        c = tl.where(active, gate_f * c + gate_i * gate_g, c)
        h = to_storage(tl.where(active, gate_o * tanh(c), h_own), h_all_ptr, BF16_INTERPRETER)
        h_own = h.to(tl.float32)
        tl.store(c_all_ptr + row_offsets(_c_slot(write_slot, TRAINING), B, offs_b, offs_n, H), c, mask=step_store_mask)
        tl.store(h_all_ptr + row_offsets(write_slot, B, offs_b, offs_n, H), h, mask=step_store_mask)
        if TRAINING:
            stored = step_store_mask
            tl.store(gates_ptr + gate_offs, to_storage(gate_i, gates_ptr, BF16_INTERPRETER), mask=stored)
            tl.store(gates_ptr + gate_offs + H, to_storage(gate_f, gates_ptr, BF16_INTERPRETER), mask=stored)
            tl.store(gates_ptr + gate_offs + 2 * H, to_storage(gate_g, gates_ptr, BF16_INTERPRETER), mask=stored)
            tl.store(gates_ptr + gate_offs + 3 * H, to_storage(gate_o, gates_ptr, BF16_INTERPRETER), mask=stored)
        barrier_arrive(barrier_ptr, s, n_steps, USE_BARRIER)
        # The next step's input gates do not depend on this one: they load during the barrier (in a
        # wavefront with the input dot from the layer below, published a barrier earlier).
        t_next = forward_step_slots(t_start + s + 1 - lag, T, reverse)[0]
        x_i, x_f, x_g, x_o = gate_tiles(gates_ptr, t_next, B, H, offs_b, offs_n, ahead_mask(mask, t_next, T), 4)
        if WAVEFRONT:
            below = input_from_below(
                h_all_ptr, noise_ptr, w_in_ptr, w_in, t_next, lane, T, B, H, offs_b, mask_b, w_cols, mask_j,
                4 * BLOCK_N, IN_PIECES, K_SPLIT, HAS_NOISE, BLOCK_K_IN, DOT_PRECISION, BF16_INTERPRETER,
            )  # fmt: skip
        failed, timeout = barrier_wait(barrier_ptr, s, n_steps, failed, timeout, USE_BARRIER)
    if USE_BARRIER:
        tl.atomic_max(error_ptr, failed)


@triton.jit(do_not_specialize=["t_start", "n_steps", "direction_start", "num_layers", "T", "timeout_ns"])
def _lstm_bwd_kernel(
    dgates_all_ptr,  # [D, T + 1, B, 4H] out: gradient of the gate pre-activations, zero "after" slot
    gates_ptr,  # [D, T, B, 4H] activated gates i f g o saved by the forward
    w_hh_ptr,  # [D, 4H, H]
    c_all_ptr,  # [D, T + 1, B, H] fp32 cell-state slots saved by the forward
    dh_ptr,  # [D, T, B, H] fp32 gradient reaching h_t from the output (dh_n already added at the last step)
    dc_ptr,  # [D, B, H] fp32 gradient of the cell state: dc_n in, dc_0 out, updated in place
    dh_carry_ptr,  # [D, B, H] fp32 gradient carried past the steps beyond a row's length; zero in
    lengths_ptr,  # [B] int64 sequence lengths
    w_in_ptr,  # WAVEFRONT: [D, 4H, H] each layer's input weight (layer 0's zero); else unused
    noise_ptr,  # WAVEFRONT and HAS_NOISE: [D, T, B, H] each layer's dropout scales (layer 0's unused)
    exchange_ptr,  # [programs, BLOCK_B, dot columns] fp32 partial products of K groups (K_GROUPS > 1)
    barrier_ptr,  # [2 (+ programs if K_GROUPS > 1)] int32, zero at launch: grid-barrier counters, K-group counts
    error_ptr,  # [1] int32 set to 1 when a barrier timed out
    t_start,
    n_steps,
    direction_start,
    num_layers,  # WAVEFRONT: layers of the stack (D)
    T,
    B,
    H,
    timeout_ns,
    WAVEFRONT: tl.constexpr,  # D is the layers of a unidirectional stack (recurrence.lane_schedule), else directions
    HAS_NOISE: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_N: tl.constexpr,
    K_PIECES: tl.constexpr,  # the recurrent dot's K (4H) as pieces
    K_SPLIT: tl.constexpr,  # warps sharing the stationary dot's K (recurrence.recurrent_dot); 1 streamed
    K_GROUPS: tl.constexpr,  # programs sharing the stationary dot's K (recurrence.k_group_sum); 1 streamed
    BLOCK_K: tl.constexpr,
    IN_PIECES: tl.constexpr,  # WAVEFRONT: the layer above's W_in's K (G*H) as pieces, held on chip; () streamed
    BLOCK_K_IN: tl.constexpr,  # WAVEFRONT: chunks of the streamed dot with the layer above (gradient_from_above)
    USE_BARRIER: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BF16_INTERPRETER: tl.constexpr,
):
    lane = program_direction(direction_start)
    reverse, lag = lane_schedule(lane, num_layers, WAVEFRONT, True)
    dgates_all_ptr += lane * (T + 1) * B * 4 * H
    gates_ptr += lane * T * B * 4 * H
    w_hh_ptr += lane * 4 * H * H
    c_all_ptr += lane * (T + 1) * B * H
    dh_ptr += lane * T * B * H
    dc_ptr += lane * B * H
    dh_carry_ptr += lane * B * H
    # The layer above's: its gate gradients are its input gates' (LSTM), its input weight, its noise.
    dgates_above_ptr = dgates_all_ptr + (T + 1) * B * 4 * H
    w_in_ptr += (lane + 1) * 4 * H * H
    noise_ptr += (lane + 1) * T * B * H
    offs_b, offs_n, mask_b, mask_n, mask, store_mask = program_tile(B, H, BLOCK_B, BLOCK_N, K_GROUPS)
    w = weight_slice(w_hh_ptr, offs_n, mask_n, 4 * H, H, K_PIECES, K_SPLIT, K_GROUPS, BLOCK_K, BF16_INTERPRETER)
    w_in = ()
    if WAVEFRONT:
        w_in = above_weight_slice(
            w_in_ptr, offs_n, mask_n, lane, num_layers, H, 4, IN_PIECES, K_SPLIT, BF16_INTERPRETER
        )

    carry_offs = (offs_b.to(tl.int64) * H)[:, None] + offs_n[None, :]
    dc = tl.load(dc_ptr + carry_offs, mask=mask, other=0.0)
    dh_carry = tl.load(dh_carry_ptr + carry_offs, mask=mask, other=0.0)
    lengths = tl.load(lengths_ptr + offs_b, mask=mask_b, other=0)
    timeout = timeout_ns
    failed = 0
    t = backward_step_slots(t_start - lag, T, reverse)[0]
    dh_out, gate_i, gate_f, gate_g, gate_o, c, c_prev = _saved_step(
        dh_ptr, gates_ptr, c_all_ptr, t, reverse, B, H, offs_b, offs_n, first_step_mask(mask, t, T, WAVEFRONT)
    )
    if WAVEFRONT:
        dh_out += gradient_from_above(
            dgates_above_ptr, t, noise_ptr, w_in_ptr, w_in, t, lane, num_layers, T, B, H, offs_b, mask_b, offs_n,
            mask_n, 4, IN_PIECES, K_SPLIT, HAS_NOISE, BLOCK_K_IN, DOT_PRECISION, BF16_INTERPRETER,
        )  # fmt: skip
    for s in range(n_steps):
        t, dgates_slot, next_slot = backward_step_slots(t_start + s - lag, T, reverse)
        rows_mask, step_store_mask = running_masks(t, T, mask_b, store_mask, WAVEFRONT)
        next_rows = (next_slot.to(tl.int64) * B + offs_b) * 4 * H
        dh, failed, timeout = recurrent_dot(
            dh_out + dh_carry, dgates_all_ptr, next_rows, rows_mask, 4 * H, w, w_hh_ptr, offs_n, mask_n, H,
            exchange_ptr, barrier_ptr, s, failed, timeout,
            K_PIECES, K_SPLIT, K_GROUPS, BLOCK_K, DOT_PRECISION, BF16_INTERPRETER,
        )  # fmt: skip

        active = active_rows(t, lengths, rows_mask, WAVEFRONT)
        tanh_c = tanh(c)
        dc_total = dc + dh * gate_o * (1.0 - tanh_c * tanh_c)
        d_i = tl.where(active, dc_total * gate_g * gate_i * (1.0 - gate_i), 0.0)
        d_f = tl.where(active, dc_total * c_prev * gate_f * (1.0 - gate_f), 0.0)
        d_g = tl.where(active, dc_total * gate_i * (1.0 - gate_g * gate_g), 0.0)
        d_o = tl.where(active, dh * tanh_c * gate_o * (1.0 - gate_o), 0.0)
        dc = tl.where(active, dc_total * gate_f, dc)
        # (Where the lane is not running, dh is dh_carry itself: every load of the step is masked off.)
        dh_carry = tl.where(active, 0.0, dh)

        dgates_at = dgates_all_ptr + row_offsets(dgates_slot, B, offs_b, offs_n, 4 * H)
        tl.store(dgates_at, to_storage(d_i, dgates_all_ptr, BF16_INTERPRETER), mask=step_store_mask)
        tl.store(dgates_at + H, to_storage(d_f, dgates_all_ptr, BF16_INTERPRETER), mask=step_store_mask)
        tl.store(dgates_at + 2 * H, to_storage(d_g, dgates_all_ptr, BF16_INTERPRETER), mask=step_store_mask)
        tl.store(dgates_at + 3 * H, to_storage(d_o, dgates_all_ptr, BF16_INTERPRETER), mask=step_store_mask)
        barrier_arrive(barrier_ptr, s, n_steps, USE_BARRIER)
        # What the next step reads from the forward and from above does not depend on this step: it
        # loads during the barrier (in a wavefront with the dot of the layer above's gate gradients,
        # published a barrier earlier).
        t_next = backward_step_slots(t_start + s + 1 - lag, T, reverse)[0]
        dh_out, gate_i, gate_f, gate_g, gate_o, c, c_prev = _saved_step(
            dh_ptr, gates_ptr, c_all_ptr, t_next, reverse, B, H, offs_b, offs_n, ahead_mask(mask, t_next, T)
        )
        if WAVEFRONT:
            dh_out += gradient_from_above(
                dgates_above_ptr, t_next, noise_ptr, w_in_ptr, w_in, t_next, lane, num_layers, T, B, H, offs_b, mask_b,
                offs_n, mask_n, 4, IN_PIECES, K_SPLIT, HAS_NOISE, BLOCK_K_IN, DOT_PRECISION, BF16_INTERPRETER,
            )  # fmt: skip
        failed, timeout = barrier_wait(barrier_ptr, s, n_steps, failed, timeout, USE_BARRIER)
    tl.store(dc_ptr + carry_offs, dc, mask=store_mask)
    tl.store(dh_carry_ptr + carry_offs, dh_carry, mask=store_mask)
    if USE_BARRIER:
        tl.atomic_max(error_ptr, failed)


def lstm_scan_fwd(
    gates: torch.Tensor,
    w_hh: torch.Tensor,
    h_all: torch.Tensor,
    c_all: torch.Tensor,
    lengths: torch.Tensor,
    training: bool,
    wavefront: Wavefront | None = None,
) -> None:
    """Runs the recurrence of D directions (1, or 2: forward and reverse) over gates [D, T, B, 4H]
    (overwritten with activated gates when training), filling the slots of h_all [D, T + 1, B, H] and
    c_all [D, T + 1 if training else 2, B, H] (fp32); w_hh [D, 4H, H]; rows stop updating at their length
    (lengths [B] int64). With `wavefront` the D lanes are the layers of a unidirectional stack, gates
    holding layer 0's input projection and the upper layers' biases."""
    seq_len, batch, hidden = h_all.shape[1] - 1, h_all.shape[2], h_all.shape[3]
    assert c_all.shape[1] == (seq_len + 1 if training else 2), "c_all has T + 1 slots when training, else 2"
    inputs, scalars, constexprs, steps = wavefront_arguments(wavefront, w_hh, seq_len)
    run_scan(
        "lstm",
        "forward",
        _lstm_fwd_kernel,
        w_hh,
        (gates, w_hh, h_all, c_all, lengths, *inputs),
        dict(T=seq_len, B=batch, H=hidden, **scalars),
        dict(TRAINING=training, IN_PIECES=(), **constexprs, **scan_constexprs(gates.dtype)),
        steps,
    )


def lstm_scan_bwd(
    dgates_all: torch.Tensor,
    gates: torch.Tensor,
    w_hh: torch.Tensor,
    c_all: torch.Tensor,
    dh: torch.Tensor,
    dc: torch.Tensor,
    dh_carry: torch.Tensor,
    lengths: torch.Tensor,
    wavefront: Wavefront | None = None,
) -> None:
    """Backward through time of D directions: fills dgates_all [D, T + 1, B, 4H] (gates' dtype, its zero
    slots already cleared), turns dc [D, B, H] (fp32) from dc_n into dc_0 and leaves in dh_carry [D, B, H]
    (fp32, zero in) the gradient carried past rows' lengths, the part of dh_0 that does not go through
    W_hh. gates [D, T, B, 4H], w_hh [D, 4H, H], c_all [D, T + 1, B, H], dh [D, T, B, H]. With `wavefront`
    the lanes are layers and a layer's dh gets the gradient of the layer above's input in the kernel."""
    seq_len, batch, hidden = dh.shape[1:]
    inputs, scalars, constexprs, steps = wavefront_arguments(wavefront, w_hh, seq_len)
    run_scan(
        "lstm",
        "backward",
        _lstm_bwd_kernel,
        w_hh,
        (dgates_all, gates, w_hh, c_all, dh, dc, dh_carry, lengths, *inputs),
        dict(T=seq_len, B=batch, H=hidden, **scalars),
        dict(IN_PIECES=(), **constexprs, **scan_constexprs(gates.dtype)),
        steps,
    )
