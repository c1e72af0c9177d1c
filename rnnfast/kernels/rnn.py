"""Elman RNN recurrence kernels (torch.nn.RNN, nonlinearity tanh or relu) and their launchers.

h_t = act(x W_ih^T + b_ih + b_hh + h_{t-1} W_hh^T), the input projection done by the caller. Slots as in
kernels/lstm.py: h_all [T + 1, B, H] and dgates_all [T + 1, B, H]. The backward needs no saved gates:
act'(pre) is read off h_t itself (1 - h^2 for tanh, h > 0 for relu).

Weight-stationary as the LSTM's kernels: program (n, b) owns units n * BLOCK_N ... and a batch tile;
forward slice W_hh^T[:, units], backward slice W_hh[:, units].
"""

import torch
import triton
import triton.language as tl

from .activations import tanh, to_storage
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
    gradient_from_above,
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


@triton.jit(do_not_specialize=["t_start", "n_steps", "direction_start", "num_layers", "T", "timeout_ns"])
def _rnn_fwd_kernel(
    gates_ptr,  # [D, T, B, H] x W_ih^T + b_ih + b_hh
    w_hh_ptr,  # [D, H, H] recurrent weight, torch.nn layout
    h_all_ptr,  # [D, T + 1, B, H] hidden-state slots, h0 already in the first read slot
    lengths_ptr,  # [B] int64 sequence lengths (T for every row of an unpadded batch)
    w_in_ptr,  # WAVEFRONT: [D, H, H] each layer's input weight (layer 0's zero); else unused
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
    RELU: tl.constexpr,
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
    gates_ptr += lane * T * B * H
    w_hh_ptr += lane * H * H
    h_all_ptr += lane * (T + 1) * B * H
    w_in_ptr += lane * H * H
    noise_ptr += lane * T * B * H
    offs_b, offs_n, mask_b, mask_n, mask, store_mask = program_tile(B, H, BLOCK_B, BLOCK_N, K_GROUPS)
    w = weight_slice(w_hh_ptr, offs_n * H, mask_n, H, 1, K_PIECES, K_SPLIT, K_GROUPS, BLOCK_K, BF16_INTERPRETER)
    w_in = ()
    if WAVEFRONT:
        if len(IN_PIECES) > 0:
            w_in = weight_slice(w_in_ptr, offs_n * H, mask_n, H, 1, IN_PIECES, K_SPLIT, 1, 0, BF16_INTERPRETER)

    # A wavefront's lane that starts later (t < 0 at t_start) starts from the state of its first step.
    first_t = t_start - lag
    if WAVEFRONT:
        first_t = tl.minimum(tl.maximum(first_t, 0), T - 1)
    _, first_read, _ = forward_step_slots(first_t, T, reverse)
    h_own = load_state_tile(h_all_ptr, first_read, B, offs_b, offs_n, H, mask)
    lengths = tl.load(lengths_ptr + offs_b, mask=mask_b, other=0)
    timeout = timeout_ns
    failed = 0
    t = forward_step_slots(t_start - lag, T, reverse)[0]
    x_offs = row_offsets(t, B, offs_b, offs_n, H)
    x = tl.load(gates_ptr + x_offs, mask=first_step_mask(mask, t, T, WAVEFRONT), other=0.0).to(tl.float32)
    if WAVEFRONT:
        x += input_from_below(
            h_all_ptr, noise_ptr, w_in_ptr, w_in, t, lane, T, B, H, offs_b, mask_b, offs_n * H, mask_n,
            BLOCK_N, IN_PIECES, K_SPLIT, HAS_NOISE, BLOCK_K_IN, DOT_PRECISION, BF16_INTERPRETER,
        )  # fmt: skip
    for s in range(n_steps):
        t, read_slot, write_slot = forward_step_slots(t_start + s - lag, T, reverse)
        rows_mask, step_store_mask = running_masks(t, T, mask_b, store_mask, WAVEFRONT)
        h_rows = (read_slot.to(tl.int64) * B + offs_b) * H
        acc, failed, timeout = recurrent_dot(
            x, h_all_ptr, h_rows, rows_mask, H, w, w_hh_ptr, offs_n * H, mask_n, 1,
            exchange_ptr, barrier_ptr, s, failed, timeout,
            K_PIECES, K_SPLIT, K_GROUPS, BLOCK_K, DOT_PRECISION, BF16_INTERPRETER,
        )  # fmt: skip
        if RELU:
            h = tl.where(acc < 0.0, 0.0, acc)  # NaN stays NaN, as torch.relu
        else:
            h = tanh(acc)
        h = to_storage(tl.where(active_rows(t, lengths, rows_mask, WAVEFRONT), h, h_own), h_all_ptr, BF16_INTERPRETER)
        h_own = h.to(tl.float32)
        tl.store(h_all_ptr + row_offsets(write_slot, B, offs_b, offs_n, H), h, mask=step_store_mask)
        barrier_arrive(barrier_ptr, s, n_steps, USE_BARRIER)
        # The next step's input projection does not depend on this one: it loads during the barrier (in a
        # wavefront with the input dot from the layer below, published a barrier earlier).
        t_next = forward_step_slots(t_start + s + 1 - lag, T, reverse)[0]
        x_offs = row_offsets(t_next, B, offs_b, offs_n, H)
        x = tl.load(gates_ptr + x_offs, mask=ahead_mask(mask, t_next, T), other=0.0).to(tl.float32)
        if WAVEFRONT:
            x += input_from_below(
                h_all_ptr, noise_ptr, w_in_ptr, w_in, t_next, lane, T, B, H, offs_b, mask_b, offs_n * H, mask_n,
                BLOCK_N, IN_PIECES, K_SPLIT, HAS_NOISE, BLOCK_K_IN, DOT_PRECISION, BF16_INTERPRETER,
            )  # fmt: skip
        failed, timeout = barrier_wait(barrier_ptr, s, n_steps, failed, timeout, USE_BARRIER)
    if USE_BARRIER:
        tl.atomic_max(error_ptr, failed)


@triton.jit(do_not_specialize=["t_start", "n_steps", "direction_start", "num_layers", "T", "timeout_ns"])
def _rnn_bwd_kernel(
    dgates_all_ptr,  # [D, T + 1, B, H] out: gradient of the pre-activations, zero "after" slot
    w_hh_ptr,  # [D, H, H]
    h_all_ptr,  # [D, T + 1, B, H] hidden-state slots saved by the forward
    dh_ptr,  # [D, T, B, H] fp32 gradient reaching h_t from the output (dh_n already added at the last step)
    dh_carry_ptr,  # [D, B, H] fp32 gradient carried past the steps beyond a row's length; zero in
    lengths_ptr,  # [B] int64 sequence lengths
    w_in_ptr,  # WAVEFRONT: [D, H, H] each layer's input weight (layer 0's zero); else unused
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
    RELU: tl.constexpr,
    WAVEFRONT: tl.constexpr,  # D is the layers of a unidirectional stack (recurrence.lane_schedule), else directions
    HAS_NOISE: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_N: tl.constexpr,
    K_PIECES: tl.constexpr,  # the recurrent dot's K (H) as pieces
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
    dgates_all_ptr += lane * (T + 1) * B * H
    w_hh_ptr += lane * H * H
    h_all_ptr += lane * (T + 1) * B * H
    dh_ptr += lane * T * B * H
    dh_carry_ptr += lane * B * H
    # The layer above's: its gate gradients are its input's pre-activation gradients, its W_in, its noise.
    dgates_above_ptr = dgates_all_ptr + (T + 1) * B * H
    w_in_ptr += (lane + 1) * H * H
    noise_ptr += (lane + 1) * T * B * H
    offs_b, offs_n, mask_b, mask_n, mask, store_mask = program_tile(B, H, BLOCK_B, BLOCK_N, K_GROUPS)
    w = weight_slice(w_hh_ptr, offs_n, mask_n, H, H, K_PIECES, K_SPLIT, K_GROUPS, BLOCK_K, BF16_INTERPRETER)
    w_in = ()
    if WAVEFRONT:
        w_in = above_weight_slice(
            w_in_ptr, offs_n, mask_n, lane, num_layers, H, 1, IN_PIECES, K_SPLIT, BF16_INTERPRETER
        )

    carry_offs = (offs_b.to(tl.int64) * H)[:, None] + offs_n[None, :]
    dh_carry = tl.load(dh_carry_ptr + carry_offs, mask=mask, other=0.0)
    lengths = tl.load(lengths_ptr + offs_b, mask=mask_b, other=0)
    timeout = timeout_ns
    failed = 0
    t = backward_step_slots(t_start - lag, T, reverse)[0]
    first_mask = first_step_mask(mask, t, T, WAVEFRONT)
    dh_out = tl.load(dh_ptr + row_offsets(t, B, offs_b, offs_n, H), mask=first_mask, other=0.0)
    h = load_state_tile(h_all_ptr, t + 1 - reverse, B, offs_b, offs_n, H, first_mask)
    if WAVEFRONT:
        dh_out += gradient_from_above(
            dgates_above_ptr, t, noise_ptr, w_in_ptr, w_in, t, lane, num_layers, T, B, H, offs_b, mask_b, offs_n,
            mask_n, 1, IN_PIECES, K_SPLIT, HAS_NOISE, BLOCK_K_IN, DOT_PRECISION, BF16_INTERPRETER,
        )  # fmt: skip
    for s in range(n_steps):
        t, dgates_slot, next_slot = backward_step_slots(t_start + s - lag, T, reverse)
        rows_mask, step_store_mask = running_masks(t, T, mask_b, store_mask, WAVEFRONT)
        next_rows = (next_slot.to(tl.int64) * B + offs_b) * H
        dh, failed, timeout = recurrent_dot(
            dh_out + dh_carry, dgates_all_ptr, next_rows, rows_mask, H, w, w_hh_ptr, offs_n, mask_n, H,
            exchange_ptr, barrier_ptr, s, failed, timeout,
            K_PIECES, K_SPLIT, K_GROUPS, BLOCK_K, DOT_PRECISION, BF16_INTERPRETER,
        )  # fmt: skip
        if RELU:
            d_pre = tl.where(h > 0.0, dh, 0.0)
        else:
            d_pre = dh * (1.0 - h * h)
        active = active_rows(t, lengths, rows_mask, WAVEFRONT)
        d_pre = tl.where(active, d_pre, 0.0)
        dh_carry = tl.where(active, 0.0, dh)
        dgates_offs = row_offsets(dgates_slot, B, offs_b, offs_n, H)
        d_pre = to_storage(d_pre, dgates_all_ptr, BF16_INTERPRETER)
        tl.store(dgates_all_ptr + dgates_offs, d_pre, mask=step_store_mask)
        barrier_arrive(barrier_ptr, s, n_steps, USE_BARRIER)
        # What the next step reads from the forward and from above does not depend on this step: it
        # loads during the barrier.
        t_next = backward_step_slots(t_start + s + 1 - lag, T, reverse)[0]
        next_mask = ahead_mask(mask, t_next, T)
        dh_out = tl.load(dh_ptr + row_offsets(t_next, B, offs_b, offs_n, H), mask=next_mask, other=0.0)
        h = load_state_tile(h_all_ptr, t_next + 1 - reverse, B, offs_b, offs_n, H, next_mask)
        if WAVEFRONT:
            dh_out += gradient_from_above(
                dgates_above_ptr, t_next, noise_ptr, w_in_ptr, w_in, t_next, lane, num_layers, T, B, H, offs_b, mask_b,
                offs_n, mask_n, 1, IN_PIECES, K_SPLIT, HAS_NOISE, BLOCK_K_IN, DOT_PRECISION, BF16_INTERPRETER,
            )  # fmt: skip
        failed, timeout = barrier_wait(barrier_ptr, s, n_steps, failed, timeout, USE_BARRIER)
    tl.store(dh_carry_ptr + carry_offs, dh_carry, mask=store_mask)
    if USE_BARRIER:
        tl.atomic_max(error_ptr, failed)


def rnn_scan_fwd(
    gates: torch.Tensor,
    w_hh: torch.Tensor,
    h_all: torch.Tensor,
    lengths: torch.Tensor,
    relu: bool,
    wavefront: Wavefront | None = None,
) -> None:
    """Runs the recurrence of D directions over gates [D, T, B, H], filling the slots of h_all
    [D, T + 1, B, H]; w_hh [D, H, H]; rows stop updating at their length (lengths [B] int64). With
    `wavefront` the D lanes are the layers of a unidirectional stack (kernels/lstm.py)."""
    seq_len, batch, hidden = h_all.shape[1] - 1, h_all.shape[2], h_all.shape[3]
    inputs, scalars, constexprs, steps = wavefront_arguments(wavefront, w_hh, seq_len)
    run_scan(
        "rnn_relu" if relu else "rnn_tanh",
        "forward",
        _rnn_fwd_kernel,
        w_hh,
        (gates, w_hh, h_all, lengths, *inputs),
        dict(T=seq_len, B=batch, H=hidden, **scalars),
        dict(RELU=relu, IN_PIECES=(), **constexprs, **scan_constexprs(gates.dtype)),
        steps,
    )


def rnn_scan_bwd(
    dgates_all: torch.Tensor,
    w_hh: torch.Tensor,
    h_all: torch.Tensor,
    dh: torch.Tensor,
    dh_carry: torch.Tensor,
    lengths: torch.Tensor,
    relu: bool,
    wavefront: Wavefront | None = None,
) -> None:
    """Backward through time of D directions: fills dgates_all [D, T + 1, B, H] (h_all's dtype, its zero
    slots already cleared) and leaves in dh_carry [D, B, H] (fp32, zero in) the gradient carried past rows'
    lengths; dh [D, T, B, H]. With `wavefront` the lanes are layers (kernels/lstm.py)."""
    seq_len, batch, hidden = dh.shape[1:]
    inputs, scalars, constexprs, steps = wavefront_arguments(wavefront, w_hh, seq_len)
    run_scan(
        "rnn_relu" if relu else "rnn_tanh",
        "backward",
        _rnn_bwd_kernel,
        w_hh,
        (dgates_all, w_hh, h_all, dh, dh_carry, lengths, *inputs),
        dict(T=seq_len, B=batch, H=hidden, **scalars),
        dict(RELU=relu, IN_PIECES=(), **constexprs, **scan_constexprs(h_all.dtype)),
        steps,
    )
