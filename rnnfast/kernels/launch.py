"""Launching a scan kernel: the plan, the grid barrier or its fallback, device and interpreter handling.

With the plan's grid barrier one launch runs every step: the programs meet at a barrier between steps
(kernels/recurrence.py, grid_arrive and grid_wait). Every program must then be resident at once; on a CUDA device the
compiled kernel's registers and shared memory are checked against the device before that launch. The
fallback launches the same kernel once per step (the kernel boundary is the barrier; on CUDA the step
loop is a CUDA graph, replayed): wherever co-residency cannot be guaranteed, under RNNFAST_NO_GRID_SYNC=1,
under the serial interpreter, and on a device where a barrier has timed out before. The fallback runs by
its own plan (plan_scan with grid_sync=False), which never has programs share a dot's K (K groups): they
exchange partial products within a launch, so they too must all be resident at once. Each launch runs the
plan's num_warps unless its kernel, compiled as launched, spills registers; then the first of WARPS_TRIED
that does not (without_spills).

A barrier that times out (programs not co-resident after all: MPS or MIG limits, another kernel holding
SMs, a debugger) sets an error flag instead of hanging; the host then raises GridSyncTimeout, warns once
and runs every later scan on that device with the fallback. Reading the flag is a device-to-host copy
that waits for the launch to finish, so it is not read after each launch: the launches made inside
error_flags_read_once share one flag per device, read when it exits (rnnfast.ops opens one per scan, a
module one around all its layers), and inside autograd's backward error_flags_read_after_backward
shares one per backward call, read once that whole backward has finished. A flag written inside a CUDA
graph capture is never read (its value exists only when the graph is replayed).
"""

import collections
import contextlib
import functools
import threading
import warnings
from dataclasses import dataclass

import torch
import triton

from ..dispatch import interpreting
from .configs import Gpu, plan_scan, plan_wavefront_lanes

# How long a program waits at one barrier before giving up. The threaded interpreter runs a step of
# every program in Python, so it gets far longer.
GRID_SYNC_TIMEOUT_NS = {"gpu": 2_000_000_000, "interpreter": 120_000_000_000}
_timed_out_devices: set[str] = set()
STREAM_STAGES = 3
# CUDA graphs of the fallback's step loops kept for reuse (most recently used last); see _run_steps.
STEP_GRAPHS = 16
_step_graphs: dict[tuple, "torch.cuda.CUDAGraph"] = {}


class GridSyncTimeout(RuntimeError):
    """A grid barrier timed out: the scan's results are invalid."""


def bf16_under_interpreter(dtype: torch.dtype) -> bool:
    """bf16 data run by Triton's interpreter, which computes bf16 arithmetic (tl.dot included) on raw bit
    patterns and truncates fp32 -> bf16 casts: kernels then upcast the dot operands to fp32 and round
    stores explicitly. On a GPU bf16 operands go to the tensor cores as they are."""
    return dtype == torch.bfloat16 and interpreting()


def dot_precision(dtype: torch.dtype) -> str:
    """fp32 recurrent dots follow torch.nn on CUDA: cuDNN's RNNs use TF32 tensor cores while
    torch.backends.cudnn.allow_tf32 is on (the default), IEEE fp32 when it is off. The interpreter
    always computes IEEE, so that tests compare tightly."""
    if dtype == torch.float32 and not interpreting() and torch.backends.cudnn.allow_tf32:
        return "tf32"
    return "ieee"


def scan_constexprs(dtype: torch.dtype) -> dict:
    """The constexprs every scan kernel takes from the layer's dtype."""
    return dict(DOT_PRECISION=dot_precision(dtype), BF16_INTERPRETER=bf16_under_interpreter(dtype))


@dataclass(frozen=True)
class Wavefront:
    """A unidirectional stack of layers scanned as one wavefront (rnnfast/wavefront.py): the scan's lanes
    are its layers (kernels/recurrence.py, lane_schedule). Layer l > 0 projects its input, h_t of layer
    l - 1 scaled by its dropout noise, inside the kernel."""

    w_in: torch.Tensor  # [L, G*H, H] each layer's input weight (layer 0's zeros: its lane multiplies them by zeros)
    noise: torch.Tensor | None  # [L, T, B, H] each layer's dropout scales (layer 0's not read); None: no dropout


# Chunks of K of a wavefront's input dots, streamed from L2 during the barrier wait.
WAVEFRONT_BLOCK_K = 64


def wavefront_block_k(hidden: int) -> int:
    """The K chunk of a wavefront's streamed input dots for this hidden size (a dot at least 16 deep)."""
    return max(16, min(WAVEFRONT_BLOCK_K, triton.next_power_of_2(hidden)))


def wavefront_arguments(wavefront: Wavefront | None, w_hh: torch.Tensor, seq_len: int) -> tuple:
    """(tensors w_in and noise, scalars, constexprs, steps) of a scan kernel's wavefront parameters:
    T + WAVEFRONT_LAG * (L - 1) steps for a wavefront; for a layer's directions, unused stand-ins."""
    if wavefront is None:
        constexprs = dict(WAVEFRONT=False, HAS_NOISE=False, BLOCK_K_IN=16)
        return (w_hh, w_hh), dict(num_layers=1), constexprs, seq_len
    from .recurrence import WAVEFRONT_LAG

    layers, hidden = w_hh.shape[0], w_hh.shape[2]
    noise = wavefront.noise if wavefront.noise is not None else w_hh
    constexprs = dict(WAVEFRONT=True, HAS_NOISE=wavefront.noise is not None, BLOCK_K_IN=wavefront_block_k(hidden))
    return (wavefront.w_in, noise), dict(num_layers=layers), constexprs, seq_len + WAVEFRONT_LAG.value * (layers - 1)


def _device_key(device: torch.device) -> str:
    return "interpreter" if interpreting() else str(device)


def timed_out(device: torch.device | None) -> bool:
    """Whether a grid barrier has timed out on `device` before (its scans then run the fallback)."""
    return _device_key(device or torch.device("cpu")) in _timed_out_devices


def blocks_per_sm(gpu: Gpu, registers: int, shared_bytes: int, num_warps: int) -> int:
    """How many blocks of a compiled kernel one SM holds at once (registers allocated per warp in
    units of 256, as the CUDA occupancy calculator does)."""
    threads = 32 * num_warps
    by_threads = gpu.max_threads_per_sm // threads
    by_registers = gpu.registers_per_sm // (triton.cdiv(registers * 32, 256) * 256 * num_warps)
    by_shared = gpu.shared_per_sm // shared_bytes if shared_bytes else by_threads
    return min(by_threads, by_registers, by_shared)


# What a CUDA launch's compiled kernel decided (without_spills' options, _co_resident), per device, grid
# and specialisation: each decision looks up or compiles the kernel (kernel.warmup: Triton's argument
# binding and cache lookup, about a launch's host cost) for up to five candidates, so it is made once.
_cuda_decisions: dict[tuple, object] = {}


@functools.cache
def _parameters(kernel) -> tuple[tuple[str, ...], frozenset[str]]:
    """A kernel's parameter names in order, and those that are not constexprs."""
    return tuple(p.name for p in kernel.params), frozenset(p.name for p in kernel.params if not p.is_constexpr)


def specialisation(kernel, args: tuple, kwargs: dict) -> tuple:
    """The launch as the compiled kernel depends on it, at least as finely as Triton's launcher tells
    launches apart: tensors by dtype and 16-byte alignment, integers of runtime parameters by whether they
    equal 1, are divisible by 16 and fit 32 bits, everything else (constexprs, launch options) by value."""
    names, runtime = _parameters(kernel)

    def described(name: str, value):
        if torch.is_tensor(value):
            return ("tensor", value.dtype, value.data_ptr() % 16 == 0)
        if name in runtime and isinstance(value, int) and not isinstance(value, bool):
            return ("int", value == 1, value % 16 == 0, -(2**31) <= value < 2**31)
        return (type(value).__name__, value)

    bound = [*zip(names, args), *sorted(kwargs.items())]
    return (kernel, *((name, described(name, value)) for name, value in bound))


def _decided_once(kind: str, kernel, grid, args, kwargs, decide):
    """decide() for a CUDA launch, remembered per device, grid and specialisation."""
    key = (kind, args[0].device.index, tuple(grid), specialisation(kernel, args, kwargs))
    if key not in _cuda_decisions:
        _cuda_decisions[key] = decide()
    return _cuda_decisions[key]


def _co_resident(kernel, grid, args, kwargs, gpu: Gpu) -> bool:
    """Whether every program of this launch fits on the device at once (CUDA only: compiles the kernel
    as it will be launched, without launching it)."""

    def decide() -> bool:
        compiled = kernel.warmup(*args, grid=grid, **kwargs)
        compiled._init_handles()  # loads the binary: registers per thread are known from then on
        blocks = blocks_per_sm(gpu, compiled.n_regs, compiled.metadata.shared, compiled.metadata.num_warps)
        return grid[0] * grid[1] * grid[2] <= blocks * gpu.sm_count

    return _decided_once("co_resident", kernel, grid, args, kwargs, decide)


# The warps tried, after the plan's own, for a launch whose compiled kernel spills: ptxas now and then
# spills a few values that live across the time loop (8-16 B per thread at 64-136 registers) where
# another warp count compiles the same launch without spilling (measured on sm_80 and sm_90).
WARPS_TRIED = (8, 4, 16)
# Where every warp count spills, a last try lets ptxas use up to this many registers per thread: left to
# its own heuristics it once capped the GRU fp16 backward at B1 H100 (sm_90) at 128 registers and spilled
# 8-16 B at 4, 8 and 16 warps; with maxnreg 255 it took 210 and spilled nothing (compiled). Since the GRU
# kernels' rewrite for the wavefront that kernel compiles at 8 warps to 128 registers without spilling,
# so the choice is tested with a stand-in compile (tests/test_compile.py). Not the default: set globally
# it made other kernels spill (the Elman forward, 24-48 B at 255 registers).
MAX_REGISTERS = 255
# Set by bench/hardware.py while it records launches on meta tensors: compiles a launch offline for
# the planned GPU, as _cuda_resources does on a CUDA device.
_offline_compilers: list = []


@contextlib.contextmanager
def compiling_offline(compile_launch):
    """Inside this context, launches on meta tensors choose their warps as on a GPU, with
    `compile_launch(kernel, grid, args, kwargs)` -> (spill bytes, shared bytes) compiling them."""
    _offline_compilers.append(compile_launch)
    try:
        yield
    finally:
        _offline_compilers.pop()


def _cuda_resources(kernel, grid, args, kwargs) -> tuple[int, int]:
    compiled = kernel.warmup(*args, grid=grid, **kwargs)
    compiled._init_handles()  # loads the binary: spills (local memory per thread) are known from then on
    return compiled.n_spills, compiled.metadata.shared


def without_spills(kernel, grid, args, kwargs: dict, device: torch.device, gpu: Gpu) -> dict:
    """The launch's keyword arguments with the first num_warps (the plan's, then WARPS_TRIED) whose
    kernel, compiled as it will be launched, spills nothing and fits the block's shared memory, else the
    plan's warps with maxnreg=MAX_REGISTERS if that does; when none does, the one of those that fits and
    spills least (the plan's if none fits), and the plan's under the interpreter (no compile). On a CUDA
    device Triton compiles each candidate for the device, once per specialisation (_decided_once);
    bench/hardware.py makes the same choice offline (compiling_offline)."""
    if device.type == "cuda":
        resources = _cuda_resources
    elif device.type == "meta" and _offline_compilers:
        resources = _offline_compilers[-1]
    else:
        return kwargs

    def decide() -> dict:
        """The options (num_warps, maxnreg) that differ from the plan's."""
        warps = dict.fromkeys((kwargs["num_warps"], *WARPS_TRIED))
        candidates = [{"num_warps": w} for w in warps]
        # (maxnreg only where a block of the plan's warps can hold that many registers per thread: at 16
        # warps ptxas then compiled 244 registers a thread, twice what an SM holds for the block.)
        if MAX_REGISTERS * 32 * kwargs["num_warps"] <= gpu.registers_per_sm:
            candidates.append({"maxnreg": MAX_REGISTERS})
        spilling = []
        for options in candidates:
            spill_bytes, shared_bytes = resources(kernel, grid, args, {**kwargs, **options})
            if shared_bytes <= gpu.shared_per_block:
                if spill_bytes == 0:
                    return options
                spilling.append((spill_bytes, options))
        # (The LSTM fp16 B16 H768 backward with the layer above's W_in on chip, sm_90, Triton 3.9: 24 B at
        # 8 warps, one local load per step; 16 B at maxnreg 255, none in the time loop.)
        return min(spilling, key=lambda entry: entry[0])[1] if spilling else {}

    options = _decided_once("options", kernel, grid, args, kwargs, decide) if device.type == "cuda" else decide()
    return {**kwargs, **options}


@functools.cache
def _warn_timeout(device_key: str) -> None:
    warnings.warn(
        f"rnnfast: a grid barrier timed out on {device_key} (its programs were not all resident at once); "
        "scans on this device now launch one kernel per step",
        RuntimeWarning,
        stacklevel=4,
    )


def flag_is_set(flag: torch.Tensor) -> bool:
    """The one read of an error flag: a device-to-host copy, which waits for every launch before it."""
    return bool(flag.item())


class ErrorFlags:
    """The error flags of grid-barrier launches not read yet: one per device, shared by the launches (a
    kernel only ever raises its flag, atomic_max), with the scans that launched into it."""

    def __init__(self):
        self.flags: dict[torch.device, torch.Tensor] = {}
        self.scans: dict[torch.device, list[str]] = {}

    def flag(self, device: torch.device) -> torch.Tensor:
        if device not in self.flags:
            self.flags[device] = torch.zeros(1, dtype=torch.int32, device=device)
        return self.flags[device]

    def launched(self, device: torch.device, scan: str) -> None:
        """A launch of `scan` ("lstm forward") reports to the device's flag."""
        self.scans.setdefault(device, []).append(scan)

    def check(self) -> None:
        """Reads once the flag of each device launched to; where a barrier timed out: sends later scans on
        that device to the fallback, warns once and raises GridSyncTimeout."""
        for device in self.scans:
            if flag_is_set(self.flags[device]):
                key = _device_key(device)
                _timed_out_devices.add(key)
                _warn_timeout(key)
                counts = collections.Counter(self.scans[device])
                scans = ", ".join(f"{scan} x{n}" if n > 1 else scan for scan, n in counts.items())
                raise GridSyncTimeout(
                    f"rnnfast: a grid barrier timed out on {key}, in one of these scans: {scans}; their results "
                    "are invalid. Later scans on this device launch one kernel per step (the fallback)."
                )


_open = threading.local()  # .flags: the ErrorFlags this thread's grid-barrier launches go to, or None
_backward_flags: dict[int, ErrorFlags] = {}  # per autograd graph task (backward call) still running
_backward_flags_lock = threading.Lock()


@contextlib.contextmanager
def error_flags_read_once():
    """Inside, this thread's grid-barrier launches share one error flag per device, read (one
    device-to-host copy each) when the outermost of these contexts exits; not read when it exits with an
    exception, whose results are not returned either. Nested, it joins the open one."""
    if getattr(_open, "flags", None) is not None:
        yield
        return
    flags = _open.flags = ErrorFlags()
    try:
        yield
    finally:
        _open.flags = None
    flags.check()


def _check_backward(task: int) -> None:
    with _backward_flags_lock:
        flags = _backward_flags.pop(task)
    flags.check()


@contextlib.contextmanager
def error_flags_read_after_backward():
    """Inside autograd's backward, the grid-barrier launches share the flags of that backward call, read
    once by a callback autograd runs when the whole backward has finished, every layer and module in it
    (GridSyncTimeout is then raised by backward() or torch.autograd.grad); elsewhere
    error_flags_read_once."""
    task = torch._C._current_graph_task_id()
    if task < 0:
        with error_flags_read_once():
            yield
        return
    with _backward_flags_lock:
        flags = _backward_flags.get(task)
        if flags is None:
            flags = _backward_flags[task] = ErrorFlags()
            torch.autograd.Variable._execution_engine.queue_callback(functools.partial(_check_backward, task))
    previous, _open.flags = getattr(_open, "flags", None), flags
    try:
        yield
    except BaseException:
        # The backward fails: autograd runs no callback, so nothing reads these flags.
        with _backward_flags_lock:
            _backward_flags.pop(task, None)
        raise
    finally:
        _open.flags = previous


def _unread(device: torch.device) -> bool:
    """Whether launches on `device` report to a flag of their own that is never read: inside a CUDA graph
    capture, and on meta tensors (bench/hardware.py's recorded launches hold no values)."""
    return device.type == "meta" or (device.type == "cuda" and torch.cuda.is_current_stream_capturing())


def run_scan(
    cell: str, scan_pass: str, kernel, w_hh: torch.Tensor, tensors: tuple, scalars: dict, constexprs: dict,
    steps: int | None = None,
) -> None:  # fmt: skip
    """Launches `kernel` (the `scan_pass` kernel of `cell`, recurrent weights w_hh [D, G*H, H] among
    `tensors`) over `steps` steps (default scalars["T"]) of D lanes (directions, or a wavefront's layers),
    as plan_scan plans them for this hidden size, batch, dtype and device: every lane in one launch, or
    one launch (sequence) per lane."""
    device = w_hh.device
    steps = scalars["T"] if steps is None else steps
    planner = plan_wavefront_lanes if constexprs.get("WAVEFRONT") else plan_scan
    plan_of = functools.partial(planner, cell, scalars["H"], scalars["B"], w_hh.dtype, device, w_hh.shape[0])
    plan = plan_of()
    # One step has no barrier between steps: the step kernel runs it, without a flag to read back.
    if steps == 1 or _device_key(device) in _timed_out_devices:
        plan = plan_of(grid_sync=False)
    guard = torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
    with guard, error_flags_read_once():
        if plan.grid_sync:
            unread = _unread(device)
            error = torch.zeros(1, dtype=torch.int32, device=device) if unread else _open.flags.flag(device)
            launches = [
                _launch(kernel, plan, scan_pass, tensors, scalars, constexprs, d, error, steps)
                for d in range(0, w_hh.shape[0], plan.directions)
            ]
            # On CUDA the compiled kernel must fit the device at once (the same kernel for every direction).
            if device.type != "cuda" or _co_resident(*launches[0], plan.gpu):
                for kernel, grid, args, kwargs in launches:
                    kernel[grid](*args, **kwargs)
                    if not unread:
                        _open.flags.launched(device, f"{cell} {scan_pass}")
                return
            plan = plan_of(grid_sync=False)
        for direction_start in range(0, w_hh.shape[0], plan.directions):
            launch = _launch(kernel, plan, scan_pass, tensors, scalars, constexprs, direction_start, None, steps)
            _run_steps(*launch, steps)


def _launch(
    kernel,
    plan,
    scan_pass: str,
    tensors: tuple,
    scalars: dict,
    constexprs: dict,
    direction_start: int,
    error: torch.Tensor | None,
    steps: int,
) -> tuple:
    """(kernel, grid, args, kwargs) of the launch running directions direction_start ... of `plan`'s pass:
    every step with the grid barrier, reporting a timeout in `error`, or (error None) the fallback's one
    step."""
    whole = error is not None
    pass_plan = plan.forward if scan_pass == "forward" else plan.backward
    assert whole or pass_plan.k_groups == 1, "K groups need the grid barrier"
    device = tensors[0].device
    grid = (pass_plan.hidden_tiles * pass_plan.k_groups, pass_plan.batch_tiles, plan.directions)
    programs = grid[0] * grid[1] * grid[2]
    grouped = pass_plan.k_groups > 1
    exchange = torch.empty(
        programs * pass_plan.block_b * pass_plan.dot_columns if grouped else 1, dtype=torch.float32, device=device
    )
    # The barrier's counters start at zero; the fallback's kernel never reads them nor its error flag (on a
    # GPU each torch.zeros is a fill kernel, launched per step of a decoder running T=1 scans).
    counters = torch.zeros if whole else torch.empty
    barrier = counters(2 + (programs if grouped else 0), dtype=torch.int32, device=device)
    if error is None:
        error = torch.empty(1, dtype=torch.int32, device=device)
    kwargs = dict(
        **scalars,
        direction_start=direction_start,
        timeout_ns=GRID_SYNC_TIMEOUT_NS["interpreter" if interpreting() else "gpu"],
        t_start=0,
        n_steps=steps if whole else 1,
        USE_BARRIER=whole,
        **constexprs,
        BLOCK_B=pass_plan.block_b,
        BLOCK_N=pass_plan.block_n,
        K_PIECES=pass_plan.k_pieces,
        K_SPLIT=pass_plan.k_split,
        K_GROUPS=pass_plan.k_groups,
        BLOCK_K=pass_plan.block_k,
        num_warps=pass_plan.num_warps,
        # A stationary slice leaves nothing for the software pipeliner to overlap but the step's operand
        # loads, which it would multi-buffer in shared memory beside the slice (past the limit, measured);
        # streamed chunks keep Triton's default stages.
        num_stages=1 if pass_plan.stationary else STREAM_STAGES,
        # The GPU computes the arithmetic as written (its fused multiply-adds are the tl.fma calls), which
        # is what the interpreter computes: the compiler does not contract a * b + c on its own, whatever
        # Triton's default (it changes in Triton 3.10).
        enable_fp_fusion=False,
    )
    if "IN_PIECES" in kwargs:  # a wavefront forward's W_in on chip, by the plan
        kwargs["IN_PIECES"] = pass_plan.in_pieces
    args = (*tensors, exchange, barrier, error)
    return kernel, grid, args, without_spills(kernel, grid, args, kwargs, device, plan.gpu)


def _run_steps(kernel, grid: tuple, args: tuple, one_step: dict, steps: int) -> None:
    """The fallback: one launch per step. On a CUDA device the step loop is captured in a CUDA graph and
    replayed, so that T steps cost one call from Python instead of T launches (about 20 us each); the
    graph is kept for the next call with the very same arguments (buffer addresses included: a training
    loop's allocations repeat), up to STEP_GRAPHS of them. Inside a caller's own capture the steps are
    launched into that capture."""
    device = args[0].device

    def launch_steps():
        for step in range(steps):
            kernel[grid](*args, **{**one_step, "t_start": step})

    if device.type != "cuda" or steps == 1 or torch.cuda.is_current_stream_capturing():
        launch_steps()
        return
    described = tuple((a.data_ptr(), a.shape, a.stride(), a.dtype) if torch.is_tensor(a) else a for a in args)
    key = (kernel, grid, described, tuple(sorted(one_step.items())), steps)
    graph = _step_graphs.pop(key, None)
    if graph is None:
        # Compiled outside the capture (a module load is not capturable); the capture itself runs nothing.
        kernel.warmup(*args, grid=grid, **one_step)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.stream(torch.cuda.Stream(device)):
            graph.capture_begin(capture_error_mode="thread_local")
            try:
                launch_steps()
            finally:
                graph.capture_end()
    _step_graphs[key] = graph
    while len(_step_graphs) > STEP_GRAPHS:
        _step_graphs.pop(next(iter(_step_graphs)))
    graph.replay()
