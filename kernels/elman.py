"""Elman RNN recurrence kernels (torch.nn.RNN, nonlinearity tanh or relu) and their launchers.

h_t = act(x W_ih^T + b_ih + b_hh + h_{t-1} W_hh^T), the input projection done by the caller. Slots as in
kernels/lstm.py: h_all [T + 1, B, H] and dgates_all [T + 1, B, H]. The backward needs no saved gates:
act'(pre) is read off h_t itself (1 - h^2 for tanh, h > 0 for relu).
"""

import torch
import triton
import triton.language as tl

from .activations import tanh, to_storage
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
def _elman_fwd_tile(
    gates_ptr,  # [T, B, H] x W_ih^T + b_ih + b_hh
    w_hh_ptr,  # [H, H] recurrent weight, torch.nn layout
    h_all_ptr,  # [T + 1, B, H] hidden-state slots, h0 already in the first read slot
    lengths_ptr,  # [B] int64 sequence lengths (T for every row of an unpadded batch)
    step,
    T,
    B,
    H,
    pid_b,
    n_start,
    REVERSE: tl.constexpr,
    RELU: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BF16_INTERPRETER: tl.constexpr,
):
    t, read_slot, write_slot = forward_step_slots(step, T, REVERSE)
    offs_b, offs_n, mask_b, mask_n, mask = tile_offsets(pid_b, n_start, B, H, BLOCK_B, BLOCK_N)

    acc = tl.load(gates_ptr + row_offsets(t, B, offs_b, offs_n, H), mask=mask, other=0.0).to(tl.float32)
    h_prev_rows = (read_slot.to(tl.int64) * B + offs_b) * H
    for k in range(0, H, BLOCK_K):
        offs_k = k + tl.arange(0, BLOCK_K)
        mask_k = offs_k < H
        h_prev = load_h_chunk(h_all_ptr, h_prev_rows, offs_k, mask_b, mask_k, BF16_INTERPRETER)
        w = load_w_t_chunk(w_hh_ptr, 0, offs_k, mask_k, offs_n, mask_n, H, BF16_INTERPRETER)
        acc = tl.dot(h_prev, w, acc, input_precision="ieee")

    if RELU:
        h = tl.where(acc < 0.0, 0.0, acc)  # NaN stays NaN, as torch.relu
    else:
        h = tanh(acc)
    h_prev_tile = load_state_tile(h_all_ptr, read_slot, B, offs_b, offs_n, H, mask)
    h = tl.where(active_rows(lengths_ptr, t, offs_b, mask_b), h, h_prev_tile)
    h_offs = row_offsets(write_slot, B, offs_b, offs_n, H)
    tl.store(h_all_ptr + h_offs, to_storage(h, h_all_ptr, BF16_INTERPRETER), mask=mask)


@triton.jit(do_not_specialize=["T"])
def _elman_fwd_persistent_kernel(
    gates_ptr,  # [T, B, H]
    w_hh_ptr,  # [H, H]
    h_all_ptr,  # [T + 1, B, H]
    lengths_ptr,  # [B] int64
    T,
    B,
    H,
    REVERSE: tl.constexpr,
    RELU: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BF16_INTERPRETER: tl.constexpr,
):
    pid_b = tl.program_id(0)
    for step in range(T):
        for n_start in range(0, H, BLOCK_N):
            _elman_fwd_tile(
                gates_ptr, w_hh_ptr, h_all_ptr, lengths_ptr, step, T, B, H, pid_b, n_start,
                REVERSE, RELU, BLOCK_B, BLOCK_N, BLOCK_K, BF16_INTERPRETER,
            )  # fmt: skip
        # The next step reads every hidden unit this program just wrote.
        tl.debug_barrier()


@triton.jit(do_not_specialize=["T", "step"])
def _elman_fwd_step_kernel(
    gates_ptr,  # [T, B, H]
    w_hh_ptr,  # [H, H]
    h_all_ptr,  # [T + 1, B, H]
    lengths_ptr,  # [B] int64
    step,
    T,
    B,
    H,
    REVERSE: tl.constexpr,
    RELU: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BF16_INTERPRETER: tl.constexpr,
):
    _elman_fwd_tile(
        gates_ptr, w_hh_ptr, h_all_ptr, lengths_ptr, step, T, B, H, tl.program_id(0), tl.program_id(1) * BLOCK_N,
        REVERSE, RELU, BLOCK_B, BLOCK_N, BLOCK_K, BF16_INTERPRETER,
    )  # fmt: skip


@triton.jit
def _elman_bwd_tile(
    dgates_all_ptr,  # [T + 1, B, H] fp32 out: gradient of the pre-activations, zero "after" slot
    w_hh_ptr,  # [H, H]
    h_all_ptr,  # [T + 1, B, H] hidden-state slots saved by the forward
    dh_ptr,  # [T, B, H] fp32 gradient reaching h_t from the output (dh_n already added at the last step)
    dh_carry_ptr,  # [B, H] fp32 gradient carried past the steps beyond a row's length; zero in
    lengths_ptr,  # [B] int64 sequence lengths
    step,
    T,
    B,
    H,
    pid_b,
    n_start,
    REVERSE: tl.constexpr,
    RELU: tl.constexpr,
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
        dh, dgates_all_ptr, next_dgates_slot, w_hh_ptr, offs_b, mask_b, offs_n, mask_n, B, H, 1, BLOCK_K
    )
    h = tl.load(h_all_ptr + row_offsets(t + 1 - REVERSE, B, offs_b, offs_n, H), mask=mask, other=0.0).to(tl.float32)
    if RELU:
        d_pre = tl.where(h > 0.0, dh, 0.0)
    else:
        d_pre = dh * (1.0 - h * h)
    active = active_rows(lengths_ptr, t, offs_b, mask_b)
    d_pre = tl.where(active, d_pre, 0.0)
    tl.store(dh_carry_ptr + carry_offs, tl.where(active, 0.0, dh), mask=mask)
    tl.store(dgates_all_ptr + row_offsets(dgates_slot, B, offs_b, offs_n, H), d_pre, mask=mask)


@triton.jit(do_not_specialize=["T"])
def _elman_bwd_persistent_kernel(
    dgates_all_ptr,  # [T + 1, B, H]
    w_hh_ptr,  # [H, H]
    h_all_ptr,  # [T + 1, B, H]
    dh_ptr,  # [T, B, H] fp32
    dh_carry_ptr,  # [B, H] fp32
    lengths_ptr,  # [B] int64
    T,
    B,
    H,
    REVERSE: tl.constexpr,
    RELU: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    pid_b = tl.program_id(0)
    for step in range(T):
        for n_start in range(0, H, BLOCK_N):
            _elman_bwd_tile(
                dgates_all_ptr, w_hh_ptr, h_all_ptr, dh_ptr, dh_carry_ptr, lengths_ptr, step, T, B, H, pid_b, n_start,
                REVERSE, RELU, BLOCK_B, BLOCK_N, BLOCK_K,
            )  # fmt: skip
        # The next step reads every gradient this program just wrote.
        tl.debug_barrier()


@triton.jit(do_not_specialize=["T", "step"])
def _elman_bwd_step_kernel(
    dgates_all_ptr,  # [T + 1, B, H]
    w_hh_ptr,  # [H, H]
    h_all_ptr,  # [T + 1, B, H]
    dh_ptr,  # [T, B, H] fp32
    dh_carry_ptr,  # [B, H] fp32
    lengths_ptr,  # [B] int64
    step,
    T,
    B,
    H,
    REVERSE: tl.constexpr,
    RELU: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    _elman_bwd_tile(
        dgates_all_ptr, w_hh_ptr, h_all_ptr, dh_ptr, dh_carry_ptr, lengths_ptr, step, T, B, H,
        tl.program_id(0), tl.program_id(1) * BLOCK_N, REVERSE, RELU, BLOCK_B, BLOCK_N, BLOCK_K,
    )  # fmt: skip


# Every kernel the planner can launch, by (pass, variant), with its fp32 pointer arguments.
SCAN_KERNELS = {
    ("forward", "persistent"): (_elman_fwd_persistent_kernel, frozenset()),
    ("forward", "step"): (_elman_fwd_step_kernel, frozenset()),
    ("backward", "persistent"): (_elman_bwd_persistent_kernel, frozenset({"dgates_all_ptr", "dh_ptr", "dh_carry_ptr"})),
    ("backward", "step"): (_elman_bwd_step_kernel, frozenset({"dgates_all_ptr", "dh_ptr", "dh_carry_ptr"})),
}


def elman_scan_fwd(
    gates: torch.Tensor, w_hh: torch.Tensor, h_all: torch.Tensor, lengths: torch.Tensor, reverse: bool, relu: bool
) -> None:
    """Runs the recurrence over gates [T, B, H], filling the slots of h_all [T + 1, B, H]; rows stop
    updating at their length (lengths [B] int64)."""
    seq_len, batch, hidden = h_all.shape[0] - 1, h_all.shape[1], h_all.shape[2]
    plan = plan_scan("elman", hidden, gates.dtype)
    launch_scan(
        plan,
        SCAN_KERNELS["forward", plan.variant][0],
        (gates, w_hh, h_all, lengths),
        seq_len,
        batch,
        hidden,
        dict(REVERSE=int(reverse), RELU=relu, BF16_INTERPRETER=bf16_under_interpreter(gates.dtype)),
    )


def elman_scan_bwd(
    dgates_all: torch.Tensor,
    w_hh: torch.Tensor,
    h_all: torch.Tensor,
    dh: torch.Tensor,
    dh_carry: torch.Tensor,
    lengths: torch.Tensor,
    reverse: bool,
    relu: bool,
) -> None:
    """Backward through time: fills dgates_all [T + 1, B, H] (its zero slot already cleared) and leaves
    in dh_carry [B, H] (fp32, zero in) the gradient carried past rows' lengths."""
    seq_len, batch, hidden = dh.shape
    plan = plan_scan("elman", hidden, h_all.dtype)
    launch_scan(
        plan,
        SCAN_KERNELS["backward", plan.variant][0],
        (dgates_all, w_hh, h_all, dh, dh_carry, lengths),
        seq_len,
        batch,
        hidden,
        dict(REVERSE=int(reverse), RELU=relu),
    )


def example_launch(
    cell: str, scan_pass: str, seq_len: int, batch: int, hidden: int, dtype: torch.dtype, gpu: str, reverse: bool,
    training: bool,
) -> None:  # fmt: skip
    """kernels/hardware.py's interface: the launcher of `scan_pass` called as rnnfast.functional calls it for
    one layer-direction of this shape (cell rnn_tanh or rnn_relu), on fresh buffers of the meta device. The
    plan does not depend on `gpu`; the kernel's forward is the same whether training or not."""
    empty = lambda *shape, dtype=dtype: torch.empty(*shape, dtype=dtype, device="meta")
    w_hh, h_all, lengths = empty(hidden, hidden), empty(seq_len + 1, batch, hidden), empty(batch, dtype=torch.int64)
    relu = cell == "rnn_relu"
    if scan_pass == "forward":
        elman_scan_fwd(empty(seq_len, batch, hidden), w_hh, h_all, lengths, reverse, relu)
        return
    fp32 = lambda *shape: empty(*shape, dtype=torch.float32)
    dgates_all, dh, dh_carry = fp32(seq_len + 1, batch, hidden), fp32(seq_len, batch, hidden), fp32(batch, hidden)
    elman_scan_bwd(dgates_all, w_hh, h_all, dh, dh_carry, lengths, reverse, relu)
