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


@triton.jit
def to_storage(x, ptr, BF16_INTERPRETER: tl.constexpr):
    """fp32 `x` cast for a store through `ptr`, rounding to nearest even as a GPU does. Triton's
    interpreter truncates fp32 -> bf16 casts, so there the rounding is done on the bits first."""
    if BF16_INTERPRETER:
        bits = x.to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        x = bits.to(tl.float32, bitcast=True)
    return x.to(ptr.dtype.element_ty)
