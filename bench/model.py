"""A latency MODEL (not a measurement) of one scan layer, one direction, T steps, on a GPU, and the rule by
which torch.nn picks its cuDNN algorithm.

The model takes what a plan does, per pass (`PassWork`): how many programs, how many launches, what one
program does each time step (hidden tiles walked one after another, K chunks of the recurrent dot, L2 round
trips it waits for, bytes it reads from L2 and from shared memory, dot FLOPs, whether the dot runs on tensor
cores) and how many grid barriers separate the steps. A step costs the critical program's cycles

    round_trips x L2_LATENCY + chunks x CHUNK_CYCLES + tiles x TILE_CYCLES
    + max(MMA chain x MMA_LATENCY_CYCLES, dot FLOPs / dot rate) + K-split sums x CHUNK_CYCLES
    + shared bytes / SHARED_BYTES_PER_CYCLE

times the waves of programs over the SMs, or the aggregate L2 traffic of all programs over the L2
bandwidth if that is longer, plus BARRIER_S per barrier. A pass launched once costs LAUNCH_S plus T steps;
a pass launched once per step costs, per launch, the longer of LAUNCH_S (the host issuing launches from
Python) and the step plus KERNEL_GAP_S. A layer adds the GEMMs around the scan at GEMM_EFFICIENCY of
peak (input projection forward; dx, dW_ih, dW_hh backward), with input size = hidden size.

It is meant to compare plans with each other and with cuDNN's published figure, to within about 2x;
every constant below says where it comes from.
"""

import math
from dataclasses import dataclass

from rnnfast.kernels.configs import GPUS as GPU_SPECS


@dataclass(frozen=True)
class GpuModel:
    name: str
    sm_count: int
    clock_hz: float  # SM clock under sustained load
    l2_latency_cycles: int  # a dependent load that hits L2
    l2_bytes_per_s: float  # aggregate L2 bandwidth
    hbm_bytes_per_s: float
    tensor_flops_per_cycle_per_sm: int  # dense fp16/bf16 tensor-core FLOPs (tf32: half)
    fp32_flops_per_cycle_per_sm: int  # FMA on the CUDA cores (2 FLOPs each)


# Sources. SM counts: kernels/configs.py GPUS (the planner's). HBM bandwidth and tensor/fp32 peaks: NVIDIA's
# H100 (SXM5) and A100 (SXM4) datasheets (H100: 3.35 TB/s, 989 TFLOPS dense fp16 at 1.83 GHz over 132 SMs =
# 4096 FLOPs/cycle/SM, 128 FP32 lanes; A100: 2.04 TB/s, 312 TFLOPS at 1.41 GHz over 108 SMs = 2048
# FLOPs/cycle/SM, 64 FP32 lanes). H100 clock under
# load (1.75 GHz), L2 hit latency (about 300 cycles; 260 near, 600 far or loaded) and aggregate L2
# bandwidth (5.5 TB/s): ../shared/design/WEIGHT_STATIONARY_SCAN.md. A100: boost clock 1.41 GHz; L2 latency
# and bandwidth assumed alike per cycle (300 cycles; 5.5 TB/s scaled by SMs and clock, about 3.6 TB/s).
GPUS = {
    "h100": GpuModel("H100 SXM", GPU_SPECS["h100"].sm_count, 1.75e9, 300, 5.5e12, 3.35e12, 4096, 256),
    "a100": GpuModel("A100 SXM", GPU_SPECS["a100"].sm_count, 1.41e9, 300, 3.6e12, 2.04e12, 2048, 128),
}
# Issuing one Triton launch from Python: 10-30 us (design note); GPU-side gap between dependent kernels.
LAUNCH_S = 20e-6
KERNEL_GAP_S = 2e-6
# One grid barrier (release add + acquire poll through L2, plus the skew of the slowest program): an
# assumption of a few L2 round trips (design note).
BARRIER_S = 1e-6
# A K chunk of a recurrent dot that is not software-pipelined: two CTA barriers, a shared-memory store
# and ldmatrix, the MMAs (design note: about 450 cycles with the L2 round trip).
CHUNK_CYCLES = 150
# Gate math, state update and stores of one hidden tile: the design note's figure for a 16-row, 32-unit
# tile of the kernels it replaced (its sketch of these kernels assumed 250 cycles per step instead).
# Unmeasured; the compiled kernel supports it: the sm_90 LSTM fp16 forward at B16 H768 issues 630
# instructions per warp and step in its time loop (bench/hardware.py, loop_instructions), about 300 of them
# gate math (IEEE activations: tl.div_rn, range-reduced exp) and 80 stores by a reading of its SASS; 8
# warps, two to a scheduler, so about 760 cycles of issue alone (Triton 3.9).
TILE_CYCLES = 800
# A dependent mma.sync m16n8k16 (fp16/bf16; m16n8k8 for TF32) with fp32 accumulation, issue to result:
# about 32 cycles on the A100 in published microbenchmarks (Sun et al., "Dissecting Tensor Cores via
# Microbenchmarks", 2022); assumed alike for the H100's mma.sync and warpgroup MMAs. A warp's MMAs that
# accumulate into the same tile wait for each other, so a dot's latency is its longest chain of them.
MMA_LATENCY_CYCLES = 32
SHARED_BYTES_PER_CYCLE = 128  # per SM (both architectures)
# Large GEMMs reach about this fraction of peak (assumption).
GEMM_EFFICIENCY = 0.6


@dataclass(frozen=True)
class PassWork:
    """What one pass (forward or backward) of a scan does; per program and time step unless named."""

    programs: int  # per launch
    launches: int  # per T steps: 1, or T (one launch per step)
    barriers_per_step: int
    tiles_per_step: int  # hidden tiles a program processes one after another
    chunks_per_step: int  # K chunks its recurrent dots walk
    l2_round_trips_per_step: int  # dependent L2 round trips on its critical path
    l2_bytes_per_step: int  # weights streamed and the recurrent operand (h or the gate gradients)
    shared_bytes_per_step: int  # stationary weights re-read from shared memory
    dot_flops_per_step: int
    mma_chain_per_step: int  # the longest chain of dependent MMAs one warp runs for the recurrent dot
    k_split_sums_per_step: int  # sums of the warps' partial products (K split across warps): 0 or 1
    tensor_cores: bool  # the recurrent dot on tensor cores (fp16/bf16), else fp32 FMA


STEP_TERMS = ("l2_round_trips", "k_chunks", "tiles", "dot", "k_split_sums", "shared_reads")


def step_terms(work: PassWork, gpu: GpuModel) -> dict[str, float]:
    """The cycles one program spends per time step, term by term (their sum is the step's compute)."""
    rate = gpu.tensor_flops_per_cycle_per_sm if work.tensor_cores else gpu.fp32_flops_per_cycle_per_sm
    return {
        "l2_round_trips": work.l2_round_trips_per_step * gpu.l2_latency_cycles,
        "k_chunks": work.chunks_per_step * CHUNK_CYCLES,
        "tiles": work.tiles_per_step * TILE_CYCLES,
        "dot": max(work.mma_chain_per_step * MMA_LATENCY_CYCLES, work.dot_flops_per_step / rate),
        "k_split_sums": work.k_split_sums_per_step * CHUNK_CYCLES,
        "shared_reads": work.shared_bytes_per_step / SHARED_BYTES_PER_CYCLE,
    }


def step_cycles(work: PassWork, gpu: GpuModel) -> float:
    """One program's cycles per time step."""
    return sum(step_terms(work, gpu).values())


def step_seconds(work: PassWork, gpu: GpuModel) -> float:
    """One time step of the pass: the critical program's time, or the L2 traffic of all, plus barriers."""
    waves = math.ceil(work.programs / gpu.sm_count)
    compute = waves * step_cycles(work, gpu) / gpu.clock_hz
    traffic = work.programs * work.l2_bytes_per_step / gpu.l2_bytes_per_s
    return max(compute, traffic) + work.barriers_per_step * BARRIER_S


def pass_seconds(work: PassWork, seq_len: int, gpu: GpuModel) -> float:
    """T steps of the pass, launches included."""
    step = step_seconds(work, gpu)
    if work.launches == 1:
        return LAUNCH_S + seq_len * step
    steps_per_launch = seq_len / work.launches
    return work.launches * max(LAUNCH_S, steps_per_launch * step + KERNEL_GAP_S)


def gemm_seconds(m: int, n: int, k: int, elem_bytes: int, gpu: GpuModel) -> float:
    """[m, k] x [k, n] at GEMM_EFFICIENCY of peak (tensor cores for 2-byte types, fp32 FMA otherwise: torch
    does not use TF32 for matmuls by default), or its HBM traffic if longer."""
    rate = gpu.tensor_flops_per_cycle_per_sm if elem_bytes == 2 else gpu.fp32_flops_per_cycle_per_sm
    flops = 2 * m * n * k / (rate * gpu.sm_count * gpu.clock_hz * GEMM_EFFICIENCY)
    return max(flops, (m * k + k * n + m * n) * elem_bytes / gpu.hbm_bytes_per_s)


def layer_ms(
    forward: PassWork, backward: PassWork, gates: int, seq_len: int, batch: int, hidden: int, elem_bytes: int,
    gpu_name: str, directions: int = 1, launch_groups: int = 1, input_size: int | None = None,
) -> tuple[float, float]:  # fmt: skip
    """MODEL (forward, forward+backward) milliseconds of one layer of `directions` directions: the input
    projection (every direction's in one GEMM) and the forward scan; then the backward scan and the dx,
    dW_ih and dW_hh GEMMs. Input size = hidden unless given. Each pass's PassWork is one launch group's
    (both directions, or one); `launch_groups` of them run one after the other."""
    gpu = GPUS[gpu_name]
    rows, width = seq_len * batch, directions * gates * hidden
    projection = gemm_seconds(rows, width, input_size or hidden, elem_bytes, gpu)
    forward_s = projection + launch_groups * pass_seconds(forward, seq_len, gpu)
    # dx, dW_ih and dW_hh: dx and dW_ih as much work as the projection; dW_hh too when input = hidden.
    if input_size in (None, hidden):
        gemms = 3 * projection
    else:
        gemms = 2 * projection + gemm_seconds(rows, width, hidden, elem_bytes, gpu)
    backward_s = launch_groups * pass_seconds(backward, seq_len, gpu) + gemms
    return forward_s * 1e3, (forward_s + backward_s) * 1e3


def wavefront_step_seconds(layers: list[PassWork], gpu: GpuModel) -> float:
    """One step of a wavefront (kernels/configs.py plan_wavefront): every layer's programs run a step at
    once, in one launch, so the step takes the slowest layer's critical program (times the waves of all
    programs over the SMs), or the L2 traffic of all of them if that is longer, plus one barrier."""
    return overlapped_wavefront_step_seconds(layers, [None] * len(layers), gpu)


def overlapped_wavefront_step_seconds(layers: list[PassWork], waiting: list[PassWork | None], gpu: GpuModel) -> float:
    """One step of a wavefront whose upper layers run two steps behind the layer below (layer l at step
    t - 2l): the input y_t of an upper layer is then published a barrier earlier than its h_{t-1}, so its
    load and its W_ih dot (`waiting[l]`, None for layer 0) run while the program waits at the barrier
    before the step, and only what exceeds the barrier's BARRIER_S is added to the layer's step."""
    barrier_cycles = BARRIER_S * gpu.clock_hz
    cycles = [
        step_cycles(work, gpu) + (0 if extra is None else max(0.0, step_cycles(extra, gpu) - barrier_cycles))
        for work, extra in zip(layers, waiting)
    ]
    programs = sum(work.programs for work in layers)
    compute = math.ceil(programs / gpu.sm_count) * max(cycles) / gpu.clock_hz
    traffic = (
        sum(
            work.programs * (work.l2_bytes_per_step + (0 if extra is None else extra.l2_bytes_per_step))
            for work, extra in zip(layers, waiting)
        )
        / gpu.l2_bytes_per_s
    )
    return max(compute, traffic) + max(work.barriers_per_step for work in layers) * BARRIER_S


def wavefront_forward_ms(
    layers: list[PassWork], gates: int, seq_len: int, batch: int, hidden: int, elem_bytes: int, gpu_name: str,
    waiting: list[PassWork | None] | None = None,
) -> float:  # fmt: skip
    """MODEL forward milliseconds of a stack of len(layers) unidirectional layers as one wavefront
    launch: layer 0's input projection (one GEMM; the upper layers' projections are dots inside their
    steps), one launch, T + L - 1 wavefront steps; with `waiting` (overlapped_wavefront_step_seconds: the
    upper layers' input dots done during the barrier wait) T + 2(L - 1). Input size = hidden."""
    gpu = GPUS[gpu_name]
    projection = gemm_seconds(seq_len * batch, gates * hidden, hidden, elem_bytes, gpu)
    if waiting is None:
        steps, step = seq_len + len(layers) - 1, wavefront_step_seconds(layers, gpu)
    else:
        steps, step = seq_len + 2 * (len(layers) - 1), overlapped_wavefront_step_seconds(layers, waiting, gpu)
    return (projection + LAUNCH_S + steps * step) * 1e3


def lane_wavefront_ms(
    forward: PassWork, forward_waiting: PassWork, backward: PassWork, backward_waiting: PassWork, num_layers: int,
    gates: int, seq_len: int, batch: int, hidden: int, elem_bytes: int, gpu_name: str,
) -> tuple[float, float]:  # fmt: skip
    """MODEL (forward, forward+backward) milliseconds of the wavefront rnnfast builds (rnnfast/wavefront.py):
    every layer runs the same pass plan (`forward`, `backward`: one layer's programs), the upper layers'
    input dots (`*_waiting`: W_ih streamed from L2) during the barrier wait, T + 2(L - 1) steps per pass in
    one launch each. Around them: layer 0's input projection; after the backward, dx of layer 0 and every
    layer's dW_ih and dW_hh (the upper layers' dx is inside the kernel). Input size = hidden."""
    gpu = GPUS[gpu_name]
    steps = seq_len + 2 * (num_layers - 1)
    projection = gemm_seconds(seq_len * batch, gates * hidden, hidden, elem_bytes, gpu)
    upper = num_layers - 1

    def pass_s(work: PassWork, waiting: PassWork) -> float:
        step = overlapped_wavefront_step_seconds([work] * num_layers, [None] + [waiting] * upper, gpu)
        return LAUNCH_S + steps * step

    forward_s = projection + pass_s(forward, forward_waiting)
    backward_s = pass_s(backward, backward_waiting) + (3 + 2 * upper) * projection
    return forward_s * 1e3, (forward_s + backward_s) * 1e3


# cuDNN's STANDARD algorithm runs a layer as a sequence of kernels: per step and direction the recurrent
# GEMM, then the gate kernel that reads its result (forward; backward the gate gradients, then the GEMM
# for dh), so at least two dependent kernels per step. Such a kernel costs at least this much from the
# start of the one before (a GPU-side launch gap: about 1 us between dependent kernels on one stream at
# best, as in CUDA graph replay; the fallback above is charged KERNEL_GAP_S = 2 us).
STANDARD_KERNEL_MIN_S = 1e-6


def _standard_step_seconds(gates: int, hidden: int, elem_bytes: int, gpu: GpuModel, directions: int) -> float:
    return 2 * STANDARD_KERNEL_MIN_S + directions * gates * hidden * hidden * elem_bytes / gpu.l2_bytes_per_s


def cudnn_standard_floor_ms(
    gates: int, seq_len: int, batch: int, hidden: int, elem_bytes: int, gpu_name: str, directions: int = 1,
    input_size: int | None = None,
) -> tuple[float, float]:  # fmt: skip
    """A LOWER BOUND (forward, forward+backward milliseconds) on cuDNN's STANDARD algorithm for one layer,
    input size = hidden size unless given: per step, two dependent kernels of at least
    STANDARD_KERNEL_MIN_S, the GEMM's read of W_hh ([G*H, H] per direction, both directions at once) from
    L2 on top; the same GEMMs around the scan as layer_ms. No published figure: it bounds cuDNN from
    below, it does not predict it."""
    gpu = GPUS[gpu_name]
    step = _standard_step_seconds(gates, hidden, elem_bytes, gpu, directions)
    rows, width = seq_len * batch, directions * gates * hidden
    projection = gemm_seconds(rows, width, input_size or hidden, elem_bytes, gpu)
    forward = projection + seq_len * step
    if input_size in (None, hidden):
        gemms = 3 * projection
    else:
        gemms = 2 * projection + gemm_seconds(rows, width, hidden, elem_bytes, gpu)
    return forward * 1e3, (forward + seq_len * step + gemms) * 1e3


def cudnn_standard_overlapped_floor_forward_ms(
    gates: int, seq_len: int, batch: int, hidden: int, elem_bytes: int, gpu_name: str, num_layers: int
) -> float:
    """A LOWER BOUND on the forward of `num_layers` unidirectional layers under cuDNN's STANDARD algorithm
    if it overlapped the layers perfectly (cuDNN 5 introduced overlap between layers, Appleyard et al.,
    arXiv:1604.01946; how much of it today's cuDNN does is not published): layer 0's projection, then
    T + L - 1 of cudnn_standard_floor_ms's steps, the upper layers' projections hidden entirely."""
    gpu = GPUS[gpu_name]
    projection = gemm_seconds(seq_len * batch, gates * hidden, hidden, elem_bytes, gpu)
    steps = seq_len + num_layers - 1
    return (projection + steps * _standard_step_seconds(gates, hidden, elem_bytes, gpu, 1)) * 1e3


# torch.nn's choice (aten/src/ATen/native/cudnn/RNN.cpp, get_algo), for the GPUs above (sm_80/sm_90 with
# at least 98 SMs).
SMALL_H_LIMIT = {  # use_rnn_persist_small_h: hidden size limit by (forward?, cell)
    (True, "lstm"): 192, (True, "gru"): 192, (True, "rnn_tanh"): 384, (True, "rnn_relu"): 384,
    (False, "lstm"): 128, (False, "gru"): 128, (False, "rnn_tanh"): 256, (False, "rnn_relu"): 256,
}  # fmt: skip


def cudnn_algorithm(
    cell: str, dtype: str, hidden: int, batch: int, input_size: int, forward: bool = True, num_layers: int = 1,
    bidirectional: bool = False, proj_size: int = 0, packed: bool = False,
) -> str:  # fmt: skip
    """The cuDNN RNN algorithm torch.nn runs for this shape on an A100 or H100: STANDARD, PERSIST_STATIC or
    PERSIST_STATIC_SMALL_H (`forward=False`: the backward's, which has lower small-H limits)."""
    if proj_size or packed:
        return "STANDARD"
    if dtype != "fp64" and hidden <= SMALL_H_LIMIT[forward, cell]:
        return "PERSIST_STATIC_SMALL_H"
    common = num_layers == 1 and hidden <= 1024 and not bidirectional and hidden % 128 == 0 and input_size % 128 == 0
    if cell == "gru":
        device = False
    elif cell == "lstm":
        device = batch % 8 == 0 and batch <= 128
    else:
        device = batch % 8 == 0 and batch <= 128 and (batch < 96 or hidden < 896)
    return "PERSIST_STATIC" if dtype == "fp16" and common and device else "STANDARD"
