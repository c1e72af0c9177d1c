"""Block sizes, warps and the choice of kernel variant for a recurrent scan.

The recurrent matmul of a step is [BLOCK_B, BLOCK_K] x [BLOCK_K, BLOCK_N] tiles accumulated in fp32;
tl.dot needs every tile side >= 16 on real GPUs, so tiles never go below 16 and rows/columns past B or
H are masked. The cells share the variants and differ only in the persistent variant's hidden tile.

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

BLOCK_B = 16
# K steps of 16 (one bf16/fp16 mma deep) keep the backward's fp32 dots small.
BLOCK_K = 16
PERSISTENT_MAX_HIDDEN = 256
# Hidden-unit tiles, 8 warps each: the widest with no register spill in any kernel, dtype and flag on
# sm_80 and sm_90 (every combination compiled, tests/test_compile.py). A persistent program keeps all
# its step's gate accumulators live: 32 columns for the LSTM's four and the Elman cell's one, 16 for
# the GRU, whose n gate holds its recurrent term apart. The step kernels fit 64.
PERSISTENT_TILE = {"lstm": 32, "gru": 16, "elman": 32}
STEP_TILE = 64

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


def plan_scan(cell: str, hidden_size: int, dtype: torch.dtype) -> ScanPlan:
    """Tile sizes and variant for a scan of `cell` ("lstm", "gru", "elman") with this hidden size and
    dtype; the same plan for forward and backward, so one table describes both. Every dtype gets the
    same plan: the backward's dots are fp32 whatever the dtype, and the forward's fit the same tiles."""
    if hidden_size <= PERSISTENT_MAX_HIDDEN:
        return ScanPlan("persistent", BLOCK_B, PERSISTENT_TILE[cell], BLOCK_K, num_warps=8)
    return ScanPlan("step", BLOCK_B, STEP_TILE, BLOCK_K, num_warps=8)
