"""Compiling the kernels rnnfast launches for real GPUs on a machine without one, and reading their resources.

A kernel is compiled as it is launched. Triton's launcher specialises arguments on their values: an integer
equal to 1 becomes a constant, and integers and pointers divisible by 16 are marked so (`tt.divisibility`),
which lets the compiler vectorise loads and drop masks; the same kernel compiled without that can use twice
the registers. So nothing here describes arguments by hand: the cell's own launcher runs, on tensors of the
meta device (shapes, dtypes, no memory), with Triton's `JITFunction.run` replaced by a recorder; each
recorded launch is specialised by Triton's own binder for a CUDA target (`specialize`), compiled offline
(`triton.compile` with a GPUTarget), and cuobjdump (shipped inside triton) reads registers per thread and
stack bytes (spills to local memory) from the cubin. Meta tensors report address 0: every buffer counts
as a fresh 16-byte-aligned allocation, as rnnfast.ops's are; a view at an odd offset would not be.
The launcher itself compiles a launch before running it, to pick warps that do not spill
(launch.without_spills: Triton's compile on a CUDA device); while recording, it is handed this module's
offline compile for the planned GPU (launch.compiling_offline), so the launch recorded is the one that GPU
would run.

EXAMPLE_LAUNCHES holds, per cell (torch's modes lstm, gru, rnn_tanh, rnn_relu), a function

    example_launch(cell, scan_pass, seq_len, batch, hidden, dtype, gpu, directions, training) -> None

  that calls the cell's launcher in rnnfast.kernels for `scan_pass` ("forward" or "backward") exactly as
  rnnfast.ops calls it for one layer of that shape with `directions` directions (1, or 2 for a
  bidirectional layer; `dtype` a torch dtype; `training` for the forward), on fresh buffers of the
  launcher's documented shapes and dtypes on the meta device, planned for `gpu` (a key of configs.GPUS:
  "h100", "a100"). The compile runs without the interpreter, where RNNFAST_PLAN_TARGET is ignored and meta
  tensors are no CUDA device, so the plan reaches the launcher through configs.planning_for(gpu). The
  launcher reaches `kernel[grid](...)` without reading tensor values (a launch is recorded, not run, and
  meta tensors have none): its host-side check of a barrier's error flag is skipped for meta tensors.
  Every kernel it launches is compiled, with the arguments of each launch; launches that specialise alike
  (the steps of a step variant) are compiled once. tests/test_compile.py checks that these launches are
  exactly what rnnfast.ops launches.

Under TRITON_INTERPRET=1 kernels are interpreter objects that cannot be compiled, so `kernel_report` then
runs itself in a subprocess without the interpreter (`python -m bench.hardware`, from the repository root).
"""

import contextlib
import functools
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton.runtime.jit import JITFunction

from bench.cases import DTYPES
from rnnfast.dispatch import interpreting
from rnnfast.kernels import gru, lstm, rnn
from rnnfast.kernels.configs import GATES, GPUS, planning_for
from rnnfast.kernels.launch import Wavefront, compiling_offline

# Per-block hardware limits every compiled kernel is checked against (CUDA programming guide).
SHARED_MEMORY_LIMIT = {gpu.arch: gpu.shared_per_block for gpu in GPUS.values()}
REGISTERS_PER_SM = {gpu.arch: gpu.registers_per_sm for gpu in GPUS.values()}
MAX_REGISTERS_PER_THREAD = 255
# PTX floating-point instructions that do not round as IEEE arithmetic does (PTX ISA): Triton's fp32 `/`
# is div.full, tl.exp ex2.approx, and so on.
APPROXIMATE_PTX = r"\b(?:div\.full|(?:div|rcp|sqrt|rsqrt|ex2|lg2|sin|cos|tanh)\.approx)\b"
_REPOSITORY = pathlib.Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class KernelResources:
    registers: int  # per thread
    spill_bytes: int  # cuobjdump STACK: local memory per thread
    shared_bytes: int  # dynamic shared memory per block
    mma_instructions: int  # tensor-core MMA instructions in the SASS (HMMA, HGMMA): per warp and step in a
    # stationary scan, whose only dot is in the time loop
    approximate_instructions: int  # approximate floating-point PTX instructions (div.full, ex2.approx, ...):
    # results the interpreter, which computes IEEE arithmetic, does not reproduce
    loop_instructions: int  # SASS instructions in the body of the outermost loop (a scan's time loop; its
    # barrier's polling loop counted once): what each warp issues per step
    loop_local_accesses: int  # of those, local-memory loads and stores (LDL, STL): spill traffic per step

    def fits(self, arch: int, num_warps: int) -> bool:
        """Whether one block of `num_warps` warps can run: its registers (all its threads') and shared memory
        within an SM's."""
        block_registers = self.registers * 32 * num_warps
        return (
            self.registers <= MAX_REGISTERS_PER_THREAD
            and block_registers <= REGISTERS_PER_SM[arch]
            and self.shared_bytes <= SHARED_MEMORY_LIMIT[arch]
        )


@dataclass(frozen=True)
class Launch:
    """One `kernel[grid](*args, **kwargs)` call, recorded instead of run."""

    kernel: JITFunction
    grid: tuple
    args: tuple
    kwargs: dict


@contextlib.contextmanager
def recording():
    """Inside this context, `kernel[grid](...)` launches of any JIT kernel are appended to the yielded
    list instead of running (no GPU, no compile)."""
    if interpreting():
        raise RuntimeError("recording needs Triton's JIT kernels: run without TRITON_INTERPRET=1")
    launches: list[Launch] = []
    original = JITFunction.run

    def record(self, *args, grid, warmup, **kwargs):
        if callable(grid):  # Triton calls it with the bound arguments, by name
            named = dict(zip(self.arg_names, args)) | {k: v for k, v in kwargs.items() if k in self.arg_names}
            grid = grid(named)
        launches.append(Launch(self, tuple(grid), args, kwargs))

    JITFunction.run = record
    try:
        yield launches
    finally:
        JITFunction.run = original


@dataclass(frozen=True)
class Specialization:
    """What Triton's launcher would compile for one launch: the arguments `triton.compile` takes."""

    signature: dict  # name -> "*fp16", "i32", "constexpr", ...
    constexprs: dict  # (index,) -> value: the constexpr parameters, and integers specialised to 1
    attrs: dict  # (index,) -> [["tt.divisibility", 16]] for arguments divisible by 16
    options: dict  # num_warps, num_stages, ...

    def describe(self, kernel: JITFunction) -> str:
        """The value specialisation in words: "B=1, H%16, pointers%16 5/5"."""
        names = kernel.arg_names
        params = {index for index in range(len(names)) if index not in kernel.constexprs}
        ones = [names[i] for (i,), _ in self.constexprs.items() if i in params]
        pointers = [i for i in params if self.signature[names[i]].startswith("*")]
        divisible = {i for (i,), attr in self.attrs.items() if ["tt.divisibility", 16] in attr}
        words = [f"{name}=1" for name in ones]
        words += [f"{names[i]}%16" for i in sorted(divisible - set(pointers))]
        words.append(f"pointers%16 {len(divisible & set(pointers))}/{len(pointers)}")
        return ", ".join(words)


def specialize(launch: Launch, arch: int) -> Specialization:
    """The specialisation Triton's launcher gives `launch` on sm_`arch`, computed by Triton's own binder."""
    from triton.compiler.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    kernel = launch.kernel
    if not hasattr(kernel, "_pack_args") or not hasattr(kernel, "params"):
        raise RuntimeError(f"Triton {triton.__version__}'s JITFunction lacks _pack_args/params: update specialize")
    backend = make_backend(GPUTarget("cuda", arch, 32))
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    bound, specialization, options = binder(*launch.args, **launch.kwargs)
    options, signature, constexprs, attrs = kernel._pack_args(backend, launch.kwargs, bound, specialization, options)
    return Specialization(signature, constexprs, attrs, dict(options.__dict__))


def _compile(kernel: JITFunction, spec: Specialization, arch: int) -> KernelResources:
    source = ASTSource(fn=kernel, signature=spec.signature, constexprs=spec.constexprs, attrs=spec.attrs)
    compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32), options=spec.options)
    cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.TemporaryDirectory() as folder:
        cubin = os.path.join(folder, "kernel.cubin")
        with open(cubin, "wb") as f:
            f.write(compiled.asm["cubin"])
        usage = subprocess.run([cuobjdump, "--dump-resource-usage", cubin], capture_output=True, text=True, check=True)
        sass = subprocess.run([cuobjdump, "-sass", cubin], capture_output=True, text=True, check=True)
    match = re.search(r"REG:(\d+) STACK:(\d+)", usage.stdout)
    mmas = len(re.findall(r"\bH(?:G)?MMA\.", sass.stdout))
    approximate = len(re.findall(APPROXIMATE_PTX, compiled.asm["ptx"]))
    loop = time_loop(sass.stdout)
    return KernelResources(
        int(match[1]), int(match[2]), compiled.metadata.shared, mmas, approximate, len(loop), local_accesses(loop)
    )


def local_accesses(instructions: list[str]) -> int:
    """How many of these SASS instructions (predicated or not) load or store local memory."""
    return sum(bool(re.match(r"(?:@!?U?P\w+\s+)?(?:LDL|STL)\b", text)) for text in instructions)


def time_loop(sass: str) -> list[str]:
    """The instructions between the outermost backward branch of cuobjdump's SASS listing and its target
    (none without a loop)."""
    addresses = [(int(address, 16), text) for address, text in re.findall(r"/\*([0-9a-f]{4,})\*/\s+([^;]*);", sass)]
    spans = [
        (int(target[1], 16), address)
        for address, text in addresses
        if (target := re.search(r"\bBRA\s+0x([0-9a-f]+)", text)) and int(target[1], 16) < address
    ]
    if not spans:
        return []
    start, end = max(spans, key=lambda span: span[1] - span[0])
    return [text.strip() for address, text in addresses if start <= address <= end]


_compiled: dict[tuple, KernelResources] = {}


def compile_launch(launch: Launch, arch: int) -> tuple[Specialization, KernelResources]:
    """Compiles `launch` as Triton's launcher would on sm_`arch` (80, 90) and reads its resources; launches
    that specialise alike are compiled once per process (and Triton's on-disk cache spans processes)."""
    spec = specialize(launch, arch)
    key = (launch.kernel, arch, *(_freeze(part) for part in asdict(spec).values()))
    if key not in _compiled:
        _compiled[key] = _compile(launch.kernel, spec, arch)
    return spec, _compiled[key]


def _freeze(value):
    """A hashable stand-in for the dicts and lists of a Specialization."""
    if isinstance(value, dict):
        return tuple(sorted((repr(k), _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return repr(value)


def _programs(grid) -> int:
    programs = 1
    for size in grid:
        programs *= size
    return programs


def launched_kernels(
    cell: str, scan_pass: str, seq_len: int, batch: int, hidden: int, dtype: torch.dtype, gpu: str,
    directions: int, training: bool, wavefront_layers: int = 0, noise: bool = False,
) -> list[dict]:  # fmt: skip
    """The kernels one layer's `scan_pass` (`directions` directions) launches for this shape on `gpu`,
    compiled as launched: one row per distinct compiled kernel with its launch count, programs per launch,
    specialisation and resources. wavefront_layers > 0: instead, the wavefront of a stack
    of that many unidirectional layers (rnnfast/wavefront.py), its upper layers with dropout `noise`."""
    arch = GPUS[gpu].arch

    def resources(kernel, grid, args, kwargs) -> tuple[int, int]:
        compiled = compile_launch(Launch(kernel, tuple(grid), args, kwargs), arch)[1]
        return compiled.spill_bytes, compiled.shared_bytes

    # The launcher compiles its candidate launches here as it would on the GPU (launch.without_spills).
    with recording() as launches, compiling_offline(resources):
        example = EXAMPLE_LAUNCHES[cell]
        if wavefront_layers:
            example = functools.partial(_wavefront_launch, layers=wavefront_layers, noise=noise)
        example(cell, scan_pass, seq_len, batch, hidden, dtype, gpu, directions, training)
    rows: dict[tuple, dict] = {}
    for launch in launches:
        spec, resources = compile_launch(launch, arch)
        key = (launch.kernel.__name__, _freeze(spec.constexprs), _freeze(spec.attrs), _programs(launch.grid))
        row = rows.setdefault(key, dict(
            kernel=launch.kernel.__name__, launches=0, programs=_programs(launch.grid),
            specialized=spec.describe(launch.kernel), num_warps=spec.options["num_warps"],
            **asdict(resources), fits=resources.fits(arch, spec.options["num_warps"]),
        ))  # fmt: skip
        row["launches"] += 1
    return list(rows.values())


def _meta_buffers(directions: int, batch: int, dtype: torch.dtype):
    """(empty, fp32, lengths): makers of fresh meta buffers with the leading direction axis, in `dtype` and in
    fp32, and the [B] int64 lengths."""

    def empty(*shape, dtype=dtype):
        return torch.empty(directions, *shape, dtype=dtype, device="meta")

    def fp32(*shape):
        return empty(*shape, dtype=torch.float32)

    return empty, fp32, torch.empty(batch, dtype=torch.int64, device="meta")


def _lstm_example_launch(
    cell: str, scan_pass: str, seq_len: int, batch: int, hidden: int, dtype: torch.dtype, gpu: str,
    directions: int, training: bool,
) -> None:  # fmt: skip
    """EXAMPLE_LAUNCHES' interface (see the module's docstring) for the LSTM."""
    empty, fp32, lengths = _meta_buffers(directions, batch, dtype)
    gates, w_hh = empty(seq_len, batch, 4 * hidden), empty(4 * hidden, hidden)
    with planning_for(gpu):
        if scan_pass == "forward":
            c_all = fp32(seq_len + 1 if training else 2, batch, hidden)
            lstm.lstm_scan_fwd(gates, w_hh, empty(seq_len + 1, batch, hidden), c_all, lengths, training)
            return
        dgates_all, c_all, dh = (
            empty(seq_len + 1, batch, 4 * hidden),
            fp32(seq_len + 1, batch, hidden),
            fp32(seq_len, batch, hidden),
        )
        lstm.lstm_scan_bwd(dgates_all, gates, w_hh, c_all, dh, fp32(batch, hidden), fp32(batch, hidden), lengths)


def _wavefront_launch(
    cell: str, scan_pass: str, seq_len: int, batch: int, hidden: int, dtype: torch.dtype, gpu: str,
    directions: int, training: bool, layers: int, noise: bool,
) -> None:  # fmt: skip
    """EXAMPLE_LAUNCHES' interface for the wavefront of `layers` stacked LSTM, GRU or Elman RNN layers
    (`directions` is 1): the lanes are layers, with the upper layers' input weights and (noise) their
    dropout scales."""
    assert directions == 1, "wavefronts are unidirectional stacks"
    gates_width = GATES[cell] * hidden
    empty, fp32, lengths = _meta_buffers(layers, batch, dtype)
    gates, w_hh = empty(seq_len, batch, gates_width), empty(gates_width, hidden)
    wavefront = Wavefront(empty(gates_width, hidden), empty(seq_len, batch, hidden) if noise else None)
    h_all, dgates_all = empty(seq_len + 1, batch, hidden), empty(seq_len + 1, batch, gates_width)
    dh, dh_carry = fp32(seq_len, batch, hidden), fp32(batch, hidden)
    relu = cell == "rnn_relu"
    with planning_for(gpu):
        if cell == "gru":
            b_hh = empty(gates_width)
            hn_all = fp32(seq_len if training or scan_pass == "backward" else 0, batch, hidden)
            if scan_pass == "forward":
                gru.gru_scan_fwd(gates, w_hh, b_hh, h_all, hn_all, lengths, training, wavefront)
            else:
                dgates_x = empty(seq_len, batch, gates_width)
                gru.gru_scan_bwd(dgates_all, dgates_x, gates, w_hh, h_all, hn_all, dh, dh_carry, lengths, wavefront)
        elif cell != "lstm":
            if scan_pass == "forward":
                rnn.rnn_scan_fwd(gates, w_hh, h_all, lengths, relu, wavefront)
            else:
                rnn.rnn_scan_bwd(dgates_all, w_hh, h_all, dh, dh_carry, lengths, relu, wavefront)
        elif scan_pass == "forward":
            c_all = fp32(seq_len + 1 if training else 2, batch, hidden)
            lstm.lstm_scan_fwd(gates, w_hh, h_all, c_all, lengths, training, wavefront)
        else:
            c_all, dc = fp32(seq_len + 1, batch, hidden), fp32(batch, hidden)
            lstm.lstm_scan_bwd(dgates_all, gates, w_hh, c_all, dh, dc, dh_carry, lengths, wavefront)


def _gru_example_launch(
    cell: str, scan_pass: str, seq_len: int, batch: int, hidden: int, dtype: torch.dtype, gpu: str,
    directions: int, training: bool,
) -> None:  # fmt: skip
    """EXAMPLE_LAUNCHES' interface (see the module's docstring) for the GRU."""
    empty, fp32, lengths = _meta_buffers(directions, batch, dtype)
    gates, w_hh, b_hh = empty(seq_len, batch, 3 * hidden), empty(3 * hidden, hidden), empty(3 * hidden)
    h_all = empty(seq_len + 1, batch, hidden)
    hn_all = fp32(seq_len if training or scan_pass == "backward" else 0, batch, hidden)
    with planning_for(gpu):
        if scan_pass == "forward":
            gru.gru_scan_fwd(gates, w_hh, b_hh, h_all, hn_all, lengths, training)
            return
        dgates_h_all, dgates_x = empty(seq_len + 1, batch, 3 * hidden), empty(seq_len, batch, 3 * hidden)
        dh, dh_carry = fp32(seq_len, batch, hidden), fp32(batch, hidden)
        gru.gru_scan_bwd(dgates_h_all, dgates_x, gates, w_hh, h_all, hn_all, dh, dh_carry, lengths)


def _rnn_example_launch(
    cell: str, scan_pass: str, seq_len: int, batch: int, hidden: int, dtype: torch.dtype, gpu: str,
    directions: int, training: bool,
) -> None:  # fmt: skip
    """EXAMPLE_LAUNCHES' interface for the Elman RNN (rnn_tanh, rnn_relu): its forward is the same whether
    training or not."""
    empty, fp32, lengths = _meta_buffers(directions, batch, dtype)
    w_hh, h_all = empty(hidden, hidden), empty(seq_len + 1, batch, hidden)
    relu = cell == "rnn_relu"
    with planning_for(gpu):
        if scan_pass == "forward":
            rnn.rnn_scan_fwd(empty(seq_len, batch, hidden), w_hh, h_all, lengths, relu)
            return
        dgates_all, dh, dh_carry = empty(seq_len + 1, batch, hidden), fp32(seq_len, batch, hidden), fp32(batch, hidden)
        rnn.rnn_scan_bwd(dgates_all, w_hh, h_all, dh, dh_carry, lengths, relu)


EXAMPLE_LAUNCHES = {
    "lstm": _lstm_example_launch,
    "gru": _gru_example_launch,
    "rnn_tanh": _rnn_example_launch,
    "rnn_relu": _rnn_example_launch,
}


def kernel_report(requests: list[dict]) -> list[dict]:
    """For each request (the arguments of `launched_kernels`, dtype named fp32/fp16/bf16), the request
    followed by each of its kernel rows. Runs in a subprocess without the interpreter when it is on."""
    if interpreting():
        env = {name: value for name, value in os.environ.items() if name != "TRITON_INTERPRET"}
        result = subprocess.run(
            [sys.executable, "-m", "bench.hardware"],
            input=json.dumps(requests), capture_output=True, text=True, env=env, cwd=_REPOSITORY,
        )  # fmt: skip
        if result.returncode:
            raise RuntimeError(f"python -m bench.hardware failed:\n{result.stderr}")
        return json.loads(result.stdout)
    return [
        {**request, **row}
        for request in requests
        for row in launched_kernels(**{**request, "dtype": DTYPES[request["dtype"]]})
    ]


if __name__ == "__main__":
    json.dump(kernel_report(json.load(sys.stdin)), sys.stdout)
