"""Compiling the planner's kernels for real GPUs on a machine without one, and reading their resources.

triton.compile with a GPUTarget produces PTX and a cubin offline; the cuobjdump shipped inside triton
reports registers per thread and stack bytes (spills to local memory) of the cubin.
"""

import functools
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from .configs import MAX_REGISTERS_PER_THREAD, SHARED_MEMORY_LIMIT, ScanPlan

_TRITON_DTYPE = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


@dataclass(frozen=True)
class KernelResources:
    registers: int  # per thread
    spill_bytes: int  # cuobjdump STACK: local memory per thread
    shared_bytes: int  # dynamic shared memory per block

    def fits(self, arch: int) -> bool:
        return self.registers <= MAX_REGISTERS_PER_THREAD and self.shared_bytes <= SHARED_MEMORY_LIMIT[arch]


def kernel_signature(kernel, dtype: torch.dtype, fp32_pointers: frozenset[str]) -> dict[str, str]:
    """Triton signature of a scan kernel: `*_ptr` arguments are pointers (fp32 for the state buffers named
    in fp32_pointers, `dtype` otherwise), constexprs are constexpr, the rest int32."""
    signature = {}
    for index, name in enumerate(kernel.arg_names):
        if index in kernel.constexprs:
            signature[name] = "constexpr"
        elif name.endswith("_ptr"):
            signature[name] = "*fp32" if name in fp32_pointers else f"*{_TRITON_DTYPE[dtype]}"
        else:
            signature[name] = "i32"
    return signature


@functools.lru_cache(maxsize=None)
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
    values = dict(BLOCK_B=plan.block_b, BLOCK_N=plan.block_n, BLOCK_K=plan.block_k, DOT_FP32=dtype == torch.float32)
    values.update(constexprs)
    values = {name: value for name, value in values.items() if name in signature}
    return _compile(kernel, tuple(signature.items()), tuple(sorted(values.items())), plan.num_warps, arch)
