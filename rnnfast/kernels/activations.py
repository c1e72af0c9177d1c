"""Activation helpers shared by every cell's kernels (fp32 in, fp32 out).

They are as accurate as torch's float32 sigmoid and tanh over the whole range (within 2 ulp, including
tiny and saturated arguments; tests/test_activations.py). Triton's tl.exp lowers to the approximate ex2
instruction on NVIDIA GPUs, whose relative error grows with |x|, and tanh as 2 * sigmoid(2x) - 1 loses
all relative precision near 0, where small activations (no bias, projections) live. So exp is
range-reduced here, and tanh uses its odd series near 0, with only IEEE fp32 arithmetic (the polynomials
as tl.fma, which the interpreter also rounds once): as the kernels are launched without contraction
(kernels/launch.py), the interpreter computes exactly what a GPU does.
"""

import triton
import triton.language as tl

_LOG2E = tl.constexpr(1.4426950408889634)
# ln 2 split so that k * _LN2_HI is exact for |k| <= 2^8 (Cody and Waite's argument reduction).
_LN2_HI = tl.constexpr(0.693145751953125)
_LN2_LO = tl.constexpr(1.428606765330187e-06)
# Beyond these exp(x) is inf or rounds to 0 in float32. (Globals a jit function reads must be constexpr.)
_EXP_MAX = tl.constexpr(88.72283935546875)
_EXP_MIN = tl.constexpr(-103.97208404541016)
# tanh uses its Taylor series up to x^21 below this |x|: the dropped terms are under 2e-9 (relative) there.
_TANH_SERIES_MAX = tl.constexpr(0.625)


@triton.jit
def _pow2(k):
    """2^k as fp32 for integer-valued fp32 k in [-126, 127], built from its exponent bits."""
    return ((k.to(tl.int32) + 127) << 23).to(tl.float32, bitcast=True)


@triton.jit
def exp(x):
    """e^x to about 1 ulp: x = k ln2 + r with |r| <= ln2 / 2, a degree-8 polynomial for e^r, then
    scaled by 2^k in two halves so that subnormal results and k = 128 are exact scalings."""
    xc = tl.minimum(tl.maximum(x, _EXP_MIN), _EXP_MAX)
    k = tl.floor(tl.fma(xc, _LOG2E, 0.5))
    r = tl.fma(-k, _LN2_LO, tl.fma(-k, _LN2_HI, xc))
    p = tl.fma(r, 1.0 / 40320.0, 1.0 / 5040.0)
    p = tl.fma(p, r, 1.0 / 720.0)
    p = tl.fma(p, r, 1.0 / 120.0)
    p = tl.fma(p, r, 1.0 / 24.0)
    p = tl.fma(p, r, 1.0 / 6.0)
    p = tl.fma(p, r, 0.5)
    p = tl.fma(p, r, 1.0)
    p = tl.fma(p, r, 1.0)
    k_half = tl.floor(k * 0.5)
    y = p * _pow2(k_half) * _pow2(k - k_half)
    y = tl.where(x > _EXP_MAX, float("inf"), y)
    y = tl.where(x < _EXP_MIN, 0.0, y)
    return tl.where(x != x, x, y)


@triton.jit
def sigmoid(x):
    # e = exp(-|x|) <= 1 never overflows; e / (1 + e) keeps the relative precision of tiny results. One
    # division, its numerator chosen: 1 / (1 + e) for x >= 0. (Divisions are tl.div_rn, IEEE: Triton's `/`
    # is the GPU's approximate div.full.f32, 2 ulp, which the interpreter does not compute.)
    e = exp(-tl.abs(x))
    return tl.div_rn(tl.where(x >= 0, 1.0, e), 1.0 + e)


@triton.jit
def tanh(x):
    a = tl.abs(x)
    # tanh(a) = a + a s q(s), s = a^2: q holds the Taylor coefficients of a^3 .. a^21 (Horner from a^21).
    s = a * a
    q = tl.fma(s, 9.691537956929451e-05, -0.00023912911424355248)
    q = tl.fma(q, s, 0.000590027440945586)
    q = tl.fma(q, s, -0.0014558343870513183)
    q = tl.fma(q, s, 0.003592128036572481)
    q = tl.fma(q, s, -0.008863235529902197)
    q = tl.fma(q, s, 0.021869488536155203)
    q = tl.fma(q, s, -0.05396825396825397)
    q = tl.fma(q, s, 0.13333333333333333)
    q = tl.fma(q, s, -0.3333333333333333)
    series = tl.fma(a * s, q, a)
    e = exp(-2.0 * a)
    t = tl.where(a < _TANH_SERIES_MAX, series, tl.div_rn(1.0 - e, 1.0 + e))
    return tl.where(x < 0, -t, t)


@triton.jit
def to_storage(x, ptr, BF16_INTERPRETER: tl.constexpr):
    """fp32 `x` cast for a store through `ptr`, rounding to nearest even as a GPU does. Triton's
    interpreter truncates fp32 -> bf16 casts, so there the rounding is done on the bits first."""
    if BF16_INTERPRETER:
        bits = x.to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        x = bits.to(tl.float32, bitcast=True)
    return x.to(ptr.dtype.element_ty)
