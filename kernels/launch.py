"""Launch helpers shared by every cell: grid, variant loop, device and interpreter handling."""

import contextlib
import os

import torch
import triton

from .configs import ScanPlan


def interpreting() -> bool:
    """True when Triton runs kernels on the CPU (TRITON_INTERPRET=1, read when triton was imported)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def bf16_under_interpreter(dtype: torch.dtype) -> bool:
    """bf16 data run by Triton's interpreter, which computes bf16 arithmetic (tl.dot included) on raw bit
    patterns and truncates fp32 -> bf16 casts: kernels then upcast the dot operands to fp32 and round
    stores explicitly. On a GPU bf16 operands go to the tensor cores as they are."""
    return dtype == torch.bfloat16 and interpreting()


def launch_scan(plan: ScanPlan, kernel, tensors: tuple, seq_len: int, batch: int, hidden: int, options: dict) -> None:
    """Launches a scan kernel: once for the persistent variant, once per time step for the step variant."""
    batch_tiles = triton.cdiv(batch, plan.block_b)
    meta = dict(BLOCK_B=plan.block_b, BLOCK_N=plan.block_n, BLOCK_K=plan.block_k, num_warps=plan.num_warps)
    device = tensors[0].device
    guard = torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
    with guard:
        if plan.variant == "persistent":
            kernel[(batch_tiles,)](*tensors, T=seq_len, B=batch, H=hidden, **options, **meta)
        else:
            grid = (batch_tiles, triton.cdiv(hidden, plan.block_n))
            for step in range(seq_len):
                kernel[grid](*tensors, step=step, T=seq_len, B=batch, H=hidden, **options, **meta)
