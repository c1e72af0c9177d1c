"""Compiling the planner's kernels for real GPUs on a machine without one, and reading their resources.

triton.compile with a GPUTarget produces PTX and a cubin offline; the cuobjdump shipped inside triton
reports registers per thread and stack bytes (spills to local memory) of the cubin. Under
TRITON_INTERPRET=1 kernels are interpreter objects that cannot be compiled, so `planned_kernel_report`
then runs itself in a subprocess without the interpreter (`python -m rnnfast.kernels.hardware`).
"""

import dataclasses
import functools
import importlib
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from .configs import MAX_REGISTERS_PER_THREAD, SHARED_MEMORY_LIMIT, ScanPlan, plan_scan
from .launch import interpreting

_TRITON_DTYPE = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
_TORCH_DTYPE = {name: dtype for dtype, name in _TRITON_DTYPE.items()}


@dataclass(frozen=True)
class KernelResources:
    registers: int  # per thread
    spill_bytes: int  # cuobjdump STACK: local memory per thread
    shared_bytes: int  # dynamic shared memory per block

    def fits(self, arch: int) -> bool:
        return self.registers <= MAX_REGISTERS_PER_THREAD and self.shared_bytes <= SHARED_MEMORY_LIMIT[arch]


def kernel_signature(kernel, dtype: torch.dtype, fp32_pointers: frozenset[str]) -> dict[str, str]:
    """Triton signature of a scan kernel: `*_ptr` arguments are pointers (int64 lengths, fp32 for the state
    buffers named in fp32_pointers, `dtype` otherwise), constexprs are constexpr, the rest int32."""
    signature = {}
    for index, name in enumerate(kernel.arg_names):
        if index in kernel.constexprs:
            signature[name] = "constexpr"
        elif name == "lengths_ptr":
            signature[name] = "*i64"
        elif name.endswith("_ptr"):
            signature[name] = "*fp32" if name in fp32_pointers else f"*{_TRITON_DTYPE[dtype]}"
        else:
            signature[name] = "i32"
    return signature


@functools.cache
def _compile(kernel, signature: tuple, constexprs: tuple, num_warps: int, arch: int) -> KernelResources:
    source = ASTSource(fn=kernel, signature=dict(signature), constexprs=dict(constexprs))
    compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32), options={"num_warps": num_warps})
    cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.TemporaryDirectory() as folder:
        cubin = os.path.join(folder, "kernel.cubin")
        with open(cubin, "wb") as f:
            f.write(compiled.asm["cubin"])
        usage = subprocess.run([cuobjdump, "--dump-resource-usage", cubin], capture_output=True, text=True, check=True)
    match = re.search(r"REG:(\d+) STACK:(\d+)", usage.stdout)
    return KernelResources(int(match[1]), int(match[2]), compiled.metadata.shared)


def compile_scan_kernel(
    kernel, fp32_pointers: frozenset[str], plan: ScanPlan, dtype: torch.dtype, arch: int, **constexprs
) -> KernelResources:
    """Compiles `kernel` as the plan launches it for `dtype` on sm_`arch` (80, 90) and reads its resources."""
    signature = kernel_signature(kernel, dtype, fp32_pointers)
    values = dict(BLOCK_B=plan.block_b, BLOCK_N=plan.block_n, BLOCK_K=plan.block_k, BF16_INTERPRETER=False)
    values.update(constexprs)
    values = {name: value for name, value in values.items() if name in signature}
    return _compile(kernel, tuple(signature.items()), tuple(sorted(values.items())), plan.num_warps, arch)


def planned_kernel_report(
    cells: list[str], hidden_sizes: list[int], dtypes: list[torch.dtype], archs: list[int], every_flag: bool = True
) -> list[dict]:
    """One row per distinct kernel launch the planner can make for these cells (module names in
    rnnfast.kernels, e.g. "lstm"), hidden sizes and dtypes, compiled for each arch: the plan, the hidden
    sizes that map to it, and registers, spill bytes, shared memory and whether it fits the hardware.
    every_flag=False compiles each plan with its heaviest flags only (HEAVIEST_FLAGS), a quarter of the work."""
    request = dict(
        cells=cells,
        hidden_sizes=hidden_sizes,
        dtypes=[_TRITON_DTYPE[d] for d in dtypes],
        archs=archs,
        every_flag=every_flag,
    )
    if interpreting():
        env = {name: value for name, value in os.environ.items() if name != "TRITON_INTERPRET"}
        result = subprocess.run(
            [sys.executable, "-m", "rnnfast.kernels.hardware"],
            input=json.dumps(request), capture_output=True, text=True, env=env, check=True,
        )  # fmt: skip
        return json.loads(result.stdout)
    return _report(**request)


# The flag values that make a kernel do the most work: it stores the gates, and tanh has more to compute.
HEAVIEST_FLAGS = {"REVERSE": 1, "TRAINING": True, "RELU": False}


def _flag_combinations(kernel, every_flag: bool) -> list[dict]:
    """Values of the kernel's flag constexprs (REVERSE, TRAINING, RELU): every combination, all of them
    launchable, or only the heaviest one."""
    fixed = {"BLOCK_B", "BLOCK_N", "BLOCK_K", "BF16_INTERPRETER"}
    flags = [kernel.arg_names[i] for i in kernel.constexprs if kernel.arg_names[i] not in fixed]
    if not every_flag:
        return [{name: HEAVIEST_FLAGS[name] for name in flags}]
    return [
        {name: (int(bit) if name == "REVERSE" else bool(bit)) for name, bit in zip(flags, bits)}
        for bits in itertools.product((0, 1), repeat=len(flags))
    ]


def _report(cells, hidden_sizes, dtypes, archs, every_flag) -> list[dict]:
    rows = []
    for cell in cells:
        scan_kernels = importlib.import_module(f"{__package__}.{cell}").SCAN_KERNELS
        for dtype_name in dtypes:
            dtype = _TORCH_DTYPE[dtype_name]
            launches = {}
            for hidden in hidden_sizes:
                plan = plan_scan(cell, hidden, dtype)
                for (scan_pass, variant), (kernel, fp32_pointers) in scan_kernels.items():
                    if variant != plan.variant:
                        continue
                    for constexprs in _flag_combinations(kernel, every_flag):
                        key = (plan, scan_pass, tuple(constexprs.items()))
                        launches.setdefault(key, (kernel, fp32_pointers, []))[2].append(hidden)
            for (plan, scan_pass, constexprs), (kernel, fp32_pointers, hiddens) in launches.items():
                for arch in archs:
                    resources = compile_scan_kernel(kernel, fp32_pointers, plan, dtype, arch, **dict(constexprs))
                    rows.append(dict(
                        cell=cell, dtype=dtype_name, arch=arch, scan_pass=scan_pass, kernel=kernel.__name__,
                        constexprs=dict(constexprs), hidden_sizes=hiddens, plan=dataclasses.asdict(plan),
                        **dataclasses.asdict(resources), fits=resources.fits(arch),
                    ))  # fmt: skip
    return rows


if __name__ == "__main__":
    json.dump(_report(**json.load(sys.stdin)), sys.stdout)
