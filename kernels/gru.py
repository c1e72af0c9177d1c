"""GRU recurrence kernels (gate order r z n, as torch.nn) and their launchers.

n = tanh(W_in x + b_in + r * (W_hn h + b_hn)) keeps the recurrent part of n, with its own bias, inside
the reset product, so the recurrent pre-activations (h W_hh^T + b_hh) are accumulated apart from the
input projection x W_ih^T + b_ih (done by the caller). Slots as in kernels/lstm.py: h_all [T + 1, B, H]
(forward reads slot t, writes t + 1; reverse reads t + 1, writes t) and dgates_h_all [T + 1, B, 3H]
(step t in slot t + REVERSE, the slot after the last processed step zero).
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
def _gru_fwd_tile(
    gates_ptr,  # [T, B, 3H] in: x W_ih^T + b_ih; out (TRAINING): activated gates r z n
    w_hh_ptr,  # [3H, H] recurrent weight, torch.nn layout
    b_hh_ptr,  # [3H] recurrent bias
    h_all_ptr,  # [T + 1, B, H] hidden-state slots, h0 already in the first read slot
    hn_all_ptr,  # [T, B, H] fp32 out (TRAINING): W_hn h_{t-1} + b_hn, the reset-gated term
    lengths_ptr,  # [B] int64 sequence lengths (T for every row of an unpadded batch)
    step,
    T,
    B,
    H,
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

    zeros = tl.zeros((BLOCK_B, BLOCK_N), tl.float32)
    acc_r = zeros + tl.load(b_hh_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
    acc_z = zeros + tl.load(b_hh_ptr + H + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
    acc_n = zeros + tl.load(b_hh_ptr + 2 * H + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
    h_prev_rows = (read_slot.to(tl.int64) * B + offs_b) * H
    for k in range(0, H, BLOCK_K):
        offs_k = k + tl.arange(0, BLOCK_K)
        mask_k = offs_k < H
        h_prev = load_h_chunk(h_all_ptr, h_prev_rows, offs_k, mask_b, mask_k, BF16_INTERPRETER)
        w_r = load_w_t_chunk(w_hh_ptr, 0, offs_k, mask_k, offs_n, mask_n, H, BF16_INTERPRETER)
        w_z = load_w_t_chunk(w_hh_ptr, 1, offs_k, mask_k, offs_n, mask_n, H, BF16_INTERPRETER)
        w_n = load_w_t_chunk(w_hh_ptr, 2, offs_k, mask_k, offs_n, mask_n, H, BF16_INTERPRETER)
        acc_r = tl.dot(h_prev, w_r, acc_r, input_precision="ieee")
        acc_z = tl.dot(h_prev, w_z, acc_z, input_precision="ieee")
        acc_n = tl.dot(h_prev, w_n, acc_n, input_precision="ieee")

    gate_offs = row_offsets(t, B, offs_b, offs_n, 3 * H)
    gate_r = sigmoid(tl.load(gates_ptr + gate_offs, mask=mask, other=0.0).to(tl.float32) + acc_r)
    gate_z = sigmoid(tl.load(gates_ptr + gate_offs + H, mask=mask, other=0.0).to(tl.float32) + acc_z)
    gate_n = tanh(tl.load(gates_ptr + gate_offs + 2 * H, mask=mask, other=0.0).to(tl.float32) + gate_r * acc_n)
    h_prev_tile = load_state_tile(h_all_ptr, read_slot, B, offs_b, offs_n, H, mask)
    h = (1.0 - gate_z) * gate_n + gate_z * h_prev_tile
    h = tl.where(active_rows(lengths_ptr, t, offs_b, mask_b), h, h_prev_tile)

    h_offs = row_offsets(write_slot, B, offs_b, offs_n, H)
    tl.store(h_all_ptr + h_offs, to_storage(h, h_all_ptr, BF16_INTERPRETER), mask=mask)
    if TRAINING:
        tl.store(gates_ptr + gate_offs, to_storage(gate_r, gates_ptr, BF16_INTERPRETER), mask=mask)
        tl.store(gates_ptr + gate_offs + H, to_storage(gate_z, gates_ptr, BF16_INTERPRETER), mask=mask)
        tl.store(gates_ptr + gate_offs + 2 * H, to_storage(gate_n, gates_ptr, BF16_INTERPRETER), mask=mask)
        tl.store(hn_all_ptr + row_offsets(t, B, offs_b, offs_n, H), acc_n, mask=mask)


@triton.jit(do_not_specialize=["T"])
def _gru_fwd_persistent_kernel(
    gates_ptr,  # [T, B, 3H]
    w_hh_ptr,  # [3H, H]
    b_hh_ptr,  # [3H]
    h_all_ptr,  # [T + 1, B, H]
    hn_all_ptr,  # [T, B, H] fp32
    lengths_ptr,  # [B] int64
    T,
    B,
    H,
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
            _gru_fwd_tile(
                gates_ptr, w_hh_ptr, b_hh_ptr, h_all_ptr, hn_all_ptr, lengths_ptr, step, T, B, H, pid_b, n_start,
                REVERSE, TRAINING, BLOCK_B, BLOCK_N, BLOCK_K, BF16_INTERPRETER,
            )  # fmt: skip
        # The next step reads every hidden unit this program just wrote.
        tl.debug_barrier()


@triton.jit(do_not_specialize=["T", "step"])
def _gru_fwd_step_kernel(
    gates_ptr,  # [T, B, 3H]
    w_hh_ptr,  # [3H, H]
    b_hh_ptr,  # [3H]
    h_all_ptr,  # [T + 1, B, H]
    hn_all_ptr,  # [T, B, H] fp32
    lengths_ptr,  # [B] int64
    step,
    T,
    B,
    H,
    REVERSE: tl.constexpr,
    TRAINING: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BF16_INTERPRETER: tl.constexpr,
):
    _gru_fwd_tile(
        gates_ptr, w_hh_ptr, b_hh_ptr, h_all_ptr, hn_all_ptr, lengths_ptr, step, T, B, H,
        tl.program_id(0), tl.program_id(1) * BLOCK_N, REVERSE, TRAINING, BLOCK_B, BLOCK_N, BLOCK_K, BF16_INTERPRETER,
    )  # fmt: skip


@triton.jit
def _gru_bwd_tile(
    dgates_h_all_ptr,  # [T + 1, B, 3H] fp32 out: gradient of the recurrent pre-activations h W_hh^T + b_hh
    dgates_x_ptr,  # [T, B, 3H] fp32 out: gradient of the input projection x W_ih^T + b_ih
    gates_ptr,  # [T, B, 3H] activated gates r z n saved by the forward
    w_hh_ptr,  # [3H, H]
    h_all_ptr,  # [T + 1, B, H] hidden-state slots saved by the forward
    hn_all_ptr,  # [T, B, H] fp32 W_hn h_{t-1} + b_hn saved by the forward
    dh_ptr,  # [T, B, H] fp32 gradient reaching h_t from the output (dh_n already added at the last step)
    dh_carry_ptr,  # [B, H] fp32 gradient reaching h_t directly (z * h_t, or carried past a row's length); zero in
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

    state_offs = row_offsets(t, B, offs_b, offs_n, H)
    carry_offs = (offs_b.to(tl.int64) * H)[:, None] + offs_n[None, :]
    dh = tl.load(dh_ptr + state_offs, mask=mask, other=0.0)
    dh += tl.load(dh_carry_ptr + carry_offs, mask=mask, other=0.0, cache_modifier=".cg")
    dh = recurrent_grad(
        dh, dgates_h_all_ptr, next_dgates_slot, w_hh_ptr, offs_b, mask_b, offs_n, mask_n, B, H, 3, BLOCK_K
    )

    gate_offs = row_offsets(t, B, offs_b, offs_n, 3 * H)
    gate_r = tl.load(gates_ptr + gate_offs, mask=mask, other=0.0).to(tl.float32)
    gate_z = tl.load(gates_ptr + gate_offs + H, mask=mask, other=0.0).to(tl.float32)
    gate_n = tl.load(gates_ptr + gate_offs + 2 * H, mask=mask, other=0.0).to(tl.float32)
    hn = tl.load(hn_all_ptr + state_offs, mask=mask, other=0.0)
    h_prev = tl.load(h_all_ptr + row_offsets(t + REVERSE, B, offs_b, offs_n, H), mask=mask, other=0.0).to(tl.float32)

    active = active_rows(lengths_ptr, t, offs_b, mask_b)
    d_n = tl.where(active, dh * (1.0 - gate_z) * (1.0 - gate_n * gate_n), 0.0)
    d_z = tl.where(active, dh * (h_prev - gate_n) * gate_z * (1.0 - gate_z), 0.0)
    d_r = d_n * hn * gate_r * (1.0 - gate_r)
    tl.store(dh_carry_ptr + carry_offs, tl.where(active, dh * gate_z, dh), mask=mask)

    dgates_h_offs = row_offsets(dgates_slot, B, offs_b, offs_n, 3 * H)
    tl.store(dgates_h_all_ptr + dgates_h_offs, d_r, mask=mask)
    tl.store(dgates_h_all_ptr + dgates_h_offs + H, d_z, mask=mask)
    tl.store(dgates_h_all_ptr + dgates_h_offs + 2 * H, d_n * gate_r, mask=mask)
    tl.store(dgates_x_ptr + gate_offs, d_r, mask=mask)
    tl.store(dgates_x_ptr + gate_offs + H, d_z, mask=mask)
    tl.store(dgates_x_ptr + gate_offs + 2 * H, d_n, mask=mask)


@triton.jit(do_not_specialize=["T"])
def _gru_bwd_persistent_kernel(
    dgates_h_all_ptr,  # [T + 1, B, 3H]
    dgates_x_ptr,  # [T, B, 3H]
    gates_ptr,  # [T, B, 3H]
    w_hh_ptr,  # [3H, H]
    h_all_ptr,  # [T + 1, B, H]
    hn_all_ptr,  # [T, B, H] fp32
    dh_ptr,  # [T, B, H] fp32
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
            _gru_bwd_tile(
                dgates_h_all_ptr, dgates_x_ptr, gates_ptr, w_hh_ptr, h_all_ptr, hn_all_ptr, dh_ptr, dh_carry_ptr,
                lengths_ptr, step, T, B, H, pid_b, n_start, REVERSE, BLOCK_B, BLOCK_N, BLOCK_K,
            )  # fmt: skip
        # The next step reads every gate gradient this program just wrote.
        tl.debug_barrier()


@triton.jit(do_not_specialize=["T", "step"])
def _gru_bwd_step_kernel(
    dgates_h_all_ptr,  # [T + 1, B, 3H]
    dgates_x_ptr,  # [T, B, 3H]
    gates_ptr,  # [T, B, 3H]
    w_hh_ptr,  # [3H, H]
    h_all_ptr,  # [T + 1, B, H]
    hn_all_ptr,  # [T, B, H] fp32
    dh_ptr,  # [T, B, H] fp32
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
    _gru_bwd_tile(
        dgates_h_all_ptr, dgates_x_ptr, gates_ptr, w_hh_ptr, h_all_ptr, hn_all_ptr, dh_ptr, dh_carry_ptr, lengths_ptr,
        step, T, B, H, tl.program_id(0), tl.program_id(1) * BLOCK_N, REVERSE, BLOCK_B, BLOCK_N, BLOCK_K,
    )  # fmt: skip


# Every kernel the planner can launch, by (pass, variant), with its fp32 pointer arguments.
SCAN_KERNELS = {
    ("forward", "persistent"): (_gru_fwd_persistent_kernel, frozenset({"hn_all_ptr"})),
    ("forward", "step"): (_gru_fwd_step_kernel, frozenset({"hn_all_ptr"})),
    ("backward", "persistent"): (
        _gru_bwd_persistent_kernel,
        frozenset({"dgates_h_all_ptr", "dgates_x_ptr", "hn_all_ptr", "dh_ptr", "dh_carry_ptr"}),
    ),
    ("backward", "step"): (
        _gru_bwd_step_kernel,
        frozenset({"dgates_h_all_ptr", "dgates_x_ptr", "hn_all_ptr", "dh_ptr", "dh_carry_ptr"}),
    ),
}


def gru_scan_fwd(
    gates: torch.Tensor,
    w_hh: torch.Tensor,
    b_hh: torch.Tensor,
    h_all: torch.Tensor,
    hn_all: torch.Tensor,
    lengths: torch.Tensor,
    reverse: bool,
    training: bool,
) -> None:
    """Runs the recurrence over gates [T, B, 3H] (overwritten with activated gates when training), filling
    the slots of h_all [T + 1, B, H] and, when training, hn_all [T, B, H] (fp32)."""
    seq_len, batch, hidden = h_all.shape[0] - 1, h_all.shape[1], h_all.shape[2]
    plan = plan_scan("gru", hidden, gates.dtype)
    launch_scan(
        plan,
        SCAN_KERNELS["forward", plan.variant][0],
        (gates, w_hh, b_hh, h_all, hn_all, lengths),
        seq_len,
        batch,
        hidden,
        dict(REVERSE=int(reverse), TRAINING=training, BF16_INTERPRETER=bf16_under_interpreter(gates.dtype)),
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
    reverse: bool,
) -> None:
    """Backward through time: fills dgates_h_all [T + 1, B, 3H] (its zero slot already cleared) and
    dgates_x [T, B, 3H], and leaves in dh_carry [B, H] (fp32, zero in) the direct part of dh_0."""
    seq_len, batch, hidden = dh.shape
    plan = plan_scan("gru", hidden, gates.dtype)
    launch_scan(
        plan,
        SCAN_KERNELS["backward", plan.variant][0],
        (dgates_h_all, dgates_x, gates, w_hh, h_all, hn_all, dh, dh_carry, lengths),
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
    gates, w_hh, b_hh = empty(seq_len, batch, 3 * hidden), empty(3 * hidden, hidden), empty(3 * hidden)
    h_all, lengths = empty(seq_len + 1, batch, hidden), empty(batch, dtype=torch.int64)
    hn_all = empty(seq_len if training else 0, batch, hidden, dtype=torch.float32)
    if scan_pass == "forward":
        gru_scan_fwd(gates, w_hh, b_hh, h_all, hn_all, lengths, reverse, training)
        return
    fp32 = lambda *shape: empty(*shape, dtype=torch.float32)
    dgates_h_all, dgates_x = fp32(seq_len + 1, batch, 3 * hidden), fp32(seq_len, batch, 3 * hidden)
    dh, dh_carry = fp32(seq_len, batch, hidden), fp32(batch, hidden)
    gru_scan_bwd(dgates_h_all, dgates_x, gates, w_hh, h_all, hn_all, dh, dh_carry, lengths, reverse)
