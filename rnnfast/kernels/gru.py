"""GRU recurrence kernels (gate order r z n, as torch.nn) and their launchers.

n = tanh(W_in x + b_in + r * (W_hn h + b_hn)) keeps the recurrent part of n, with its own bias, inside
the reset product, so the recurrent pre-activations (h W_hh^T + b_hh) are accumulated apart from the
input projection x W_ih^T + b_ih (done by the caller). Slots as in kernels/lstm.py: h_all [T + 1, B, H]
(forward reads slot t, writes t + 1; reverse reads t + 1, writes t) and dgates_h_all [T + 1, B, 3H]
(step t in slot t + reverse, the slot after the last processed step zero).

Weight-stationary as the LSTM's kernels: program (n, b) owns units n * BLOCK_N ... of the three gates
and a batch tile. Forward slice W_hh^T[:, columns], column j = 4 * unit + gate (a fourth, empty gate pads
the columns to a power of two); backward slice W_hh[:, units] ([3H, BLOCK_N]).
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
def _saved_step(dh_ptr, gates_ptr, hn_all_ptr, h_all_ptr, t, reverse, B, H, offs_b, offs_n, mask):
    """What the backward of step t reads besides the recurrence, in fp32 [BLOCK_B, BLOCK_N] tiles: the
    gradient reaching h_t from above, the activated gates r z n, W_hn h_{t-1} + b_hn and h_{t-1}."""
    state_offs = row_offsets(t, B, offs_b, offs_n, H)
    dh_out = tl.load(dh_ptr + state_offs, mask=mask, other=0.0)
    gate_r, gate_z, gate_n = gate_tiles(gates_ptr, t, B, H, offs_b, offs_n, mask, 3)
    hn = tl.load(hn_all_ptr + state_offs, mask=mask, other=0.0)
    h_prev = load_state_tile(h_all_ptr, t + reverse, B, offs_b, offs_n, H, mask)
    return dh_out, gate_r, gate_z, gate_n, hn, h_prev


@triton.jit
def _split_gates(columns, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr):
    """The r, z and n tiles [BLOCK_B, BLOCK_N] of a forward dot's columns [BLOCK_B, 4 * BLOCK_N]: column
    j = 4 * unit + 2 * a + b (gate 2a + b), split b, then a; gate 3 is the empty pad."""
    even, odd = tl.split(tl.reshape(columns, (BLOCK_B, BLOCK_N, 2, 2)))
    gate_r, gate_n = tl.split(even)
    gate_z, _pad = tl.split(odd)
    return gate_r, gate_z, gate_n


@triton.jit
def _input_gates(
    gates_ptr, h_all_ptr, noise_ptr, w_in_ptr, w_in, t, lane, T, B, H, offs_b, offs_n, mask_b, mask, w_cols, mask_j,
    WAVEFRONT: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, IN_PIECES: tl.constexpr,
    K_SPLIT: tl.constexpr, HAS_NOISE: tl.constexpr, BLOCK_K_IN: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BF16_INTERPRETER: tl.constexpr,
):  # fmt: skip
    """The input parts of step t's r z n pre-activations, fp32 [BLOCK_B, BLOCK_N] tiles: the gates
    buffer's (x W_ih^T + b_ih; in a wavefront's upper layers b_ih alone), plus in a wavefront the
    projection of the layer below's y_t (recurrence.input_from_below, zero for layer 0)."""
    x_r, x_z, x_n = gate_tiles(gates_ptr, t, B, H, offs_b, offs_n, mask, 3)
    if WAVEFRONT:
        below = input_from_below(
            h_all_ptr, noise_ptr, w_in_ptr, w_in, t, lane, T, B, H, offs_b, mask_b, w_cols, mask_j,
            4 * BLOCK_N, IN_PIECES, K_SPLIT, HAS_NOISE, BLOCK_K_IN, DOT_PRECISION, BF16_INTERPRETER,
        )  # fmt: skip
        below_r, below_z, below_n = _split_gates(below, BLOCK_B, BLOCK_N)
        x_r += below_r
        x_z += below_z
        x_n += below_n
    return x_r, x_z, x_n


@triton.jit(do_not_specialize=["t_start", "n_steps", "direction_start", "num_layers", "T", "timeout_ns"])
def _gru_fwd_kernel(
    gates_ptr,  # [D, T, B, 3H] in: x W_ih^T + b_ih; out (TRAINING): activated gates r z n
    w_hh_ptr,  # [D, 3H, H] recurrent weight, torch.nn layout
    b_hh_ptr,  # [D, 3H] recurrent bias
    h_all_ptr,  # [D, T + 1, B, H] hidden-state slots, h0 already in the first read slot
    hn_all_ptr,  # [D, T, B, H] fp32 out (TRAINING): W_hn h_{t-1} + b_hn, the reset-gated term
    lengths_ptr,  # [B] int64 sequence lengths (T for every row of an unpadded batch)
    w_in_ptr,  # WAVEFRONT: [D, 3H, H] each layer's input weight (layer 0's zero); else unused
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
    gates_ptr += lane * T * B * 3 * H
    w_hh_ptr += lane * 3 * H * H
    b_hh_ptr += lane * 3 * H
    h_all_ptr += lane * (T + 1) * B * H
    hn_all_ptr += lane * T * B * H
    w_in_ptr += lane * 3 * H * H
    noise_ptr += lane * T * B * H
    offs_b, offs_n, mask_b, mask_n, mask, store_mask = program_tile(B, H, BLOCK_B, BLOCK_N, K_GROUPS)
    offs_j = tl.arange(0, 4 * BLOCK_N)
    unit_j = hidden_tile(K_GROUPS) * BLOCK_N + offs_j // 4
    w_cols = ((offs_j % 4) * H + unit_j) * H  # W_hh^T column j is row (gate, unit) of W_hh
    mask_j = (unit_j < H) & (offs_j % 4 < 3)
    w = weight_slice(w_hh_ptr, w_cols, mask_j, H, 1, K_PIECES, K_SPLIT, K_GROUPS, BLOCK_K, BF16_INTERPRETER)
    w_in = ()
    if WAVEFRONT:
        if len(IN_PIECES) > 0:  # (layer 0's lane loads a slice it never reads: every lane runs one kernel)
            w_in = weight_slice(w_in_ptr, w_cols, mask_j, H, 1, IN_PIECES, K_SPLIT, 1, 0, BF16_INTERPRETER)
    b_r = tl.load(b_hh_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
    b_z = tl.load(b_hh_ptr + H + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
    b_n = tl.load(b_hh_ptr + 2 * H + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]

    # A wavefront's lane that starts later (t < 0 at t_start) starts from the state of its first step.
    first_t = t_start - lag
    if WAVEFRONT:
        first_t = tl.minimum(tl.maximum(first_t, 0), T - 1)
    _, first_read, _ = forward_step_slots(first_t, T, reverse)
    h_own = load_state_tile(h_all_ptr, first_read, B, offs_b, offs_n, H, mask)
    lengths = tl.load(lengths_ptr + offs_b, mask=mask_b, other=0)
    timeout = timeout_ns
    failed = 0
    t_first = forward_step_slots(t_start - lag, T, reverse)[0]
    x_r, x_z, x_n = _input_gates(
        gates_ptr, h_all_ptr, noise_ptr, w_in_ptr, w_in, t_first, lane, T, B, H, offs_b, offs_n, mask_b,
        first_step_mask(mask, t_first, T, WAVEFRONT), w_cols, mask_j,
        WAVEFRONT, BLOCK_B, BLOCK_N, IN_PIECES, K_SPLIT, HAS_NOISE, BLOCK_K_IN, DOT_PRECISION, BF16_INTERPRETER,
    )  # fmt: skip
    for s in range(n_steps):
        t, read_slot, write_slot = forward_step_slots(t_start + s - lag, T, reverse)
        rows_mask, step_store_mask = running_masks(t, T, mask_b, store_mask, WAVEFRONT)
        gate_offs = row_offsets(t, B, offs_b, offs_n, 3 * H)
        h_rows = (read_slot.to(tl.int64) * B + offs_b) * H
        acc = tl.zeros((BLOCK_B, 4 * BLOCK_N), tl.float32)
        acc, failed, timeout = recurrent_dot(
            acc, h_all_ptr, h_rows, rows_mask, H, w, w_hh_ptr, w_cols, mask_j, 1,
            exchange_ptr, barrier_ptr, s, failed, timeout,
            K_PIECES, K_SPLIT, K_GROUPS, BLOCK_K, DOT_PRECISION, BF16_INTERPRETER,
        )  # fmt: skip
        pre_r, pre_z, pre_n = _split_gates(acc, BLOCK_B, BLOCK_N)
        hn = pre_n + b_n
        gate_r = sigmoid(x_r + pre_r + b_r)
        gate_z = sigmoid(x_z + pre_z + b_z)
        gate_n = tanh(x_n + gate_r * hn)

        active = active_rows(t, lengths, rows_mask, WAVEFRONT)
        h = tl.where(active, (1.0 - gate_z) * gate_n + gate_z * h_own, h_own)
        h = to_storage(h, h_all_ptr, BF16_INTERPRETER)
        h_own = h.to(tl.float32)
        tl.store(h_all_ptr + row_offsets(write_slot, B, offs_b, offs_n, H), h, mask=step_store_mask)
        if TRAINING:
            stored = step_store_mask
            tl.store(gates_ptr + gate_offs, to_storage(gate_r, gates_ptr, BF16_INTERPRETER), mask=stored)
            tl.store(gates_ptr + gate_offs + H, to_storage(gate_z, gates_ptr, BF16_INTERPRETER), mask=stored)
            tl.store(gates_ptr + gate_offs + 2 * H, to_storage(gate_n, gates_ptr, BF16_INTERPRETER), mask=stored)
            tl.store(hn_all_ptr + row_offsets(t, B, offs_b, offs_n, H), hn, mask=stored)
        barrier_arrive(barrier_ptr, s, n_steps, USE_BARRIER)
        # The next step's input projections do not depend on this one: they load during the barrier (in a
        # wavefront with the input dot from the layer below, published a barrier earlier).
        t_next = forward_step_slots(t_start + s + 1 - lag, T, reverse)[0]
        x_r, x_z, x_n = _input_gates(
            gates_ptr, h_all_ptr, noise_ptr, w_in_ptr, w_in, t_next, lane, T, B, H, offs_b, offs_n, mask_b,
            ahead_mask(mask, t_next, T), w_cols, mask_j,
            WAVEFRONT, BLOCK_B, BLOCK_N, IN_PIECES, K_SPLIT, HAS_NOISE, BLOCK_K_IN, DOT_PRECISION, BF16_INTERPRETER,
        )  # fmt: skip
        failed, timeout = barrier_wait(barrier_ptr, s, n_steps, failed, timeout, USE_BARRIER)
    if USE_BARRIER:
        tl.atomic_max(error_ptr, failed)


@triton.jit(do_not_specialize=["t_start", "n_steps", "direction_start", "num_layers", "T", "timeout_ns"])
def _gru_bwd_kernel(
    dgates_h_all_ptr,  # [D, T + 1, B, 3H] out: gradient of the recurrent pre-activations h W_hh^T + b_hh
    dgates_x_ptr,  # [D, T, B, 3H] out: gradient of the input projection x W_ih^T + b_ih
    gates_ptr,  # [D, T, B, 3H] activated gates r z n saved by the forward
    w_hh_ptr,  # [D, 3H, H]
    h_all_ptr,  # [D, T + 1, B, H] hidden-state slots saved by the forward
    hn_all_ptr,  # [D, T, B, H] fp32 W_hn h_{t-1} + b_hn saved by the forward
    dh_ptr,  # [D, T, B, H] fp32 gradient reaching h_t from the output (dh_n already added at the last step)
    dh_carry_ptr,  # [D, B, H] fp32 gradient reaching h_t directly (z * h_t, or carried past a row's length); zero in
    lengths_ptr,  # [B] int64 sequence lengths
    w_in_ptr,  # WAVEFRONT: [D, 3H, H] each layer's input weight (layer 0's zero); else unused
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
    K_PIECES: tl.constexpr,  # the recurrent dot's K (3H) as pieces
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
    dgates_h_all_ptr += lane * (T + 1) * B * 3 * H
    dgates_x_ptr += lane * T * B * 3 * H
    gates_ptr += lane * T * B * 3 * H
    w_hh_ptr += lane * 3 * H * H
    h_all_ptr += lane * (T + 1) * B * H
    hn_all_ptr += lane * T * B * H
    dh_ptr += lane * T * B * H
    dh_carry_ptr += lane * B * H
    # The layer above's: the gradient of its input projection (dgates_x, not its recurrent gates'), its
    # input weight, its noise.
    dgates_above_ptr = dgates_x_ptr + T * B * 3 * H
    w_in_ptr += (lane + 1) * 3 * H * H
    noise_ptr += (lane + 1) * T * B * H
    offs_b, offs_n, mask_b, mask_n, mask, store_mask = program_tile(B, H, BLOCK_B, BLOCK_N, K_GROUPS)
    w = weight_slice(w_hh_ptr, offs_n, mask_n, 3 * H, H, K_PIECES, K_SPLIT, K_GROUPS, BLOCK_K, BF16_INTERPRETER)
    w_in = ()
    if WAVEFRONT:
        w_in = above_weight_slice(
            w_in_ptr, offs_n, mask_n, lane, num_layers, H, 3, IN_PIECES, K_SPLIT, BF16_INTERPRETER
        )

    carry_offs = (offs_b.to(tl.int64) * H)[:, None] + offs_n[None, :]
    dh_carry = tl.load(dh_carry_ptr + carry_offs, mask=mask, other=0.0)
    lengths = tl.load(lengths_ptr + offs_b, mask=mask_b, other=0)
    timeout = timeout_ns
    failed = 0
    t = backward_step_slots(t_start - lag, T, reverse)[0]
    first_mask = first_step_mask(mask, t, T, WAVEFRONT)
    dh_out, gate_r, gate_z, gate_n, hn, h_prev = _saved_step(
        dh_ptr, gates_ptr, hn_all_ptr, h_all_ptr, t, reverse, B, H, offs_b, offs_n, first_mask
    )
    if WAVEFRONT:
        dh_out += gradient_from_above(
            dgates_above_ptr, t, noise_ptr, w_in_ptr, w_in, t, lane, num_layers, T, B, H, offs_b, mask_b, offs_n,
            mask_n, 3, IN_PIECES, K_SPLIT, HAS_NOISE, BLOCK_K_IN, DOT_PRECISION, BF16_INTERPRETER,
        )  # fmt: skip
    for s in range(n_steps):
        t, dgates_slot, next_slot = backward_step_slots(t_start + s - lag, T, reverse)
        rows_mask, step_store_mask = running_masks(t, T, mask_b, store_mask, WAVEFRONT)
        gate_offs = row_offsets(t, B, offs_b, offs_n, 3 * H)
        next_rows = (next_slot.to(tl.int64) * B + offs_b) * 3 * H
        dh, failed, timeout = recurrent_dot(
            dh_out + dh_carry, dgates_h_all_ptr, next_rows, rows_mask, 3 * H, w, w_hh_ptr, offs_n, mask_n, H,
            exchange_ptr, barrier_ptr, s, failed, timeout,
            K_PIECES, K_SPLIT, K_GROUPS, BLOCK_K, DOT_PRECISION, BF16_INTERPRETER,
        )  # fmt: skip

        active = active_rows(t, lengths, rows_mask, WAVEFRONT)
        d_n = tl.where(active, dh * (1.0 - gate_z) * (1.0 - gate_n * gate_n), 0.0)
        d_z = tl.where(active, dh * (h_prev - gate_n) * gate_z * (1.0 - gate_z), 0.0)
        d_r = d_n * hn * gate_r * (1.0 - gate_r)
        # (Where the lane is not running, dh is dh_carry itself: every load of the step is masked off.)
        dh_carry = tl.where(active, dh * gate_z, dh)

        dgates_h_offs = row_offsets(dgates_slot, B, offs_b, offs_n, 3 * H)
        d_r = to_storage(d_r, dgates_x_ptr, BF16_INTERPRETER)
        d_z = to_storage(d_z, dgates_x_ptr, BF16_INTERPRETER)
        stored = step_store_mask
        tl.store(dgates_h_all_ptr + dgates_h_offs, d_r, mask=stored)
        tl.store(dgates_h_all_ptr + dgates_h_offs + H, d_z, mask=stored)
        tl.store(dgates_h_all_ptr + dgates_h_offs + 2 * H, to_storage(d_n * gate_r, dgates_h_all_ptr, BF16_INTERPRETER),
                 mask=stored)  # fmt: skip
        tl.store(dgates_x_ptr + gate_offs, d_r, mask=stored)
        tl.store(dgates_x_ptr + gate_offs + H, d_z, mask=stored)
        tl.store(dgates_x_ptr + gate_offs + 2 * H, to_storage(d_n, dgates_x_ptr, BF16_INTERPRETER), mask=stored)
        barrier_arrive(barrier_ptr, s, n_steps, USE_BARRIER)
        # What the next step reads from the forward and from above does not depend on this step: it
        # loads during the barrier (in a wavefront with the dot of the layer above's input-gate
        # gradients, published a barrier earlier).
        t_next = backward_step_slots(t_start + s + 1 - lag, T, reverse)[0]
        dh_out, gate_r, gate_z, gate_n, hn, h_prev = _saved_step(
            dh_ptr, gates_ptr, hn_all_ptr, h_all_ptr, t_next, reverse, B, H, offs_b, offs_n, ahead_mask(mask, t_next, T)
        )
        if WAVEFRONT:
            dh_out += gradient_from_above(
                dgates_above_ptr, t_next, noise_ptr, w_in_ptr, w_in, t_next, lane, num_layers, T, B, H, offs_b, mask_b,
                offs_n, mask_n, 3, IN_PIECES, K_SPLIT, HAS_NOISE, BLOCK_K_IN, DOT_PRECISION, BF16_INTERPRETER,
            )  # fmt: skip
        failed, timeout = barrier_wait(barrier_ptr, s, n_steps, failed, timeout, USE_BARRIER)
    tl.store(dh_carry_ptr + carry_offs, dh_carry, mask=store_mask)
    if USE_BARRIER:
        tl.atomic_max(error_ptr, failed)


def gru_scan_fwd(
    gates: torch.Tensor,
    w_hh: torch.Tensor,
    b_hh: torch.Tensor,
    h_all: torch.Tensor,
    hn_all: torch.Tensor,
    lengths: torch.Tensor,
    training: bool,
    wavefront: Wavefront | None = None,
) -> None:
    """Runs the recurrence of D directions over gates [D, T, B, 3H] (overwritten with activated gates when
    training), filling the slots of h_all [D, T + 1, B, H] and, when training, hn_all [D, T, B, H] (fp32);
    w_hh [D, 3H, H], b_hh [D, 3H]. With `wavefront` the D lanes are the layers of a unidirectional stack,
    gates holding layer 0's input projection and the upper layers' b_ih (kernels/lstm.py)."""
    seq_len, batch, hidden = h_all.shape[1] - 1, h_all.shape[2], h_all.shape[3]
    inputs, scalars, constexprs, steps = wavefront_arguments(wavefront, w_hh, seq_len)
    run_scan(
        "gru",
        "forward",
        _gru_fwd_kernel,
        w_hh,
        (gates, w_hh, b_hh, h_all, hn_all, lengths, *inputs),
        dict(T=seq_len, B=batch, H=hidden, **scalars),
        dict(TRAINING=training, IN_PIECES=(), **constexprs, **scan_constexprs(gates.dtype)),
        steps,
    )


def gru_scan_bwd(
    dgates_h_all: torch.Tensor,
    dgates_x: torch.Tensor,
    gates: torch.Tensor,
    w_hh: torch.Tensor,
    h_all: torch.Tensor,
    hn_all: torch.Tensor,
    dh: torch.Tensor,
    dh_carry: torch.Tensor,
    lengths: torch.Tensor,
    wavefront: Wavefront | None = None,
) -> None:
    """Backward through time of D directions: fills dgates_h_all [D, T + 1, B, 3H] (its zero slots already
    cleared) and dgates_x [D, T, B, 3H] (both in gates' dtype), and leaves in dh_carry [D, B, H] (fp32,
    zero in) the direct part of dh_0. With `wavefront` the lanes are layers and a layer's dh gets the
    gradient of the layer above's input (its dgates_x W_ih, times its noise) in the kernel."""
    seq_len, batch, hidden = dh.shape[1:]
    inputs, scalars, constexprs, steps = wavefront_arguments(wavefront, w_hh, seq_len)
    run_scan(
        "gru",
        "backward",
        _gru_bwd_kernel,
        w_hh,
        (dgates_h_all, dgates_x, gates, w_hh, h_all, hn_all, dh, dh_carry, lengths, *inputs),
        dict(T=seq_len, B=batch, H=hidden, **scalars),
        dict(IN_PIECES=(), **constexprs, **scan_constexprs(gates.dtype)),
        steps,
    )
