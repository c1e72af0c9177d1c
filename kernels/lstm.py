"""LSTM recurrence kernels (gate order i f g o, as torch.nn) and their launchers.

The input projection x @ W_ih^T + b_ih + b_hh is a GEMM done by the caller; these kernels run the part
that must go step by step. Buffers use "slots" so that no step needs a special case:

- h_all [T + 1, B, H]: the forward direction reads h_{t-1} from slot t and writes h_t to slot t + 1
  (h0 in slot 0); the reverse direction reads slot t + 1 and writes slot t (h0 in slot T). The output
  sequence and the h_{t-1} operand of the weight gradient are both plain slices of it.
- c_all [c_slots, B, H] fp32: the same slots as h_all, modulo c_slots (T + 1 when training, so the
  backward finds every c_t; 2 in inference, a ring).
- dgates_all [T + 1, B, 4H] fp32: the gradient of step t's gate pre-activations sits in slot t + REVERSE;
  the slot "after" the last step processed by the forward is zero, so the recurrent gradient of the first
  backward step is a product with zeros.

Rows past their length (lengths [B]) carry h and c through unchanged, so h_all's last slot holds each
row's final state; in the backward their gate gradients are zero and the gradient reaching their state
travels in dh_carry (and dc).
"""

import torch
import triton
import triton.language as tl

from .activations import sigmoid, tanh, to_storage
from .configs import plan_scan
from .launch import bf16_under_interpreter, launch_scan
from .recurrence import (
    active_rows,
    backward_step_slots,
    forward_step_slots,
    load_h_chunk,
    load_state_tile,
    load_w_t_chunk,
    recurrent_grad,
    row_offsets,
    tile_offsets,
)


@triton.jit
def _lstm_fwd_tile(
    gates_ptr,  # [T, B, 4H] in: x W_ih^T + b_ih + b_hh; out (TRAINING): activated gates i f g o
    w_hh_ptr,  # [4H, H] recurrent weight, torch.nn layout
    h_all_ptr,  # [T + 1, B, H] hidden-state slots, h0 already in the first read slot
    c_all_ptr,  # [c_slots, B, H] fp32 cell-state slots, c0 already in the first read slot
    lengths_ptr,  # [B] int64 sequence lengths (T for every row of an unpadded batch)
    step,
    T,
    B,
    H,
    c_slots,
    pid_b,
    n_start,
    REVERSE: tl.constexpr,
    TRAINING: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BF16_INTERPRETER: tl.constexpr,
):
    t, read_slot, write_slot = forward_step_slots(step, T, REVERSE)
    offs_b, offs_n, mask_b, mask_n, mask = tile_offsets(pid_b, n_start, B, H, BLOCK_B, BLOCK_N)

    gate_offs = row_offsets(t, B, offs_b, offs_n, 4 * H)
    acc_i = tl.load(gates_ptr + gate_offs, mask=mask, other=0.0).to(tl.float32)
    acc_f = tl.load(gates_ptr + gate_offs + H, mask=mask, other=0.0).to(tl.float32)
    acc_g = tl.load(gates_ptr + gate_offs + 2 * H, mask=mask, other=0.0).to(tl.float32)
    acc_o = tl.load(gates_ptr + gate_offs + 3 * H, mask=mask, other=0.0).to(tl.float32)
    h_prev_rows = (read_slot.to(tl.int64) * B + offs_b) * H
    for k in range(0, H, BLOCK_K):
        offs_k = k + tl.arange(0, BLOCK_K)
        mask_k = offs_k < H
        h_prev = load_h_chunk(h_all_ptr, h_prev_rows, offs_k, mask_b, mask_k, BF16_INTERPRETER)
        w_i = load_w_t_chunk(w_hh_ptr, 0, offs_k, mask_k, offs_n, mask_n, H, BF16_INTERPRETER)
        w_f = load_w_t_chunk(w_hh_ptr, 1, offs_k, mask_k, offs_n, mask_n, H, BF16_INTERPRETER)
        w_g = load_w_t_chunk(w_hh_ptr, 2, offs_k, mask_k, offs_n, mask_n, H, BF16_INTERPRETER)
        w_o = load_w_t_chunk(w_hh_ptr, 3, offs_k, mask_k, offs_n, mask_n, H, BF16_INTERPRETER)
        acc_i = tl.dot(h_prev, w_i, acc_i, input_precision="ieee")
        acc_f = tl.dot(h_prev, w_f, acc_f, input_precision="ieee")
        acc_g = tl.dot(h_prev, w_g, acc_g, input_precision="ieee")
        acc_o = tl.dot(h_prev, w_o, acc_o, input_precision="ieee")

    gate_i = sigmoid(acc_i)
    gate_f = sigmoid(acc_f)
    gate_g = tanh(acc_g)
    gate_o = sigmoid(acc_o)

    c_prev = load_state_tile(c_all_ptr, read_slot % c_slots, B, offs_b, offs_n, H, mask)
    c = gate_f * c_prev + gate_i * gate_g
    h = gate_o * tanh(c)
    active = active_rows(lengths_ptr, t, offs_b, mask_b)
    c = tl.where(active, c, c_prev)
    h = tl.where(active, h, load_state_tile(h_all_ptr, read_slot, B, offs_b, offs_n, H, mask))
    tl.store(c_all_ptr + row_offsets(write_slot % c_slots, B, offs_b, offs_n, H), c, mask=mask)
    h_offs = row_offsets(write_slot, B, offs_b, offs_n, H)
    tl.store(h_all_ptr + h_offs, to_storage(h, h_all_ptr, BF16_INTERPRETER), mask=mask)
    if TRAINING:
        tl.store(gates_ptr + gate_offs, to_storage(gate_i, gates_ptr, BF16_INTERPRETER), mask=mask)
        tl.store(gates_ptr + gate_offs + H, to_storage(gate_f, gates_ptr, BF16_INTERPRETER), mask=mask)
        tl.store(gates_ptr + gate_offs + 2 * H, to_storage(gate_g, gates_ptr, BF16_INTERPRETER), mask=mask)
        tl.store(gates_ptr + gate_offs + 3 * H, to_storage(gate_o, gates_ptr, BF16_INTERPRETER), mask=mask)


@triton.jit(do_not_specialize=["T"])
def _lstm_fwd_persistent_kernel(
    gates_ptr,  # [T, B, 4H]
    w_hh_ptr,  # [4H, H]
    h_all_ptr,  # [T + 1, B, H]
    c_all_ptr,  # [c_slots, B, H] fp32
    lengths_ptr,  # [B] int64
    T,
    B,
    H,
    c_slots,
    REVERSE: tl.constexpr,
    TRAINING: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BF16_INTERPRETER: tl.constexpr,
):
    pid_b = tl.program_id(0)
    for step in range(T):
        for n_start in range(0, H, BLOCK_N):
            _lstm_fwd_tile(
                gates_ptr, w_hh_ptr, h_all_ptr, c_all_ptr, lengths_ptr, step, T, B, H, c_slots, pid_b, n_start,
                REVERSE, TRAINING, BLOCK_B, BLOCK_N, BLOCK_K, BF16_INTERPRETER,
            )  # fmt: skip
        # The next step reads every hidden unit this program just wrote.
        tl.debug_barrier()


@triton.jit(do_not_specialize=["T", "step"])
def _lstm_fwd_step_kernel(
    gates_ptr,  # [T, B, 4H]
    w_hh_ptr,  # [4H, H]
    h_all_ptr,  # [T + 1, B, H]
    c_all_ptr,  # [c_slots, B, H] fp32
    lengths_ptr,  # [B] int64
    step,
    T,
    B,
    H,
    c_slots,
    REVERSE: tl.constexpr,
    TRAINING: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BF16_INTERPRETER: tl.constexpr,
):
    _lstm_fwd_tile(
        gates_ptr, w_hh_ptr, h_all_ptr, c_all_ptr, lengths_ptr, step, T, B, H, c_slots,
        tl.program_id(0), tl.program_id(1) * BLOCK_N,
        REVERSE, TRAINING, BLOCK_B, BLOCK_N, BLOCK_K, BF16_INTERPRETER,
    )  # fmt: skip


@triton.jit
def _lstm_bwd_tile(
    dgates_all_ptr,  # [T + 1, B, 4H] fp32 out: gradient of the gate pre-activations, zero "after" slot
    gates_ptr,  # [T, B, 4H] activated gates i f g o saved by the forward
    w_hh_ptr,  # [4H, H]
    c_all_ptr,  # [T + 1, B, H] fp32 cell-state slots saved by the forward
    dh_ptr,  # [T, B, H] fp32 gradient reaching h_t from the output (dh_n already added at the last step)
    dc_ptr,  # [B, H] fp32 gradient of the cell state: dc_n in, dc_0 out, updated in place
    dh_carry_ptr,  # [B, H] fp32 gradient carried past the steps beyond a row's length; zero in
    lengths_ptr,  # [B] int64 sequence lengths
    step,
    T,
    B,
    H,
    pid_b,
    n_start,
    REVERSE: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    t, dgates_slot, next_dgates_slot = backward_step_slots(step, T, REVERSE)
    offs_b, offs_n, mask_b, mask_n, mask = tile_offsets(pid_b, n_start, B, H, BLOCK_B, BLOCK_N)

    carry_offs = (offs_b.to(tl.int64) * H)[:, None] + offs_n[None, :]
    dh = tl.load(dh_ptr + row_offsets(t, B, offs_b, offs_n, H), mask=mask, other=0.0)
    dh += tl.load(dh_carry_ptr + carry_offs, mask=mask, other=0.0, cache_modifier=".cg")
    dh = recurrent_grad(
        dh, dgates_all_ptr, next_dgates_slot, w_hh_ptr, offs_b, mask_b, offs_n, mask_n, B, H, 4, BLOCK_K
    )

    gate_offs = row_offsets(t, B, offs_b, offs_n, 4 * H)
    gate_i = tl.load(gates_ptr + gate_offs, mask=mask, other=0.0).to(tl.float32)
    gate_f = tl.load(gates_ptr + gate_offs + H, mask=mask, other=0.0).to(tl.float32)
    gate_g = tl.load(gates_ptr + gate_offs + 2 * H, mask=mask, other=0.0).to(tl.float32)
    gate_o = tl.load(gates_ptr + gate_offs + 3 * H, mask=mask, other=0.0).to(tl.float32)
    c = tl.load(c_all_ptr + row_offsets(t + 1 - REVERSE, B, offs_b, offs_n, H), mask=mask, other=0.0)
    c_prev = tl.load(c_all_ptr + row_offsets(t + REVERSE, B, offs_b, offs_n, H), mask=mask, other=0.0)
    active = active_rows(lengths_ptr, t, offs_b, mask_b)

    tanh_c = tanh(c)
    dc_next = tl.load(dc_ptr + carry_offs, mask=mask, other=0.0, cache_modifier=".cg")
    dc = dc_next + dh * gate_o * (1.0 - tanh_c * tanh_c)
    d_i = tl.where(active, dc * gate_g * gate_i * (1.0 - gate_i), 0.0)
    d_f = tl.where(active, dc * c_prev * gate_f * (1.0 - gate_f), 0.0)
    d_g = tl.where(active, dc * gate_i * (1.0 - gate_g * gate_g), 0.0)
    d_o = tl.where(active, dh * tanh_c * gate_o * (1.0 - gate_o), 0.0)
    tl.store(dc_ptr + carry_offs, tl.where(active, dc * gate_f, dc_next), mask=mask)
    tl.store(dh_carry_ptr + carry_offs, tl.where(active, 0.0, dh), mask=mask)

    dgates_offs = row_offsets(dgates_slot, B, offs_b, offs_n, 4 * H)
    tl.store(dgates_all_ptr + dgates_offs, d_i, mask=mask)
    tl.store(dgates_all_ptr + dgates_offs + H, d_f, mask=mask)
    tl.store(dgates_all_ptr + dgates_offs + 2 * H, d_g, mask=mask)
    tl.store(dgates_all_ptr + dgates_offs + 3 * H, d_o, mask=mask)


@triton.jit(do_not_specialize=["T"])
def _lstm_bwd_persistent_kernel(
    dgates_all_ptr,  # [T + 1, B, 4H]
    gates_ptr,  # [T, B, 4H]
    w_hh_ptr,  # [4H, H]
    c_all_ptr,  # [T + 1, B, H] fp32
    dh_ptr,  # [T, B, H] fp32
    dc_ptr,  # [B, H] fp32
    dh_carry_ptr,  # [B, H] fp32
    lengths_ptr,  # [B] int64
    T,
    B,
    H,
    REVERSE: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    pid_b = tl.program_id(0)
    for step in range(T):
        for n_start in range(0, H, BLOCK_N):
            _lstm_bwd_tile(
                dgates_all_ptr, gates_ptr, w_hh_ptr, c_all_ptr, dh_ptr, dc_ptr, dh_carry_ptr, lengths_ptr,
                step, T, B, H, pid_b, n_start, REVERSE, BLOCK_B, BLOCK_N, BLOCK_K,
            )  # fmt: skip
        # The next step reads every gate gradient this program just wrote.
        tl.debug_barrier()


@triton.jit(do_not_specialize=["T", "step"])
def _lstm_bwd_step_kernel(
    dgates_all_ptr,  # [T + 1, B, 4H]
    gates_ptr,  # [T, B, 4H]
    w_hh_ptr,  # [4H, H]
    c_all_ptr,  # [T + 1, B, H] fp32
    dh_ptr,  # [T, B, H] fp32
    dc_ptr,  # [B, H] fp32
    dh_carry_ptr,  # [B, H] fp32
    lengths_ptr,  # [B] int64
    step,
    T,
    B,
    H,
    REVERSE: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    _lstm_bwd_tile(
        dgates_all_ptr, gates_ptr, w_hh_ptr, c_all_ptr, dh_ptr, dc_ptr, dh_carry_ptr, lengths_ptr, step, T, B, H,
        tl.program_id(0), tl.program_id(1) * BLOCK_N, REVERSE, BLOCK_B, BLOCK_N, BLOCK_K,
    )  # fmt: skip


# Every kernel the planner can launch, by (pass, variant), with its fp32 pointer arguments.
SCAN_KERNELS = {
    ("forward", "persistent"): (_lstm_fwd_persistent_kernel, frozenset({"c_all_ptr"})),
    ("forward", "step"): (_lstm_fwd_step_kernel, frozenset({"c_all_ptr"})),
    ("backward", "persistent"): (
        _lstm_bwd_persistent_kernel,
        frozenset({"dgates_all_ptr", "c_all_ptr", "dh_ptr", "dc_ptr", "dh_carry_ptr"}),
    ),
    ("backward", "step"): (
        _lstm_bwd_step_kernel,
        frozenset({"dgates_all_ptr", "c_all_ptr", "dh_ptr", "dc_ptr", "dh_carry_ptr"}),
    ),
}


def lstm_scan_fwd(
    gates: torch.Tensor,
    w_hh: torch.Tensor,
    h_all: torch.Tensor,
    c_all: torch.Tensor,
    lengths: torch.Tensor,
    reverse: bool,
    training: bool,
) -> None:
    """Runs the recurrence over gates [T, B, 4H] (overwritten with activated gates when training),
    filling the slots of h_all [T + 1, B, H] and c_all [c_slots, B, H] (fp32); rows stop updating at
    their length (lengths [B] int64)."""
    seq_len, batch, hidden = h_all.shape[0] - 1, h_all.shape[1], h_all.shape[2]
    plan = plan_scan("lstm", hidden, gates.dtype)
    launch_scan(
        plan,
        SCAN_KERNELS["forward", plan.variant][0],
        (gates, w_hh, h_all, c_all, lengths),
        seq_len,
        batch,
        hidden,
        dict(
            c_slots=c_all.shape[0],
            REVERSE=int(reverse),
            TRAINING=training,
            BF16_INTERPRETER=bf16_under_interpreter(gates.dtype),
        ),
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
    reverse: bool,
) -> None:
    """Backward through time: fills dgates_all [T + 1, B, 4H] (its zero slot already cleared), turns
    dc [B, H] (fp32) from dc_n into dc_0 and leaves in dh_carry [B, H] (fp32, zero in) the gradient
    carried past rows' lengths, the part of dh_0 that does not go through W_hh."""
    seq_len, batch, hidden = dh.shape
    plan = plan_scan("lstm", hidden, gates.dtype)
    launch_scan(
        plan,
        SCAN_KERNELS["backward", plan.variant][0],
        (dgates_all, gates, w_hh, c_all, dh, dc, dh_carry, lengths),
        seq_len,
        batch,
        hidden,
        dict(REVERSE=int(reverse)),
    )


def example_launch(
    cell: str, scan_pass: str, seq_len: int, batch: int, hidden: int, dtype: torch.dtype, gpu: str, reverse: bool,
    training: bool,
) -> None:  # fmt: skip
    """kernels/hardware.py's interface: the launcher of `scan_pass` called as rnnfast.functional calls it for
    one layer-direction of this shape, on fresh buffers of the meta device. The plan does not depend on `gpu`."""
    empty = lambda *shape, dtype=dtype: torch.empty(*shape, dtype=dtype, device="meta")
    gates, w_hh, lengths = empty(seq_len, batch, 4 * hidden), empty(4 * hidden, hidden), empty(batch, dtype=torch.int64)
    if scan_pass == "forward":
        c_all = empty(seq_len + 1 if training else 2, batch, hidden, dtype=torch.float32)
        lstm_scan_fwd(gates, w_hh, empty(seq_len + 1, batch, hidden), c_all, lengths, reverse, training)
        return
    fp32 = lambda *shape: empty(*shape, dtype=torch.float32)
    dgates_all, c_all, dh = (
        fp32(seq_len + 1, batch, 4 * hidden),
        fp32(seq_len + 1, batch, hidden),
        fp32(seq_len, batch, hidden),
    )
    lstm_scan_bwd(dgates_all, gates, w_hh, c_all, dh, fp32(batch, hidden), fp32(batch, hidden), lengths, reverse)
