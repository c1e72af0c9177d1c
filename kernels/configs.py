"""Block sizes, warps and the choice of kernel variant for a recurrent scan.

One plan serves every cell. The recurrent matmul of a step is [BLOCK_B, BLOCK_K] x [BLOCK_K, BLOCK_N]
tiles accumulated in fp32; tl.dot needs every tile side >= 16 on real GPUs, so tiles never go below 16
and rows/columns past B or H are masked.

Variants:
- "persistent": one launch per layer and direction. A program owns BLOCK_B batch rows and every hidden
  unit (looping over them BLOCK_N at a time) and loops over time inside the kernel, so a whole sequence
  costs a single launch. Chosen while a step's recurrent matmul is small enough for one program
  (hidden_size <= PERSISTENT_MAX_HIDDEN): there launch overhead, not arithmetic, dominates.
- "step": one launch per time step over a (batch tile x hidden tile) grid, with the recurrent matmul
  and the gate math fused. Chosen for larger hidden sizes, where a single program per batch tile would
  leave most of the GPU idle while it walks H*H weights every step.
"""

from dataclasses import dataclass

import torch
import triton

BLOCK_B = 16
PERSISTENT_MAX_HIDDEN = 256

# Per-block hardware limits the compile test checks every plan against.
SHARED_MEMORY_LIMIT = {80: 166912, 90: 232448}
MAX_REGISTERS_PER_THREAD = 255


@dataclass(frozen=True)
class ScanPlan:
    variant: str  # "persistent" or "step"
    block_b: int
    block_n: int
    block_k: int
    num_warps: int

    def launches(self, seq_len: int) -> int:
        return 1 if self.variant == "persistent" else seq_len


def plan_scan(hidden_size: int, dtype: torch.dtype) -> ScanPlan:
    """Tile sizes and variant for a scan of this hidden size and dtype (the same plan for forward and
    backward, so one table describes both). Every dtype gets the same plan today: the backward's dots
    are fp32 whatever the dtype, and the forward's fit the same tiles."""
    tile = min(64, max(16, triton.next_power_of_2(hidden_size)))
    variant = "persistent" if hidden_size <= PERSISTENT_MAX_HIDDEN else "step"
    # Measured with the compile test (sm_80/sm_90): 8 warps from 32-wide tiles up hold the gate
    # accumulators and weight tiles in registers; 4 warps spill less at 16. K steps of 16 (one bf16/fp16
    # mma deep) keep the fp32 backward dots small. A few fp32 kernels still spill 8-32 bytes.
    num_warps = 8 if tile >= 32 else 4
    return ScanPlan(variant=variant, block_b=BLOCK_B, block_n=tile, block_k=16, num_warps=num_warps)
