"""Building blocks shared by every cell's scan kernels: time slots, state tiles, the weight slice and the
recurrent dot (stationary or streamed), and the grid barrier.

Slot conventions (see kernels/lstm.py; reverse is 1 for the reverse direction, else 0): the forward reads
h_{t-1} from slot t + reverse and writes h_t to slot t + 1 - reverse; the backward writes step t's gate
gradients to slot t + reverse and reads the gradients of the step processed before it (t + 1 forward,
t - 1 reverse) from slot t + 1 - reverse.
"""

import triton
import triton.language as tl

from .activations import to_storage

# tl.atomic_poll (an acquire poll with a timeout) arrived in Triton 3.9; torch's CUDA wheels pin older
# releases (torch 2.11: Triton 3.6). There the barrier's wait is the same poll written in PTX (_POLL_ASM),
# one instruction to the compiler: written as a Triton loop of acquire loads, the loads of the next step
# issued before the wait stayed live across the loop and the H100's B64 H768 forwards spilled 96-160 B
# at 255 registers (LSTM, GRU; Triton 3.6.0, compiled), none with the PTX poll. The interpreter runs no
# inline PTX: there grid barriers need Triton 3.9 (configs.plan_target).
HAS_ATOMIC_POLL: tl.constexpr = tl.constexpr(hasattr(tl, "atomic_poll"))
# Every thread loads the counter until it reaches $2 or %globaltimer has advanced $3 ns since the first
# load (always at least one load); $0 is the last value loaded.
_POLL_ASM: tl.constexpr = tl.constexpr("""{
    .reg .pred done;
    .reg .u64 start, now;
    mov.u64 start, %globaltimer;
    POLL:
    ld.acquire.gpu.global.b32 $0, [$1];
    setp.ge.s32 done, $0, $2;
    @done bra END;
    mov.u64 now, %globaltimer;
    sub.u64 now, now, start;
    setp.lt.u64 done, now, $3;
    @done bra POLL;
    END:
}""")


@triton.jit
def program_direction(direction_start):
    """The direction of this program's scan, as torch.nn numbers them: 0 forward in time, 1 reverse. A
    launch runs directions direction_start ... along grid axis 2 (both directions of a bidirectional
    layer in one launch, or one of them); every per-direction buffer has a leading direction axis."""
    return (direction_start + tl.program_id(2)).to(tl.int64)


# A wavefront launch (WAVEFRONT kernels, rnnfast/wavefront.py) runs a unidirectional stack: grid axis 2 is
# the layer ("lane"), and layer l runs WAVEFRONT_LAG * l steps behind layer 0 in the forward (the
# backward: WAVEFRONT_LAG * (L - 1 - l) steps behind the top layer). Two steps behind, the input a layer
# reads from the layer below (forward: y_t; backward: the gradient of the layer above's input gates) was
# published one grid barrier before the barrier it waits at while loading it, so that load and its dot
# run during the wait. One step behind it would be published at that very barrier (a race: the negative
# control of tests/test_wavefront.py).
WAVEFRONT_LAG: tl.constexpr = tl.constexpr(2)


@triton.jit
def lane_schedule(lane, num_layers, WAVEFRONT: tl.constexpr, BACKWARD: tl.constexpr):
    """(reverse, lag) of a program's lane (program_direction): outside a wavefront the lane is a direction
    (reverse = lane) with no lag; in a wavefront it is a layer, run forward in time, `lag` launch steps
    behind the stack's first layer of the pass (layer 0 forward, layer L - 1 backward)."""
    if WAVEFRONT:
        if BACKWARD:
            lag = WAVEFRONT_LAG * (num_layers - 1 - lane)
        else:
            lag = WAVEFRONT_LAG * lane
        return lane * 0, lag
    else:
        return lane, lane * 0


@triton.jit
def running_masks(t, T, mask_b, store_mask, WAVEFRONT: tl.constexpr):
    """(rows mask, store mask) of a step at time t: a wavefront's lane runs nothing at launch steps before
    its first time step or after its last (t outside [0, T)), it only meets the barrier. Outside a
    wavefront every step runs: the masks as they are (the kernels compile as without wavefronts)."""
    if WAVEFRONT:
        running = (t >= 0) & (t < T)
        # (A where, not mask & running: the interpreter turns a tensor & scalar of booleans into integers.)
        return tl.where(running, mask_b, False), tl.where(running, store_mask, False)
    else:
        return mask_b, store_mask


@triton.jit
def active_rows(t, lengths, rows_mask, WAVEFRONT: tl.constexpr):
    """[BLOCK_B, 1]: the rows step t updates, those within their length (and, in a wavefront, none
    where the lane does not run: rows_mask off, recurrence.running_masks)."""
    if WAVEFRONT:
        return ((t < lengths) & rows_mask)[:, None]
    else:
        return (t < lengths)[:, None]


@triton.jit
def first_step_mask(mask, t, T, WAVEFRONT: tl.constexpr):
    """The mask of the tiles a launch loads for its first step, at time t: off where a wavefront's lane
    has not started yet (ahead_mask), `mask` outside a wavefront (every launch starts at a step it runs)."""
    if WAVEFRONT:
        return ahead_mask(mask, t, T)
    else:
        return mask


@triton.jit
def _noisy_input(below_ptr, y_rows, noise_ptr, noise_rows, in_k, offs_k, HAS_NOISE: tl.constexpr,
                 BF16_INTERPRETER: tl.constexpr):  # fmt: skip
    """A tile of y_t (times its dropout noise, rounded to the layer's dtype as torch.nn's dropout does)."""
    y = tl.load(below_ptr + y_rows + offs_k, mask=in_k, other=0.0)
    if HAS_NOISE:
        noise = tl.load(noise_ptr + noise_rows + offs_k, mask=in_k, other=0.0)
        y = to_storage(y.to(tl.float32) * noise.to(tl.float32), below_ptr, BF16_INTERPRETER)
    return y


@triton.jit
def input_from_below(
    h_all_ptr, noise_ptr, w_in_ptr, w_in, t, lane, T, B, H, offs_b, mask_b, w_cols, mask_j,
    COLUMNS: tl.constexpr, IN_PIECES: tl.constexpr, K_SPLIT: tl.constexpr, HAS_NOISE: tl.constexpr,
    BLOCK_K: tl.constexpr, DOT_PRECISION: tl.constexpr, BF16_INTERPRETER: tl.constexpr,
):  # fmt: skip
    """A wavefront forward's input projection of step t in the kernel, for layer `lane` > 0: the
    program's columns (w_cols, weight_slice's) of (noise_t * y_t) @ W_in^T, [BLOCK_B, COLUMNS] fp32, where
    y_t is h_t of the layer below (slot t + 1 of its h_all, lane - 1's [T + 1, B, H] just before
    h_all_ptr's), noise_t the layer's dropout scales (noise_ptr [T, B, H], HAS_NOISE; y_t * noise_t
    rounded to the layer's dtype, as torch.nn's dropout computes it) and W_in [G*H, H] its input weight:
    on chip (w_in, weight_slice's pieces IN_PIECES, each split K_SPLIT ways across warps as the recurrent
    slice) or, with IN_PIECES empty, streamed from L2 in BLOCK_K pieces. Zero for layer 0 (its projection
    is a GEMM before the launch) and outside [0, T)."""
    k_size = H * ((lane > 0) & (t >= 0) & (t < T)).to(tl.int32)
    below_ptr = h_all_ptr - (T + 1) * B * H
    y_rows = ((t + 1).to(tl.int64) * B + offs_b) * H
    noise_rows = (t.to(tl.int64) * B + offs_b) * H
    acc = tl.zeros((offs_b.shape[0], COLUMNS), tl.float32)
    if len(IN_PIECES) == 0:
        for k in range(0, k_size, BLOCK_K):
            w = load_weight_piece(w_in_ptr, w_cols, mask_j, k, k_size, 1, BLOCK_K, 1, BF16_INTERPRETER)
            offs_k = k + tl.arange(0, BLOCK_K)[None, :]
            in_k = mask_b[:, None] & (offs_k < k_size)
            y = _noisy_input(below_ptr, y_rows[:, None], noise_ptr, noise_rows[:, None], in_k, offs_k, HAS_NOISE,
                             BF16_INTERPRETER)  # fmt: skip
            acc = tl.dot(y.to(w.dtype), w, acc, input_precision=DOT_PRECISION)
    else:
        k_start = 0
        for i in tl.static_range(len(IN_PIECES)):
            if K_SPLIT == 1:
                offs_k = k_start + tl.arange(0, IN_PIECES[i])[None, :]
                rows, rows_mask = y_rows[:, None], mask_b[:, None]
                n_rows = noise_rows[:, None]
            else:
                share = tl.arange(0, K_SPLIT)[:, None, None] * (IN_PIECES[i] // K_SPLIT)
                offs_k = k_start + share + tl.arange(0, IN_PIECES[i] // K_SPLIT)[None, None, :]
                rows, rows_mask = y_rows[None, :, None], mask_b[None, :, None]
                n_rows = noise_rows[None, :, None]
            in_k = rows_mask & (offs_k < k_size)
            y = _noisy_input(below_ptr, rows, noise_ptr, n_rows, in_k, offs_k, HAS_NOISE, BF16_INTERPRETER)
            if i == 0:
                part = tl.dot(y.to(w_in[i].dtype), w_in[i], input_precision=DOT_PRECISION)
            else:
                part = tl.dot(y.to(w_in[i].dtype), w_in[i], part, input_precision=DOT_PRECISION)
            k_start += IN_PIECES[i]
        if K_SPLIT > 1:
            part = tl.sum(part, axis=0)
        acc += part
    return acc


@triton.jit
def above_weight_slice(w_in_ptr, offs_n, mask_n, lane, num_layers, H, GATES: tl.constexpr, IN_PIECES: tl.constexpr,
                       K_SPLIT: tl.constexpr, BF16_INTERPRETER: tl.constexpr):  # fmt: skip
    """A wavefront backward's slice of the layer above's input weight W_in[:, units] ([G*H, BLOCK_N] as
    IN_PIECES pieces of G*H, each split K_SPLIT ways as the recurrent slice) held on chip for
    gradient_from_above; () when IN_PIECES is empty (streamed). The top layer's lane loads zeros (there is
    no layer above: its slot past the end of W_in is never read)."""
    pieces = ()
    if len(IN_PIECES) > 0:
        k_size = GATES * H * (lane < num_layers - 1).to(tl.int32)
        pieces = weight_slice(w_in_ptr, offs_n, mask_n, k_size, H, IN_PIECES, K_SPLIT, 1, 0, BF16_INTERPRETER)
    return pieces


@triton.jit
def gradient_from_above(
    dgates_above_ptr, slot, noise_ptr, w_in_ptr, w_in, t, lane, num_layers, T, B, H, offs_b, mask_b, offs_n,
    mask_n, GATES: tl.constexpr, IN_PIECES: tl.constexpr, K_SPLIT: tl.constexpr, HAS_NOISE: tl.constexpr,
    BLOCK_K: tl.constexpr, DOT_PRECISION: tl.constexpr, BF16_INTERPRETER: tl.constexpr,
):  # fmt: skip
    """A wavefront backward's gradient reaching layer `lane`'s h_t from the layer above (lane < L - 1):
    the program's units of (dgates_t @ W_in) * noise_t, [BLOCK_B, BLOCK_N] fp32, where dgates_t is the
    gradient of the layer above's input gates at step t (slot `slot` of dgates_above_ptr [*, B, G*H]),
    W_in [G*H, H] its input weight: on chip (w_in, above_weight_slice's pieces IN_PIECES) or, with
    IN_PIECES empty, streamed in BLOCK_K pieces of G*H; noise_t its dropout scales ([T, B, H],
    HAS_NOISE). Zero for the top layer and outside [0, T)."""
    k_size = GATES * H * ((lane < num_layers - 1) & (t >= 0) & (t < T)).to(tl.int32)
    rows = (slot.to(tl.int64) * B + offs_b) * (GATES * H)
    acc = tl.zeros((offs_b.shape[0], offs_n.shape[0]), tl.float32)
    if len(IN_PIECES) == 0:
        for k in range(0, k_size, BLOCK_K):
            w = load_weight_piece(w_in_ptr, offs_n, mask_n, k, k_size, H, BLOCK_K, 1, BF16_INTERPRETER)
            acc = _dot_piece(dgates_above_ptr, rows, mask_b, k, k_size, w, BLOCK_K, 1, DOT_PRECISION, acc)
    else:
        part = _dot_piece(dgates_above_ptr, rows, mask_b, 0, k_size, w_in[0], IN_PIECES[0], K_SPLIT, DOT_PRECISION,
                          None)  # fmt: skip
        k_start = IN_PIECES[0]
        for i in tl.static_range(1, len(IN_PIECES)):
            part = _dot_piece(dgates_above_ptr, rows, mask_b, k_start, k_size, w_in[i], IN_PIECES[i], K_SPLIT,
                              DOT_PRECISION, part)  # fmt: skip
            k_start += IN_PIECES[i]
        if K_SPLIT > 1:
            part = tl.sum(part, axis=0)
        acc += part
    if HAS_NOISE:
        mask = tl.where(k_size > 0, mask_b[:, None] & mask_n[None, :], False)
        noise = tl.load(noise_ptr + row_offsets(t, B, offs_b, offs_n, H), mask=mask, other=0.0)
        acc = acc * noise.to(tl.float32)
    return acc


@triton.jit
def hidden_tile(K_GROUPS: tl.constexpr):
    """The index of this program's tile of hidden units: grid axis 0 runs K_GROUPS programs per tile
    (programs sharing the recurrent dot's K, recurrence.k_group_sum), one after the other."""
    return tl.program_id(0) // K_GROUPS


@triton.jit
def program_tile(B, H, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, K_GROUPS: tl.constexpr):
    """This program's batch rows and hidden units (grid axes 1 and 0) with their masks: (offs_b [BLOCK_B],
    offs_n [BLOCK_N], mask_b, mask_n, mask [BLOCK_B, BLOCK_N], store_mask). Every program of a K group
    computes the same tile; only the group's first stores it (store_mask: mask there, else all off)."""
    offs_b = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_n = hidden_tile(K_GROUPS) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_b = offs_b < B
    mask_n = offs_n < H
    mask = mask_b[:, None] & mask_n[None, :]
    # (A where, not mask & leader: the interpreter turns a tensor & scalar of booleans into integers.)
    store_mask = tl.where(tl.program_id(0) % K_GROUPS == 0, mask, False)
    return offs_b, offs_n, mask_b, mask_n, mask, store_mask


@triton.jit
def forward_step_slots(step, T, reverse):
    """(t, slot of h_{t-1}, slot of h_t) for the step-th step of a forward pass (reverse: 0 or 1)."""
    t = tl.where(reverse == 1, T - 1 - step, step)
    return t, t + reverse, t + 1 - reverse


@triton.jit
def backward_step_slots(step, T, reverse):
    """(t, slot of step t's gate gradients, slot of the previously processed step's) for the step-th step
    of a backward pass, which walks time in the opposite order of the forward."""
    t = tl.where(reverse == 1, step, T - 1 - step)
    return t, t + reverse, t + 1 - reverse


@triton.jit
def ahead_mask(mask, t_next, T):
    """`mask` for tiles of step t_next loaded a step ahead, while the grid barrier waits (they do not
    depend on the recurrence): off past either end of the sequence. Without the barrier a launch runs
    one step, and its loads ahead fetch the next launch's step for nothing."""
    # (A where, not mask & in_range: the interpreter turns a tensor & scalar of booleans into integers.)
    return tl.where((t_next >= 0) & (t_next < T), mask, False)


@triton.jit
def row_offsets(index, B, offs_b, offs_n, width):
    """Offsets [BLOCK_B, BLOCK_N] of columns offs_n in rows (index, offs_b) of a [*, B, width] buffer,
    in int64: index * B * width passes 2^31 on long sequences."""
    return ((index.to(tl.int64) * B + offs_b) * width)[:, None] + offs_n[None, :]


@triton.jit
def gate_tiles(gates_ptr, t, B, H, offs_b, offs_n, mask, GATES: tl.constexpr):
    """The program's tiles of each gate at step t of a [T, B, GATES * H] buffer, in fp32: a tuple of
    GATES [BLOCK_B, BLOCK_N] tensors."""
    offs = row_offsets(t, B, offs_b, offs_n, GATES * H)
    tiles = ()
    for gate in tl.static_range(GATES):
        tiles = tiles + (tl.load(gates_ptr + offs + gate * H, mask=mask, other=0.0).to(tl.float32),)
    return tiles


@triton.jit
def load_state_tile(state_ptr, slot, B, offs_b, offs_n, H, mask):
    """A [BLOCK_B, BLOCK_N] tile of slot `slot` of a [*, B, H] state buffer, in fp32."""
    # .cg: written in the previous step, possibly by other warps (or programs).
    offs = row_offsets(slot, B, offs_b, offs_n, H)
    return tl.load(state_ptr + offs, mask=mask, other=0.0, cache_modifier=".cg").to(tl.float32)


# Weight-stationary building blocks (issue 11). A program's slice of W_hh is a tuple of tensors, one per
# piece of K (K_PIECES, configs.k_pieces), loaded once before the time loop. With K_SPLIT > 1 each piece is
# held as [K_SPLIT, piece // K_SPLIT, columns] and the step's dot is batched over that first axis: Triton
# gives each warp its own share of K (mma.sync), so a warp's chain of dependent MMAs is K_SPLIT times
# shorter, and the partial products are summed across warps once per step. With K_SPLIT = 1 a piece is
# [piece, columns] and one 2-D dot runs along all of K (a warpgroup MMA on sm_90 for 64-row tiles).


@triton.jit
def load_weight_piece(
    w_ptr, col_offs, col_mask, k_start, k_size, k_stride,
    K_PIECE: tl.constexpr, K_SPLIT: tl.constexpr, BF16_INTERPRETER: tl.constexpr,
):  # fmt: skip
    """A piece of a weight slice, [K_PIECE, columns] or [K_SPLIT, K_PIECE // K_SPLIT, columns]: element
    (k, j) at w_ptr + (k_start + k) * k_stride + col_offs[j], zero past k_size or outside col_mask."""
    if K_SPLIT == 1:
        offs_k = k_start + tl.arange(0, K_PIECE)[:, None]
        cols, cols_mask = col_offs[None, :], col_mask[None, :]
    else:
        share = tl.arange(0, K_SPLIT)[:, None, None] * (K_PIECE // K_SPLIT)
        offs_k = k_start + share + tl.arange(0, K_PIECE // K_SPLIT)[None, :, None]
        cols, cols_mask = col_offs[None, None, :], col_mask[None, None, :]
    w = tl.load(w_ptr + offs_k * k_stride + cols, mask=(offs_k < k_size) & cols_mask, other=0.0)
    if BF16_INTERPRETER:  # the interpreter computes bf16 arithmetic on raw bits
        w = w.to(tl.float32)
    return w


@triton.jit
def _dot_piece(a_ptr, a_rows, mask_b, k_start, k_size, w, K_PIECE: tl.constexpr, K_SPLIT: tl.constexpr,
               DOT_PRECISION: tl.constexpr, acc):  # fmt: skip
    """acc + a[rows, k_start : k_start + K_PIECE] @ w in fp32 (acc None: zero), the operand cast to w's
    dtype: [BLOCK_B, columns], or per share of K [K_SPLIT, BLOCK_B, columns]."""
    # a was written by other programs in the previous step; the grid barrier (or the kernel boundary)
    # orders it: no cache modifier is relied on.
    if K_SPLIT == 1:
        offs_k = k_start + tl.arange(0, K_PIECE)[None, :]
        rows, rows_mask = a_rows[:, None], mask_b[:, None]
    else:
        share = tl.arange(0, K_SPLIT)[:, None, None] * (K_PIECE // K_SPLIT)
        offs_k = k_start + share + tl.arange(0, K_PIECE // K_SPLIT)[None, None, :]
        rows, rows_mask = a_rows[None, :, None], mask_b[None, :, None]
    a = tl.load(a_ptr + rows + offs_k, mask=rows_mask & (offs_k < k_size), other=0.0)
    return tl.dot(a.to(w.dtype), w, acc, input_precision=DOT_PRECISION)


@triton.jit
def _k_share_start(K_PIECES: tl.constexpr, K_GROUPS: tl.constexpr):
    """The first row of K in this program's share: the K_GROUPS programs of a hidden tile split the
    recurrent dot's K in consecutive shares of sum(K_PIECES) rows."""
    share = 0
    for i in tl.static_range(len(K_PIECES)):
        share += K_PIECES[i]
    return (tl.program_id(0) % K_GROUPS) * share


@triton.jit
def weight_slice(
    w_ptr,
    col_offs,
    col_mask,
    k_size,
    k_stride,
    K_PIECES: tl.constexpr,
    K_SPLIT: tl.constexpr,
    K_GROUPS: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BF16_INTERPRETER: tl.constexpr,
):
    """The program's slice of the recurrent weight for recurrent_dot: when it is stationary (BLOCK_K == 0)
    the whole slice (the program's share of K with K_GROUPS > 1), loaded once as a tuple of pieces;
    nothing when streamed."""
    pieces = ()
    if BLOCK_K == 0:
        k_start = _k_share_start(K_PIECES, K_GROUPS)
        for i in tl.static_range(len(K_PIECES)):
            piece = load_weight_piece(
                w_ptr, col_offs, col_mask, k_start, k_size, k_stride, K_PIECES[i], K_SPLIT, BF16_INTERPRETER
            )
            pieces = pieces + (piece,)
            k_start += K_PIECES[i]
    return pieces


@triton.jit
def recurrent_dot(
    acc, a_ptr, a_rows, mask_b, k_size, w, w_ptr, col_offs, col_mask, k_stride,
    exchange_ptr, barrier_ptr, s, failed, timeout,
    K_PIECES: tl.constexpr, K_SPLIT: tl.constexpr, K_GROUPS: tl.constexpr, BLOCK_K: tl.constexpr,
    DOT_PRECISION: tl.constexpr, BF16_INTERPRETER: tl.constexpr,
):  # fmt: skip
    """(acc + a[rows, :k_size] @ W, failed, timeout): the step's one recurrent dot, from the stationary
    slice w (a tuple of K pieces, each split K_SPLIT ways across warps, accumulated one after the other: a
    warp's MMAs form one chain along its share of all of K), or with W streamed from w_ptr (weight_slice's
    arguments) in BLOCK_K chunks, for plans whose slice does not fit on chip. With K_GROUPS > 1 the
    program's slice holds its share of K, and the K group's programs add up their products at step s of
    the launch (k_group_sum, which may time out like barrier_wait)."""
    if BLOCK_K == 0:
        k_start = _k_share_start(K_PIECES, K_GROUPS)
        part = _dot_piece(a_ptr, a_rows, mask_b, k_start, k_size, w[0], K_PIECES[0], K_SPLIT, DOT_PRECISION, None)
        k_start += K_PIECES[0]
        for i in tl.static_range(1, len(K_PIECES)):
            part = _dot_piece(a_ptr, a_rows, mask_b, k_start, k_size, w[i], K_PIECES[i], K_SPLIT, DOT_PRECISION, part)
            k_start += K_PIECES[i]
        if K_SPLIT > 1:
            part = tl.sum(part, axis=0)
        if K_GROUPS > 1:
            part, failed, timeout = k_group_sum(part, exchange_ptr, barrier_ptr, s, failed, timeout, K_GROUPS)
        acc += part
    else:
        for k in range(0, k_size, BLOCK_K):
            piece = load_weight_piece(w_ptr, col_offs, col_mask, k, k_size, k_stride, BLOCK_K, 1, BF16_INTERPRETER)
            acc = _dot_piece(a_ptr, a_rows, mask_b, k, k_size, piece, BLOCK_K, 1, DOT_PRECISION, acc)
    return acc, failed, timeout


@triton.jit
def k_group_sum(part, exchange_ptr, barrier_ptr, s, failed, timeout, K_GROUPS: tl.constexpr):
    """The sum of the partial products `part` [BLOCK_B, columns] (fp32, each over one program's share of
    K) of the two programs of a hidden tile (K_GROUPS = 2) at step s of the launch. Each program
    publishes its part in exchange_ptr ([programs, BLOCK_B, columns] fp32, one tile per program) and then
    its count of published steps, barrier_ptr[2 + program] (release); it waits (acquire) for its
    partner's count to reach s + 1 and adds the partner's part to its own: IEEE addition is commutative,
    so both go on with the same bits. A tile is rewritten only a step later, after the grid barrier that
    its reader has reached. Returns (sum, failed, timeout) updated as barrier_wait does."""
    tl.static_assert(K_GROUPS == 2, "a K group is a pair of programs")
    ROWS: tl.constexpr = part.shape[0]
    COLUMNS: tl.constexpr = part.shape[1]
    # Grid axis 0 runs the pair's programs one after the other and has an even size: a program's partner
    # differs from it in the last bit of its linear index.
    program = tl.program_id(0) + tl.num_programs(0) * (tl.program_id(1) + tl.num_programs(1) * tl.program_id(2))
    partner = program ^ 1
    tile = tl.arange(0, ROWS)[:, None] * COLUMNS + tl.arange(0, COLUMNS)[None, :]
    tl.store(exchange_ptr + program.to(tl.int64) * (ROWS * COLUMNS) + tile, part)
    tl.debug_barrier()  # every warp's part is stored ...
    tl.atomic_add(barrier_ptr + 2 + program, 1, sem="release", scope="gpu")  # ... and published
    ok = _wait_until(barrier_ptr + 2 + partner, s + 1, timeout)
    failed = tl.where(ok, failed, 1)
    timeout = tl.where(ok, timeout, 0)
    # .cg: read from L2, where the partner published it (as load_state_tile's tiles).
    partner_part = tl.load(exchange_ptr + partner.to(tl.int64) * (ROWS * COLUMNS) + tile, cache_modifier=".cg")
    return part + partner_part, failed, timeout


@triton.jit
def grid_arrive(barrier_ptr, step):
    """This program's arrival at the grid barrier after step `step` of a launch, once its stores of the
    step are done. barrier_ptr: two int32 counters (then k_group_sum's counts), zero at launch, used on
    alternate steps: counter step % 2 cannot be bumped again (at step + 2) before every program has left
    this step's wait, so waiting for equality is safe."""
    tl.debug_barrier()  # every warp's stores of this step are done ...
    tl.atomic_add(barrier_ptr + step % 2, 1, sem="release", scope="gpu")  # ... and published at gpu scope


@triton.jit
def _wait_until(counter, expected, timeout_ns):
    """Waits until the int32 at `counter` reaches `expected` (acquire, at gpu scope); False when the wait
    timed out. The counter never passes `expected` while a program waits for it."""
    if HAS_ATOMIC_POLL:
        ok = tl.atomic_poll(counter, expected, sem="acquire", scope="gpu", timeout_ns=timeout_ns)
    else:
        arrived = tl.inline_asm_elementwise(
            _POLL_ASM, "=r,l,r,l", [counter, expected, timeout_ns.to(tl.int64)], dtype=tl.int32, is_pure=False, pack=1
        )
        ok = arrived >= expected
    tl.debug_barrier()  # every warp is ordered after the acquire
    return ok


@triton.jit
def grid_wait(barrier_ptr, step, timeout_ns):
    """Waits until every program of the grid has arrived after step `step` (grid_arrive); False when the
    wait timed out."""
    expected = (step // 2 + 1) * tl.num_programs(0) * tl.num_programs(1) * tl.num_programs(2)
    return _wait_until(barrier_ptr + step % 2, expected, timeout_ns)


@triton.jit
def barrier_arrive(barrier_ptr, s, n_steps, USE_BARRIER: tl.constexpr):
    """Arrival at the grid barrier between step s and s + 1 of a launch (none after its last step). Between
    it and barrier_wait a program issues the loads of step s + 1 that do not depend on the recurrence:
    they are in flight while it waits, and the arrival's release fence does not wait for them."""
    if USE_BARRIER:
        if s + 1 < n_steps:
            grid_arrive(barrier_ptr, s)


@triton.jit
def barrier_wait(barrier_ptr, s, n_steps, failed, timeout, USE_BARRIER: tl.constexpr):
    """The wait at the grid barrier between step s and s + 1 of a launch: returns (failed, timeout)
    updated. After a timeout a program keeps going with a zero timeout, so the launch drains instead of
    hanging, and reports failed = 1."""
    if USE_BARRIER:
        if s + 1 < n_steps:
            ok = grid_wait(barrier_ptr, s, timeout)
            failed = tl.where(ok, failed, 1)
            timeout = tl.where(ok, timeout, 0)
    return failed, timeout
