"""Building blocks shared by every cell's scan kernels: tile offsets, time slots, the streamed recurrent
matmul of the forward and the recurrent gradient of the backward.

Slot conventions (see kernels/lstm.py): the forward reads h_{t-1} from slot t + REVERSE and writes h_t
to slot t + 1 - REVERSE; the backward writes step t's gate gradients to slot t + REVERSE and reads the
gradients of the step processed before it (t + 1 forward, t - 1 reverse) from slot t + 1 - REVERSE.
"""

import triton
import triton.language as tl


@triton.jit
def tile_offsets(pid_b, n_start, B, H, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr):
    """Batch rows and hidden units of this tile, their masks, and the 2-D mask."""
    offs_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_n = n_start + tl.arange(0, BLOCK_N)
    mask_b = offs_b < B
    mask_n = offs_n < H
    return offs_b, offs_n, mask_b, mask_n, mask_b[:, None] & mask_n[None, :]


@triton.jit
def forward_step_slots(step, T, REVERSE: tl.constexpr):
    """(t, slot of h_{t-1}, slot of h_t) for the step-th step of a forward pass."""
    t = step
    if REVERSE:
        t = T - 1 - step
    return t, t + REVERSE, t + 1 - REVERSE


@triton.jit
def backward_step_slots(step, T, REVERSE: tl.constexpr):
    """(t, slot of step t's gate gradients, slot of the previously processed step's) for the step-th step
    of a backward pass, which walks time in the opposite order of the forward."""
    t = T - 1 - step
    if REVERSE:
        t = step
    return t, t + REVERSE, t + 1 - REVERSE


@triton.jit
def row_offsets(index, B, offs_b, offs_n, width):
    """Offsets [BLOCK_B, BLOCK_N] of columns offs_n in rows (index, offs_b) of a [*, B, width] buffer,
    in int64: index * B * width passes 2^31 on long sequences."""
    return ((index.to(tl.int64) * B + offs_b) * width)[:, None] + offs_n[None, :]


@triton.jit
def load_h_chunk(h_all_ptr, h_rows, offs_k, mask_b, mask_k, BF16_INTERPRETER: tl.constexpr):
    """h_{t-1}[:, offs_k] as a dot operand [BLOCK_B, BLOCK_K]; h_rows [BLOCK_B] are row offsets."""
    # .cg: h_{t-1} was written by other warps (or programs) in the previous step; read it from L2.
    h = tl.load(
        h_all_ptr + h_rows[:, None] + offs_k[None, :],
        mask=mask_b[:, None] & mask_k[None, :],
        other=0.0,
        cache_modifier=".cg",
    )
    if BF16_INTERPRETER:  # the interpreter computes bf16 arithmetic on raw bits
        h = h.to(tl.float32)
    return h


@triton.jit
def load_w_t_chunk(w_hh_ptr, gate, offs_k, mask_k, offs_n, mask_n, H, BF16_INTERPRETER: tl.constexpr):
    """W_hh^T rows offs_k, columns offs_n of `gate`, as a dot operand [BLOCK_K, BLOCK_N] (W_hh is torch.nn's
    [G*H, H])."""
    w = tl.load(
        w_hh_ptr + (gate * H + offs_n[None, :]) * H + offs_k[:, None],
        mask=mask_k[:, None] & mask_n[None, :],
        other=0.0,
    )
    if BF16_INTERPRETER:
        w = w.to(tl.float32)
    return w


@triton.jit
def recurrent_grad(
    dh,  # [BLOCK_B, BLOCK_N] fp32 gradient reaching h_t from above
    dgates_all_ptr,  # [T + 1, B, GATES*H] fp32 gate gradients (recurrent pre-activations)
    next_slot,
    w_hh_ptr,  # [GATES*H, H]
    offs_b,
    mask_b,
    offs_n,
    mask_n,
    B,
    H,
    GATES: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """dh + dgates[next_slot] @ W_hh for this tile: the gradient h_t receives through the next step."""
    next_rows = (next_slot.to(tl.int64) * B + offs_b) * GATES * H
    for k in range(0, GATES * H, BLOCK_K):
        offs_k = k + tl.arange(0, BLOCK_K)
        mask_k = offs_k < GATES * H
        # .cg: the next step's gate gradients were written by other warps (or programs).
        next_dgates = tl.load(
            dgates_all_ptr + next_rows[:, None] + offs_k[None, :],
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
    return dh


@triton.jit
def active_rows(lengths_ptr, t, offs_b, mask_b):
    """[BLOCK_B, 1] mask of the rows whose sequence covers time t. Rows past their length carry their
    state through unchanged (forward: to h_n; reverse: h0 down to their last valid step)."""
    return (t < tl.load(lengths_ptr + offs_b, mask=mask_b, other=0))[:, None]


@triton.jit
def load_state_tile(state_ptr, slot, B, offs_b, offs_n, H, mask):
    """A [BLOCK_B, BLOCK_N] tile of slot `slot` of a [*, B, H] state buffer, in fp32."""
    # .cg: written in the previous step, possibly by other warps (or programs).
    offs = row_offsets(slot, B, offs_b, offs_n, H)
    return tl.load(state_ptr + offs, mask=mask, other=0.0, cache_modifier=".cg").to(tl.float32)
