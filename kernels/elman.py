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


@triton.jit
def _elman_fwd_tile(
    gates_ptr,  # [T, B, H] x W_ih^T + b_ih + b_hh
    w_hh_ptr,  # [H, H] recurrent weight, torch.nn layout
    h_all_ptr,  # [T + 1, B, H] hidden-state slots, h0 already in the first read slot
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
    t = step
    if REVERSE:
        t = T - 1 - step
    read_slot = t + REVERSE
    write_slot = t + 1 - REVERSE

    offs_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_n = n_start + tl.arange(0, BLOCK_N)
    mask_b = offs_b < B
    mask_n = offs_n < H
    mask = mask_b[:, None] & mask_n[None, :]

    state_offs = ((t.to(tl.int64) * B + offs_b) * H)[:, None] + offs_n[None, :]
    acc = tl.load(gates_ptr + state_offs, mask=mask, other=0.0).to(tl.float32)
    h_prev_rows = (read_slot.to(tl.int64) * B + offs_b) * H
    for k in range(0, H, BLOCK_K):
        offs_k = k + tl.arange(0, BLOCK_K)
        mask_k = offs_k < H
        # .cg: h_{t-1} was written by other warps (or programs) in the previous step; read it from L2.
        h_prev = tl.load(
            h_all_ptr + h_prev_rows[:, None] + offs_k[None, :],
            mask=mask_b[:, None] & mask_k[None, :],
            other=0.0,
            cache_modifier=".cg",
        )
        w = tl.load(
            w_hh_ptr + offs_n[None, :] * H + offs_k[:, None],  # W_hh^T tile [BLOCK_K, BLOCK_N]
            mask=mask_k[:, None] & mask_n[None, :],
            other=0.0,
        )
        if BF16_INTERPRETER:  # the interpreter computes bf16 arithmetic on raw bits
            h_prev = h_prev.to(tl.float32)
            w = w.to(tl.float32)
        acc = tl.dot(h_prev, w, acc, input_precision="ieee")

    if RELU:
        h = tl.where(acc < 0.0, 0.0, acc)  # NaN stays NaN, as torch.relu
    else:
        h = tanh(acc)
    h_offs = ((write_slot.to(tl.int64) * B + offs_b) * H)[:, None] + offs_n[None, :]
    tl.store(h_all_ptr + h_offs, to_storage(h, h_all_ptr, BF16_INTERPRETER), mask=mask)


@triton.jit(do_not_specialize=["T"])
def _elman_fwd_persistent_kernel(
    gates_ptr,  # [T, B, H]
    w_hh_ptr,  # [H, H]
    h_all_ptr,  # [T + 1, B, H]
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
                gates_ptr, w_hh_ptr, h_all_ptr, step, T, B, H, pid_b, n_start,
                REVERSE, RELU, BLOCK_B, BLOCK_N, BLOCK_K, BF16_INTERPRETER,
            )  # fmt: skip
        # The next step reads every hidden unit this program just wrote.
        tl.debug_barrier()


@triton.jit(do_not_specialize=["T", "step"])
def _elman_fwd_step_kernel(
    gates_ptr,  # [T, B, H]
    w_hh_ptr,  # [H, H]
    h_all_ptr,  # [T + 1, B, H]
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
        gates_ptr, w_hh_ptr, h_all_ptr, step, T, B, H, tl.program_id(0), tl.program_id(1) * BLOCK_N,
        REVERSE, RELU, BLOCK_B, BLOCK_N, BLOCK_K, BF16_INTERPRETER,
    )  # fmt: skip


@triton.jit
def _elman_bwd_tile(
    dgates_all_ptr,  # [T + 1, B, H] fp32 out: gradient of the pre-activations, zero "after" slot
    w_hh_ptr,  # [H, H]
    h_all_ptr,  # [T + 1, B, H] hidden-state slots saved by the forward
    dh_ptr,  # [T, B, H] fp32 gradient reaching h_t from the output (dh_n already added at the last step)
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
    t = T - 1 - step
    if REVERSE:
        t = step
    dgates_slot = t + REVERSE
    next_dgates_slot = t + 1 - REVERSE

    offs_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_n = n_start + tl.arange(0, BLOCK_N)
    mask_b = offs_b < B
    mask_n = offs_n < H
    mask = mask_b[:, None] & mask_n[None, :]

    state_offs = ((t.to(tl.int64) * B + offs_b) * H)[:, None] + offs_n[None, :]
    dh = tl.load(dh_ptr + state_offs, mask=mask, other=0.0)
    next_dgates_rows = (next_dgates_slot.to(tl.int64) * B + offs_b) * H
    for k in range(0, H, BLOCK_K):
        offs_k = k + tl.arange(0, BLOCK_K)
        mask_k = offs_k < H
        # .cg: the next step's gradients were written by other warps (or programs).
        next_dgates = tl.load(
            dgates_all_ptr + next_dgates_rows[:, None] + offs_k[None, :],
            mask=mask_b[:, None] & mask_k[None, :],
            other=0.0,
            cache_modifier=".cg",
        )
        w = tl.load(
            w_hh_ptr + offs_k[:, None] * H + offs_n[None, :],
            mask=mask_k[:, None] & mask_n[None, :],
            other=0.0,
        )
        dh = tl.dot(next_dgates, w.to(tl.float32), dh, input_precision="ieee")

    h_offs = (((t + 1 - REVERSE).to(tl.int64) * B + offs_b) * H)[:, None] + offs_n[None, :]
    h = tl.load(h_all_ptr + h_offs, mask=mask, other=0.0).to(tl.float32)
    if RELU:
        d_pre = tl.where(h > 0.0, dh, 0.0)
    else:
        d_pre = dh * (1.0 - h * h)
    dgates_offs = ((dgates_slot.to(tl.int64) * B + offs_b) * H)[:, None] + offs_n[None, :]
    tl.store(dgates_all_ptr + dgates_offs, d_pre, mask=mask)


@triton.jit(do_not_specialize=["T"])
def _elman_bwd_persistent_kernel(
    dgates_all_ptr,  # [T + 1, B, H]
    w_hh_ptr,  # [H, H]
    h_all_ptr,  # [T + 1, B, H]
    dh_ptr,  # [T, B, H] fp32
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
                dgates_all_ptr, w_hh_ptr, h_all_ptr, dh_ptr, step, T, B, H, pid_b, n_start,
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
        dgates_all_ptr, w_hh_ptr, h_all_ptr, dh_ptr, step, T, B, H, tl.program_id(0), tl.program_id(1) * BLOCK_N,
        REVERSE, RELU, BLOCK_B, BLOCK_N, BLOCK_K,
    )  # fmt: skip


# Every kernel the planner can launch, by (pass, variant), with its fp32 pointer arguments.
SCAN_KERNELS = {
    ("forward", "persistent"): (_elman_fwd_persistent_kernel, frozenset()),
    ("forward", "step"): (_elman_fwd_step_kernel, frozenset()),
    ("backward", "persistent"): (_elman_bwd_persistent_kernel, frozenset({"dgates_all_ptr", "dh_ptr"})),
    ("backward", "step"): (_elman_bwd_step_kernel, frozenset({"dgates_all_ptr", "dh_ptr"})),
}


def elman_scan_fwd(gates: torch.Tensor, w_hh: torch.Tensor, h_all: torch.Tensor, reverse: bool, relu: bool) -> None:
    """Runs the recurrence over gates [T, B, H], filling the slots of h_all [T + 1, B, H]."""
    seq_len, batch, hidden = h_all.shape[0] - 1, h_all.shape[1], h_all.shape[2]
    plan = plan_scan(hidden, gates.dtype)
    launch_scan(
        plan,
        SCAN_KERNELS["forward", plan.variant][0],
        (gates, w_hh, h_all),
        seq_len,
        batch,
        hidden,
        dict(REVERSE=int(reverse), RELU=relu, BF16_INTERPRETER=bf16_under_interpreter(gates.dtype)),
    )


def elman_scan_bwd(
    dgates_all: torch.Tensor, w_hh: torch.Tensor, h_all: torch.Tensor, dh: torch.Tensor, reverse: bool, relu: bool
) -> None:
    """Backward through time: fills dgates_all [T + 1, B, H] (its zero slot already cleared)."""
    seq_len, batch, hidden = dh.shape
    plan = plan_scan(hidden, h_all.dtype)
    launch_scan(
        plan,
        SCAN_KERNELS["backward", plan.variant][0],
        (dgates_all, w_hh, h_all, dh),
        seq_len,
        batch,
        hidden,
        dict(REVERSE=int(reverse), RELU=relu),
    )
