"""Block sizes, warps and the choice of kernel variant for a recurrent scan.

`plan_layer` says how one layer-direction's scan runs on a GPU. The hidden units are split across
programs; each program owns BLOCK_N units of every gate (and a batch tile when B is large), keeps its
slice of W_hh on chip for the whole sequence ("stationary", weight_bytes_per_step 0) or, where the
slice does not fit, streams it from L2 each step in BLOCK_K chunks. With `grid_sync` one launch runs
every step and the programs meet at a grid barrier between steps (variant "grid_sync"); without it (the
fallback, variant "step") the same kernel runs one step per launch. Where a tile's slice does not fit one
block but the grid barrier is planned, K_GROUPS = 2 programs share the tile, each holding half of K, and
add up their products through L2 every step (recurrence.k_group_sum); the fallback, whose programs need
not run at the same time, never groups them.

Device: `target_gpu` reads the CUDA device's properties. Under TRITON_INTERPRET=1 there is no GPU:
RNNFAST_PLAN_TARGET=h100|a100 (a testing switch, honoured only under the interpreter) plans as on that
GPU, grid barrier included, which needs the threaded interpreter (tests/threaded.py) to run; without it
the interpreter plans tiles as on an H100 and runs the fallback, since its programs run one after
another and could never meet at a barrier.
"""

import contextlib
import dataclasses
import functools
import os
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from ..dispatch import interpreting


@dataclass(frozen=True)
class Gpu:
    name: str
    arch: int  # compute capability major * 10 + minor: 90, 80
    sm_count: int
    shared_per_block: int  # bytes of shared memory one block may use (opt-in maximum)
    shared_per_sm: int
    registers_per_sm: int  # 32-bit registers
    max_threads_per_sm: int


# Published limits (CUDA programming guide, compute capabilities 8.0 and 9.0; SXM parts).
GPUS = {
    "h100": Gpu("NVIDIA H100 SXM", 90, 132, 232448, 233472, 65536, 2048),
    "a100": Gpu("NVIDIA A100 SXM", 80, 108, 166912, 167936, 65536, 2048),
}
PLAN_TARGET_VARIABLE = "RNNFAST_PLAN_TARGET"
NO_GRID_SYNC_VARIABLE = "RNNFAST_NO_GRID_SYNC"
_planning_for: list[str] = []


@contextlib.contextmanager
def planning_for(gpu: str):
    """Inside this context plans are made for GPUS[gpu] whatever the device (bench/hardware.py compiles
    the launches of a plan for a GPU this machine does not have)."""
    if gpu not in GPUS:
        raise ValueError(f"gpu must be one of {sorted(GPUS)}, got {gpu!r}")
    _planning_for.append(gpu)
    try:
        yield
    finally:
        _planning_for.pop()


def plan_target() -> str | None:
    """The GPU named by RNNFAST_PLAN_TARGET, honoured only under TRITON_INTERPRET=1 (else None)."""
    name = os.environ.get(PLAN_TARGET_VARIABLE)
    if not name or not interpreting():
        return None
    if name not in GPUS:
        raise ValueError(f"{PLAN_TARGET_VARIABLE} must be one of {sorted(GPUS)}, got {name!r}")
    if not hasattr(tl, "atomic_poll"):  # the barrier's wait is then inline PTX (recurrence._POLL_ASM)
        raise RuntimeError(
            f"{PLAN_TARGET_VARIABLE}: grid barriers under the interpreter need triton >= 3.9 (tl.atomic_poll), "
            f"found {triton.__version__}"
        )
    return name


def target_gpu(device: torch.device | None = None) -> Gpu:
    """The GPU a scan on `device` is planned for: the CUDA device's own properties, or under the
    interpreter RNNFAST_PLAN_TARGET's GPU (an H100 when unset); planning_for's GPU inside it."""
    if _planning_for:
        return GPUS[_planning_for[-1]]
    if interpreting() or device is None or device.type != "cuda":
        return GPUS[plan_target() or "h100"]
    props = torch.cuda.get_device_properties(device)
    arch = props.major * 10 + props.minor
    like = GPUS["h100"] if arch >= 90 else GPUS["a100"]
    return Gpu(
        props.name,
        arch,
        props.multi_processor_count,
        getattr(props, "shared_memory_per_block_optin", like.shared_per_block),
        getattr(props, "shared_memory_per_multiprocessor", like.shared_per_sm),
        getattr(props, "regs_per_multiprocessor", like.registers_per_sm),
        getattr(props, "max_threads_per_multi_processor", like.max_threads_per_sm),
    )


def grid_sync_allowed() -> bool:
    """Whether a grid barrier may be planned at all: not with RNNFAST_NO_GRID_SYNC=1, and under the
    interpreter only when RNNFAST_PLAN_TARGET asks for a GPU's plan (threaded interpreter)."""
    if os.environ.get(NO_GRID_SYNC_VARIABLE, "0") == "1":
        return False
    return bool(_planning_for) or not interpreting() or plan_target() is not None


GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}
# tl.dot needs every side >= 16 on a GPU.
MIN_DOT = 16
# Largest batch tile; more rows make more batch tiles (each with its own copy of the weight slice).
MAX_BLOCK_B = 64
# Chunk of K for streamed weights.
STREAM_BLOCK_K = 64
# The dot's other operand (h_{t-1} forward, the gate gradients backward) is loaded each step: a piece
# of it at most this big is staged at once, and a program's whole operand at most OPERAND_BUDGET_BYTES
# (beyond it the compiler's early loads of the pieces spill registers). On sm_90 a 64-row batch tile's
# dot is a warpgroup MMA (wgmma), whose operand loads spilled at 254-255 registers from 128 KB (B64: LSTM
# fp32 backward H128 16 B, GRU fp16 forward H1024 40 B; at 192 KB, H768 fp32: LSTM forward 368 B, Elman
# backward 328 B); with mma.sync (sm_80, and tiles of 16 or 32 rows on sm_90)
# operands up to 384 KB compiled without spills (B64 H768: LSTM fp32 backward with 32-row tiles on sm_90,
# LSTM fp16 backward with 64-row tiles on sm_80). All measured.
MAX_OPERAND_PIECE_BYTES = 32 * 1024
OPERAND_BUDGET_BYTES = 384 * 1024
WGMMA_OPERAND_BUDGET_BYTES = 96 * 1024
WGMMA_MIN_ROWS = 64
# Every program reads the whole operand each step, so plans whose operand fits this are preferred (less
# L2 traffic: by bench/model.py, 32-row tiles with a 192 KB operand made the LSTM fp16 B64 H768 forward +
# backward 15% slower than 16-row tiles with 96 KB); larger operands only where nothing smaller keeps the
# slice on chip in one wave.
PREFERRED_OPERAND_BYTES = 128 * 1024
# With H not a multiple of 16 the operand's rows are not 16-byte aligned: its loads are not vectorised
# and need an address per element, and beyond this budget they spilled at 255 registers (B64 H100/H257
# fp16 and fp32, sm_80 and sm_90, up to 744 bytes, measured): such programs take a narrower batch tile
# instead, down to MIN_DOT rows, which keeps the full budget (no spill at 255 registers there, measured).
UNALIGNED_OPERAND_BUDGET_BYTES = 32 * 1024
# A stationary slice may take this many K pieces (each its own dot): the fp32 GRU backward at H768 on an
# A100 needs 18 pieces of 128 to leave room for its operand beside a 144 KB slice.
MAX_PIECES = 18
# Forward programs whose weight slice and operand are both at most this big run 4 warps, others 8 (the
# backward holds more state per unit: at 4 warps it spilled at B1 H17 on sm_90).
SMALL_PROGRAM_BYTES = 16 * 1024
# A stationary dot's K is split across the program's warps (recurrence.recurrent_dot): a warp's chain of
# dependent MMAs is then K_SPLIT times shorter (LSTM fp16 B16 H768 on sm_90, MMAs per warp and step:
# forward 48 -> 24, backward 384 -> 48, compiled). At most half the warps share K: the other half keep
# the output tile spread over warps, since with every warp on K (8 of 8) the summed tile was replicated
# in each warp and the gate math after it ran 8 times over (1,580 instructions per step against 609 for
# 4 of 8, 730 unsplit; sm_90, compiled). Each share keeps at least MIN_SHARE_K of K: below that the
# per-step sum of the partial products through shared memory costs more than the MMAs it saves. Tiles of
# WIDE_TILE_ROWS or more rows split K at most WIDE_TILE_K_SPLIT ways: split 4 ways, the A100's LSTM fp16
# backward at B64 H768 (64-row tiles) spilled 8 B at 255 registers, 2 ways it took 184 (compiled). Triton
# before 3.9 spilled there split 2 ways too, on sm_80 (B64 H768, 3.6.0: LSTM fp16/bf16 backward 24 B, LSTM
# and GRU fp32 forward and Elman fp16/bf16 backward 8 B, at 255 registers; unsplit 160-226 registers and
# none): with it, such tiles keep K whole on sm_80 (wide_tile_k_split).
MIN_SHARE_K = 64
WIDE_TILE_ROWS = 64
WIDE_TILE_K_SPLIT = 2
TRITON_VERSION = tuple(int(part) for part in triton.__version__.split(".")[:2])


def wide_tile_k_split(gpu: Gpu) -> int:
    """The most warps that share K in a tile of WIDE_TILE_ROWS rows or more, for the installed Triton."""
    return 1 if TRITON_VERSION < (3, 9) and gpu.arch < 90 else WIDE_TILE_K_SPLIT


# K groups (two programs per hidden tile, each holding half of K) only for tiles of at most this many
# elements (batch rows x dot columns): every grouped plan up to it compiled without spills (H 17-1536,
# B 1-256, every cell and dtype, both GPUs, one and two directions: 16 distinct pass plans), while wider
# grouped tiles (4,096-8,192 elements, at B 128-256 on an H100, where groups only halved an operand over
# its budget) spilled 64-432 B at 255 registers whatever the warps (compiled).
MAX_GROUPED_TILE = 2048
# Where a plan's warps each run a chain of at least this many dependent MMAs per step (K / (K_SPLIT x 16),
# x 8 in TF32), K groups are taken even though the plan fits without them, wherever the doubled grid is
# still co-resident and the chain is halved in no more K pieces: half the chain for two more L2 round trips
# a step (the partner's count, then its part). Not for tiles of WIDE_TILE_ROWS rows, whose steps are bound
# by the L2 traffic of the operand that every program reads (twice the programs, twice the traffic).
# bench/model.py puts the break-even near 32 (H100, every cell, fp16 and fp32, H 256-1024, B 16 and 64:
# chains of 32 or more gain, 24 break even, 16 lose 5-15%). Over the report grid (1,440 plans) the rule
# changes 193 plans: by the MODEL 189 get faster (forward+backward down to 0.78x; LSTM fp16 B16 H768 on an
# H100 6.33 -> 5.92 ms) and 4 slower by at most 2.3% (A100, B64, L2-bound). Not with Triton before 3.9:
# there the LSTM fp32 B64 H768 backward grouped so on an H100 spilled 16 B at 255 registers (3.6.0).
GROUPED_MIN_MMA_CHAIN = 32


def grouped_for_speed() -> bool:
    """Whether plans may take K groups for a shorter MMA chain (GROUPED_MIN_MMA_CHAIN), for the installed Triton."""
    return TRITON_VERSION >= (3, 9)


def k_pieces(k: int, max_piece: int) -> tuple[int, ...] | None:
    """K (rounded up to a multiple of 16) as at most MAX_PIECES power-of-two pieces of at most
    max_piece, largest first, the last rounded up: 768 -> (512, 256), 100 -> (64, 32, 16), 3072 with
    max_piece 1024 -> (1024, 1024, 1024). A stationary weight slice is held as one tensor per piece, so
    a hidden size that is not a power of two is chunked, not padded to the next power of two. None when
    K needs more pieces."""
    rest = triton.cdiv(k, MIN_DOT) * MIN_DOT
    pieces = []
    while rest > 0:
        if len(pieces) == MAX_PIECES - 1:
            piece = triton.next_power_of_2(rest)
            if piece > max_piece:
                return None
        else:
            piece = min(max_piece, 1 << (rest.bit_length() - 1))
        pieces.append(piece)
        rest -= piece
    return tuple(pieces)


@dataclass(frozen=True)
class PassPlan:
    """One pass (forward or backward) of a scan: the program grid and what each program holds."""

    block_b: int  # batch rows per program
    block_n: int  # hidden units per program (of every gate)
    k_pieces: tuple[int, ...]  # stationary: the dot's K (H forward, G*H backward) as pieces; else ()
    k_split: int  # warps sharing the stationary dot's K (1: none, and always when streamed)
    k_groups: int  # programs sharing the stationary dot's K, each holding k_pieces of it (1 when streamed)
    dot_columns: int  # columns of the recurrent dot: block_n, or block_n x gates (padded) forward
    block_k: int  # streamed K chunk; 0 when the weight slice is stationary
    num_warps: int
    batch_tiles: int
    hidden_tiles: int
    directions: int  # directions one launch runs (grid axis 2): 1, or 2 for both of a bidirectional layer
    weight_bytes: int  # bytes of W_hh in one program's slice (with a wavefront's W_in: of both)
    in_pieces: tuple[int, ...] = ()  # a wavefront: W_in's K (H forward, G*H backward) as pieces on chip; () streamed

    @property
    def programs(self) -> int:
        return self.batch_tiles * self.hidden_tiles * self.k_groups * self.directions

    @property
    def stationary(self) -> bool:
        return self.block_k == 0


@dataclass(frozen=True)
class LayerPlan:
    """How one layer's scan runs, forward and backward: one direction, or both directions of a
    bidirectional layer in each launch (`directions`)."""

    cell: str
    hidden_size: int
    batch_size: int
    dtype: torch.dtype
    gpu: Gpu
    forward: PassPlan
    backward: PassPlan
    grid_sync: bool  # one launch per pass with a grid barrier between steps; else one launch per step
    directions: int  # directions each launch runs

    @property
    def variant(self) -> str:
        return "grid_sync" if self.grid_sync else "step"

    @property
    def programs(self) -> int:
        return max(self.forward.programs, self.backward.programs)

    def launches_forward(self, seq_len: int) -> int:
        return 1 if self.grid_sync else seq_len

    def launches_backward(self, seq_len: int) -> int:
        return 1 if self.grid_sync else seq_len

    @property
    def weight_bytes_per_step(self) -> int:
        """Bytes of W_hh each program reads from global memory per step: 0 when the slices stay on chip
        for the whole sequence; the fallback reloads them at every step's launch."""
        return max(
            0 if self.grid_sync and plan.stationary else plan.weight_bytes for plan in (self.forward, self.backward)
        )

    @property
    def num_warps(self) -> int:
        return max(self.forward.num_warps, self.backward.num_warps)


def _tiling(
    gates: int,
    hidden: int,
    batch: int,
    block_b: int,
    elem: int,
    gpu: Gpu,
    backward: bool,
    directions: int,
    operand_budget: int,
    k_groups: int,
    input_size: int = 0,
) -> PassPlan:
    batch_tiles = triton.cdiv(max(batch, 1), block_b)
    # Forward: a program's dot has a column per (unit, gate), gates padded to a power of two, and K = H.
    # Backward: a column per unit, and K runs over every gate's pre-activation. A program's share of K is
    # all of it, or with k_groups programs per tile its part (a multiple of MIN_DOT). With an input_size
    # the slice also holds input weights: forward W_ih (K = input_size + H: one dot over [x_t, h_{t-1}];
    # plan_wavefront), backward the layer above's W_in (K = G*H + input_size; plan_wavefront_lanes).
    columns_per_unit = 1 if backward or gates == 1 else triton.next_power_of_2(gates)
    k = (gates * hidden if backward else hidden) + input_size
    if k_groups > 1:
        k = triton.cdiv(k, k_groups * MIN_DOT) * MIN_DOT
    block_n = max(1, MIN_DOT // columns_per_unit)
    widest = max(block_n, triton.next_power_of_2(hidden))
    while directions * batch_tiles * triton.cdiv(hidden, block_n) * k_groups > gpu.sm_count and block_n < widest:
        block_n *= 2
    # The widest operand pieces whose staging still fits in shared memory beside the slice.
    max_piece = max(MIN_DOT, 1 << ((MAX_OPERAND_PIECE_BYTES // (block_b * elem)).bit_length() - 1))
    pieces = k_pieces(k, max_piece)

    def shared_bytes(pieces: tuple[int, ...], accumulators: int) -> int:
        """Shared memory of a slice held in `pieces`, one staged operand piece and `accumulators` fp32
        accumulator tiles: one for its layout conversions (every stationary plan of the full report
        compiled within that sum), one per warp sharing K for the sum of their partial products."""
        slice_bytes = sum(pieces) * columns_per_unit * block_n * elem
        return slice_bytes + block_b * max(pieces) * elem + accumulators * block_b * columns_per_unit * block_n * 4

    while True:
        k_total = sum(pieces) if pieces else k
        weight_bytes = k_total * columns_per_unit * block_n * elem
        operand_bytes = block_b * k_total * elem
        shared = shared_bytes(pieces or (k,), 1)
        narrower = k_pieces(k, max_piece // 2) if max_piece > MIN_DOT else None
        if shared <= gpu.shared_per_block or narrower is None:
            break
        max_piece, pieces = max_piece // 2, narrower
    budget = operand_budget
    if gpu.arch >= 90 and block_b >= WGMMA_MIN_ROWS:
        budget = min(budget, WGMMA_OPERAND_BUDGET_BYTES)
    if hidden % MIN_DOT and block_b > MIN_DOT:
        budget = min(budget, UNALIGNED_OPERAND_BUDGET_BYTES)
    stationary = pieces is not None and operand_bytes <= budget and shared <= gpu.shared_per_block
    num_warps = 4 if not backward and max(weight_bytes, operand_bytes) <= SMALL_PROGRAM_BYTES else 8
    k_split = 1
    most = wide_tile_k_split(gpu) if block_b >= WIDE_TILE_ROWS else num_warps // 2
    while stationary and 2 * k_split <= most and k_total >= MIN_SHARE_K * 2 * k_split:
        # Narrower operand pieces (the same K in more dots) make room for the partial products' tiles.
        candidate, width = pieces, max_piece
        while candidate is not None and shared_bytes(candidate, 2 * k_split) > gpu.shared_per_block:
            width //= 2
            candidate = k_pieces(k, width) if width >= MIN_DOT * 2 * k_split else None
        if candidate is None or sum(candidate) != k_total or min(candidate) < MIN_DOT * 2 * k_split:
            break
        pieces, max_piece, k_split = candidate, width, 2 * k_split
    return PassPlan(
        block_b=block_b,
        block_n=block_n,
        k_pieces=pieces if stationary else (),
        k_split=k_split,
        k_groups=k_groups if stationary else 1,
        dot_columns=columns_per_unit * block_n,
        block_k=0 if stationary else STREAM_BLOCK_K,
        num_warps=num_warps,
        batch_tiles=batch_tiles,
        hidden_tiles=triton.cdiv(hidden, block_n),
        directions=directions,
        weight_bytes=weight_bytes,
    )


def mma_chain(plan: PassPlan, elem: int) -> int:
    """The dependent MMAs one warp of a stationary plan runs per step for the recurrent dot: its share of
    K over the K of one MMA (16, or 8 in TF32)."""
    return sum(plan.k_pieces) // (plan.k_split * (8 if elem == 4 else 16))


def _pass_plan(
    gates: int,
    hidden: int,
    batch: int,
    elem: int,
    gpu: Gpu,
    backward: bool,
    directions: int,
    grouped: bool,
    input_size: int = 0,
) -> PassPlan:
    """The widest batch tile (up to MAX_BLOCK_B) whose programs keep their weight slice on chip in one
    wave of the GPU, with an operand of at most PREFERRED_OPERAND_BYTES if any, else OPERAND_BUDGET_BYTES;
    failing that, if `grouped`, the same with K_GROUPS = 2 programs per tile of at most MAX_GROUPED_TILE
    elements; failing that, the widest
    batch tile with the slice streamed."""
    widest = MIN_DOT if batch <= MIN_DOT else min(MAX_BLOCK_B, triton.next_power_of_2(batch))

    def fits(plan: PassPlan) -> bool:
        narrow = plan.k_groups == 1 or plan.block_b * plan.dot_columns <= MAX_GROUPED_TILE
        return plan.stationary and plan.programs <= gpu.sm_count and narrow

    for k_groups in (1, 2) if grouped else (1,):
        for budget in (min(PREFERRED_OPERAND_BYTES, OPERAND_BUDGET_BYTES), OPERAND_BUDGET_BYTES):
            block_b = widest
            while block_b >= MIN_DOT:
                plan = _tiling(
                    gates, hidden, batch, block_b, elem, gpu, backward, directions, budget, k_groups, input_size
                )
                if fits(plan):
                    wide = block_b >= WIDE_TILE_ROWS
                    long_chain = mma_chain(plan, elem) >= GROUPED_MIN_MMA_CHAIN and grouped_for_speed()
                    if grouped and k_groups == 1 and not wide and long_chain:
                        halved = _tiling(
                            gates, hidden, batch, block_b, elem, gpu, backward, directions, budget, 2, input_size
                        )
                        shorter = fits(halved) and 2 * mma_chain(halved, elem) <= mma_chain(plan, elem)
                        return halved if shorter and len(halved.k_pieces) <= len(plan.k_pieces) else plan
                    return plan
                block_b //= 2
    return _tiling(gates, hidden, batch, widest, elem, gpu, backward, directions, OPERAND_BUDGET_BYTES, 1, input_size)


def plan_layer(
    cell: str,
    hidden_size: int,
    batch_size: int,
    dtype: torch.dtype,
    device: torch.device | None = None,
    directions: int = 1,
    grid_sync: bool = True,
) -> LayerPlan:
    """The plan of one layer of `cell` (lstm, gru, rnn_tanh, rnn_relu) with this
    hidden size, batch and dtype, on `device` (see target_gpu), running `directions` directions (1 or 2)
    in each launch; with grid_sync=False (or where grid_sync_allowed says no) the fallback's plan, one
    launch per step.

    BLOCK_N is the smallest power of two (a dot at least 16 wide) whose programs fit in one wave of the
    GPU's SMs; the weight slice is stationary where it fits in a block's shared memory with the dot's
    other operand, or, with the grid barrier, where half of it does (K groups, _pass_plan). The grid
    barrier is planned when every program fits on its own SM at once; on a real GPU the launcher also
    checks the compiled kernel's occupancy before using it. Plans are kept (_PLANS): the launcher asks
    for one at every launch, and making one takes tens of microseconds."""
    key = (cell, hidden_size, batch_size, dtype, target_gpu(device), directions, grid_sync and grid_sync_allowed())
    plan = _PLANS.get(key)
    if plan is None:
        if len(_PLANS) >= MAX_KEPT_PLANS:
            _PLANS.clear()
        plan = _PLANS[key] = _make_plan(*key)
    return plan


MAX_KEPT_PLANS = 4096
_PLANS: dict[tuple, LayerPlan] = {}


def _make_plan(
    cell: str, hidden_size: int, batch_size: int, dtype: torch.dtype, gpu: Gpu, directions: int, allowed: bool
) -> LayerPlan:
    gates = GATES[cell]
    for grouped in (True, False) if allowed else (False,):
        forward = _pass_plan(gates, hidden_size, batch_size, dtype.itemsize, gpu, False, directions, grouped)
        backward = _pass_plan(gates, hidden_size, batch_size, dtype.itemsize, gpu, True, directions, grouped)
        co_resident = max(forward.programs, backward.programs) <= gpu.sm_count
        if co_resident or not grouped:
            break
    # K groups need the grid barrier: a plan with them is co-resident (else it was made without them).
    return LayerPlan(cell, hidden_size, batch_size, dtype, gpu, forward, backward, allowed and co_resident, directions)


def plan_scan(
    cell: str,
    hidden_size: int,
    batch_size: int,
    dtype: torch.dtype,
    device: torch.device | None,
    directions: int,
    grid_sync: bool = True,
) -> LayerPlan:
    """The plan a layer with `directions` directions (1 or 2) runs by. Both directions of a bidirectional
    layer share each launch (twice the programs, each step of both directions in the same launch or
    barrier interval) where that plan keeps the weight slices stationary in both passes and has the grid
    barrier if one direction alone would; otherwise each direction gets its own launches, one after the
    other (a joint plan with streamed weights would need programs twice as wide, past a block's shared
    memory at large H)."""
    joint = plan_layer(cell, hidden_size, batch_size, dtype, device, directions, grid_sync)
    if directions == 1:
        return joint
    alone = plan_layer(cell, hidden_size, batch_size, dtype, device, 1, grid_sync)
    stationary = joint.forward.stationary and joint.backward.stationary
    return joint if stationary and joint.grid_sync >= alone.grid_sync else alone


# The upper layers' input weights stream from L2 during the barrier wait where they are not on chip: each
# whole matrix every step, traffic a layer by layer scan does not have. By the MODEL (`python -m bench
# report`, stacks.csv's built_* columns: 2-layer stacks, T 1024, B 1-64, H100 and A100) a pass gains while
# an upper layer's W_ih is at most this many bytes. Forward with W_ih streamed: 0.50-0.82x of layer by
# layer up to 1,056,784 B (LSTM fp32 H257), 1.06-1.09x at 1,179,648 B (Elman fp16 H768 B64), 1.04x at
# 4.7 MB (LSTM fp16 H768 B64); with W_ih on chip (where plan_wavefront_lanes fits it) no limit: LSTM fp16
# H768 B16 on an H100 0.545x. Backward with the layer above's W_ih streamed (K = 4H): 0.58-0.73x at H64,
# 0.86-1.0x at fp16 H128, 1.07-1.28x at fp16 H192; past the limit the backward holds it on chip where
# plan_wavefront_lanes fits it, else runs layer by layer (the kernels of one layer, dx a GEMM).
WAVEFRONT_MAX_W_IH_BYTES = {"forward": 1_100_000, "backward": 160_000}


def input_weight_bytes(cell: str, hidden: int, dtype: torch.dtype) -> int:
    """The bytes of an upper layer's W_ih [G*H, H] (input size = hidden size)."""
    return GATES[cell] * hidden * hidden * dtype.itemsize


def streams_well(cell: str, hidden: int, dtype: torch.dtype, scan_pass: str) -> bool:
    """Whether a wavefront's `scan_pass` gains with its upper layers' W_ih streamed (WAVEFRONT_MAX_W_IH_BYTES)."""
    return input_weight_bytes(cell, hidden, dtype) <= WAVEFRONT_MAX_W_IH_BYTES[scan_pass]


# By the MODEL (stacks.csv's 2-layer rows at H 64-256) a wavefront backward with the layer above's W_ih on
# chip is faster than with it streamed wherever both fit (79 rows; LSTM fp16 B16 H128 on an H100: 4.09
# against 5.78 ms forward+backward), but where W_ih is this small (Elman H64: 8-16 KiB) streaming it
# during the barrier wait costs nothing and the slices on chip made the step 0.3-1.5 % slower.
W_IH_STREAMS_FREE_BYTES = 16 * 1024


def plan_wavefront_lanes(
    cell: str,
    hidden_size: int,
    batch_size: int,
    dtype: torch.dtype,
    device: torch.device | None,
    num_layers: int,
    grid_sync: bool = True,
) -> LayerPlan:
    """The plan of the wavefront rnnfast runs (rnnfast/wavefront.py): every layer of the stack is a lane
    of plan_scan's plan over `num_layers` lanes, and each pass keeps the input weights it multiplies by
    on chip beside W_hh where a plan of the lanes with both slices fits in one wave: the forward an upper
    layer's W_in (K = 2H: _pass_plan's input_size; both slices pieces of H), the backward the layer
    above's W_in (K = 2 G*H: pieces of G*H; recurrence.gradient_from_above), as W_hh's K_PIECES and
    W_in's in_pieces; the backward streams a W_in of at most W_IH_STREAMS_FREE_BYTES. Elsewhere W_in
    streams from L2."""
    lanes = plan_scan(cell, hidden_size, batch_size, dtype, device, num_layers, grid_sync)
    if not lanes.grid_sync:
        return lanes
    passes = {
        scan_pass: _with_input_slices(
            GATES[cell],
            hidden_size,
            batch_size,
            dtype.itemsize,
            lanes.gpu,
            num_layers,
            scan_pass == "backward",
            not streams_well(cell, hidden_size, dtype, scan_pass),
            TRITON_VERSION,
        )  # fmt: skip
        for scan_pass in ("forward", "backward")
        if scan_pass == "forward" or input_weight_bytes(cell, hidden_size, dtype) > W_IH_STREAMS_FREE_BYTES
    }
    return dataclasses.replace(lanes, **{name: plan for name, plan in passes.items() if plan is not None})


# The largest slices (W_hh's and W_in's together) a program holds: beyond them the kernels spilled (the
# rules in _with_input_slices), with 16-row tiles and with wider ones.
MAX_INPUT_SLICES_BYTES = 160 * 1024
MAX_WIDE_TILE_INPUT_SLICES_BYTES = 96 * 1024


@functools.cache
def _with_input_slices(
    gates: int,
    hidden: int,
    batch: int,
    elem: int,
    gpu: Gpu,
    lanes: int,
    backward: bool,
    narrow_tiles: bool,
    triton_version: tuple,
) -> PassPlan | None:
    """plan_wavefront_lanes' pass with W_in on chip, or None where it does not fit in one wave or would not
    compile within limits (kept per installed Triton version, which the planner's rules read): the widest
    batch tile that fits, else, if `narrow_tiles`, 16-row tiles (more units a program, each step looping
    over more tiles: by the MODEL slower than the wide tiles with W_in streamed, where that streams well;
    faster than layer by layer, Elman fp16 B64 H768 on an H100: 2.77 against 5.78 ms)."""
    k = gates * hidden if backward else hidden
    widest = _pass_plan(gates, hidden, batch, elem, gpu, backward, lanes, False, k)
    candidates = [widest]
    if narrow_tiles and widest.block_b > MIN_DOT:
        candidates += [_tiling(gates, hidden, batch, MIN_DOT, elem, gpu, backward, lanes, OPERAND_BUDGET_BYTES, 1, k)]
    for plan in candidates:
        if plan.stationary and plan.programs <= gpu.sm_count:
            pieces = k_pieces(k, max(plan.k_pieces))
            k_split = plan.num_warps if triton_version < (3, 9) else plan.k_split
            while k_split > 1 and min(pieces) < MIN_DOT * k_split:
                k_split //= 2
            plan = dataclasses.replace(plan, k_pieces=pieces, k_split=k_split, in_pieces=pieces)
            if _slices_compile(plan, gates, hidden, elem, gpu, backward, triton_version):
                return plan
    return None


def _slices_compile(
    plan: PassPlan, gates: int, hidden: int, elem: int, gpu: Gpu, backward: bool, triton_version: tuple
) -> bool:
    """Whether a plan (one wave of stationary programs) with both slices on chip compiled, as launched,
    without spilling, or (backwards over MAX_INPUT_SLICES_BYTES) without a local load or store per step."""
    # Compiled as launched (Triton 3.9), the forward's two slices spilled 32-376 B per thread at 255
    # registers with H not a multiple of 16 (H 257, every dtype, B 1-64, sm_80 and sm_90), and with 64-row
    # tiles on sm_80 (fp32 H256: 104 B; fp16/bf16 H512: 3.3 KB); none of the others (42 kernels) spilled.
    if hidden % MIN_DOT or (gpu.arch < 90 and plan.block_b >= WIDE_TILE_ROWS):
        return False
    # Slices of more than this many bytes (both together) spilled in forwards of 32-row tiles (LSTM, GRU
    # fp32 H384 B64: 80 B, Triton 3.9, sm_90); with 16-row tiles the forwards compiled clean (LSTM, GRU
    # fp16 B16 H768: 196,608 B, 243-248 registers). Of the backwards with 16-row tiles over it (`python -m
    # bench report --wavefront-kernels`, H 384-1024, B 1-64, sm_90; all 196,608 B), with Triton 3.9 and the
    # warps the launcher picks (launch.without_spills), 10 of 21 spill nothing and 11 spill 8-24 B (LSTM
    # fp16/bf16 H768 B1/B16, fp32 H384 B1-B32; GRU fp32 H512 B16/B32, fp16/bf16 H1024 B16), none of them
    # in a local load or store in the time loop (bench/hardware.py: loop_local_accesses); with 3.6 (below)
    # the 14 in 16 bits, K split across all 8 warps, took 108-190 registers, none spilled.
    over = plan.weight_bytes > MAX_INPUT_SLICES_BYTES
    if over and plan.block_b > MIN_DOT:
        return False
    # With 32-row tiles (B64) slices of 96 KiB and more compiled to 254-255 registers and some spilled 8-24
    # B (Triton 3.9): the backward's (LSTM bf16 H512 on sm_90, GRU fp32 H384: 8 B, 2,848 B on sm_80) and
    # the Elman cell's forward on sm_90 (fp16/bf16 H768: 24 B; on sm_80 255 registers, none spilled); the
    # LSTM's and GRU's 16-bit forwards at 131,072 B took 218-220 registers. In 32 bits the forwards at
    # 96 KiB and more (`python -m bench report --wavefront-kernels`, H 64-1024, B 1-64: 8 passes) took
    # 250-255 registers; the 3 with the longest K spilled 72-96 B (LSTM, GRU H512 B32 on sm_90; Elman H768
    # B32 on sm_80), the 5 with K up to 768 (LSTM, GRU H384) or 1,024 (Elman H512) did not.
    elman_forward_on_sm90 = gates == 1 and gpu.arch >= 90
    long_k_in_32_bits = elem == 4 and hidden >= (512 if gates > 1 else 768)
    wide = plan.block_b > MIN_DOT
    if (
        wide
        and plan.weight_bytes >= MAX_WIDE_TILE_INPUT_SLICES_BYTES
        and (backward or elman_forward_on_sm90 or long_k_in_32_bits)
    ):
        return False
    # Triton 3.6.0, compiled as launched: of 70 forwards with both slices at H 256-768 (every cell,
    # fp16/fp32, B 1-64, sm_80 and sm_90) 17 spilled 16-256 B at 255 registers, 9 of them with tiles of 32
    # or 64 rows; with 16-row tiles K split across every warp compiled those tried (LSTM fp16 B16 H768 on
    # sm_90: 222 registers, 0 B) without spilling (tests/test_compile.py). Over MAX_INPUT_SLICES_BYTES
    # (196,608 B, `python -m bench report --wavefront-kernels` at H 64-1024, B 1-64: 590 passes) 3 spilled
    # 24-32 B at 255 registers: LSTM fp16/bf16 H384 B64 (K split 4 ways, not 8) and Elman fp32 H768 B32 on
    # sm_90; the 12 others (K split across all 8 warps) compiled clean, and the 10 of them in 16 bits are
    # kept.
    if triton_version < (3, 9):
        return not wide and not (over and (plan.k_split < plan.num_warps or elem == 4))
    return True


@dataclass(frozen=True)
class WavefrontPlan:
    """A forward of `num_layers` stacked layers as one grid-synchronised launch in which layer l runs step
    t - l while layer 0 runs step t (a wavefront): T + L - 1 barrier steps instead of L x T. Every layer's
    programs keep their slices on chip at once: layer 0's W_hh (its W_ih projection stays a GEMM before
    the scan), an upper layer's W_ih and W_hh stacked, one dot over [y_t of the layer below, h_{t-1}] per
    step (K = input + H). Where that is impossible (`reason`) the layers run one after the other, as
    today. The design bench/model.py models beside the built one: the kernels run plan_wavefront_lanes'
    plans (one pass plan for every layer)."""

    num_layers: int
    first: PassPlan | None  # layer 0's forward (K = H)
    upper: PassPlan | None  # each upper layer's forward (all plan alike)
    reason: str  # why the layers run one after the other; "" for a wavefront

    @property
    def wavefront(self) -> bool:
        return not self.reason

    @property
    def programs(self) -> int:
        return self.first.programs + (self.num_layers - 1) * self.upper.programs if self.wavefront else 0

    def barrier_steps(self, seq_len: int) -> int:
        """Grid-barrier steps of a forward (each layer's T steps when they run one after the other)."""
        return seq_len + self.num_layers - 1 if self.wavefront else self.num_layers * seq_len


# Why a bidirectional stack has no wavefront: at time t layer l + 1 reads both directions' outputs of
# layer l, and layer l's reverse direction reaches t = 0 (the forward direction's first input) at its
# last step, its forward direction reaches t = T - 1 (the reverse direction's first input) at its last.
NO_BIDIRECTIONAL_WAVEFRONT = (
    "bidirectional: each direction of layer l + 1 starts from an output layer l writes at its last step"
)


def plan_wavefront(
    cell: str,
    hidden_size: int,
    batch_size: int,
    dtype: torch.dtype,
    num_layers: int,
    directions: int = 1,
    device: torch.device | None = None,
) -> WavefrontPlan:
    """The wavefront plan of a forward through `num_layers` layers of `cell` (input size of the upper
    layers = hidden size), or why there is none: one layer, a bidirectional stack, no grid barrier, or
    slices that do not fit on chip at once. Each layer gets a share of the SMs: of the forward plans
    (_pass_plan, one direction, no K groups) that keep their slices stationary within their shares and
    together fit the GPU's SMs, the one whose largest slice per program is smallest (its re-read from
    shared memory is the longest of each step), then whose dots take the fewest K pieces (each is its own
    dot), then with the fewest programs."""
    gpu = target_gpu(device)
    if num_layers < 2:
        return WavefrontPlan(num_layers, None, None, "one layer")
    if directions == 2:
        return WavefrontPlan(num_layers, None, None, NO_BIDIRECTIONAL_WAVEFRONT)
    if not grid_sync_allowed():
        return WavefrontPlan(num_layers, None, None, "no grid barrier")
    gates, elem = GATES[cell], dtype.itemsize
    batch_tiles = {triton.cdiv(max(batch_size, 1), rows) for rows in (MIN_DOT, 2 * MIN_DOT, MAX_BLOCK_B)}
    widths = [1 << i for i in range(triton.next_power_of_2(hidden_size).bit_length())]
    shares = sorted({b * triton.cdiv(hidden_size, n) for b in batch_tiles for n in widths} - {0})

    def plans(input_size: int, most: int) -> list[PassPlan]:
        found = []
        for share in (share for share in shares if share <= most):
            plan = _pass_plan(
                gates, hidden_size, batch_size, elem, dataclasses.replace(gpu, sm_count=share), False, 1, False,
                input_size,
            )  # fmt: skip
            if plan.stationary and plan.programs <= share and plan not in found:
                found.append(plan)
        return found

    best = None
    for first in plans(0, gpu.sm_count):
        for upper in plans(hidden_size, (gpu.sm_count - first.programs) // (num_layers - 1)):
            pieces = max(len(first.k_pieces), len(upper.k_pieces))
            programs = first.programs + (num_layers - 1) * upper.programs
            key = (max(first.weight_bytes, upper.weight_bytes), pieces, programs)
            if best is None or key < best[0]:
                best = key, first, upper
    if best is None:
        return WavefrontPlan(num_layers, None, None, "the layers' slices do not fit on chip at once")
    return WavefrontPlan(num_layers, best[1], best[2], "")
