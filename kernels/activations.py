"""Activation helpers shared by every cell's kernels (fp32 in, fp32 out)."""

import triton
import triton.language as tl


@triton.jit
def sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def tanh(x):
    # tanh(x) = 2 * sigmoid(2x) - 1: exp-based, saturates cleanly at +-1 for large |x|.
    return 2.0 / (1.0 + tl.exp(-2.0 * x)) - 1.0
