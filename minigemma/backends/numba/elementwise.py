"""Row-wise and elementwise ops in Numba: rms_norm, rope, geglu (tanh and exact GELU), softcap.

The equations are the references' (`norms`, `rope`, `mlp`, `softcap`); inputs and outputs are
float32, as there. Every kernel walks the rows of a 2-D (rope: 3-D) array; the backend flattens
the leading axes. rope, geglu and softcap are compiled without fastmath and do the reference's
float32 operations in its order (rope even gets the reference's own cos/sin tables from the
backend; tanh is computed as below). rms_norm sums its squares in float64 under fastmath's
`reassoc` flag alone (LLVM may reorder that sum to vectorise it), then does the reference's
float32 operations in its order, so it agrees with the reference to float32 rounding, not
bitwise.

tanh is computed in float64 from exp (`tanh64`), not by libm: `tanhf` is a scalar call that LLVM
cannot vectorise, and it made GeGLU the slowest op of a prefill. The result is within one ulp
of the correctly rounded float32 tanh, as NumPy's own float32 tanh is; a float32 rational
approximation (Eigen's, 3.4e-7 off) was tried first and moved the real model's logits by up to
1.4e-3.
"""
import math

import numpy as np
from numba import njit

from minigemma.backends.numba.jit import kernel

SQRT_2_OVER_PI = np.float32(math.sqrt(2.0 / math.pi))
GELU_CUBIC = np.float32(0.044715)
INV_SQRT_2 = 1.0 / math.sqrt(2.0)
EXP_TAYLOR = tuple(1.0 / math.factorial(k) for k in range(11))  # eᵘ = Σ uᵏ/k!, |u| ≤ 0.3125
EXP_FLOOR = -104.0  # e^x is 0 in float32 below this (the smallest subnormal is e^−103.3)


@njit(inline="always")
def tanh64(x):
    """float32 x -> float32 tanh(x), computed as 1 − 2 / (e^{2x} + 1) in float64.

    e^{2x} = (e^{2x/64})^64: a degree-10 Taylor polynomial on |2x/64| ≤ 0.3125 (error 1e-13)
    squared six times. |2x| is clamped to 20, where tanh is ±1 in float32; NaN stays NaN. Below
    |x| = 1e-4, where 1 − 2/(e + 1) cancels, tanh x = x − x³/3 to float64 precision.
    """
    y = min(max(2.0 * np.float64(x), -20.0), 20.0)  # 2x
    u = y * (1.0 / 64.0)
    e = EXP_TAYLOR[10]
    for k in range(9, -1, -1):
        e = e * u + EXP_TAYLOR[k]
    for _ in range(6):
        e = e * e
    series = 0.5 * y * (1.0 - y * y / 12.0)  # x − x³/3
    return np.float32(series if abs(y) < 2e-4 else 1.0 - 2.0 / (e + 1.0))


@njit(inline="always")
def exp64(x):
    """float32 x ≤ 0 -> float32 eˣ (softmax weights), computed in float64 from exp-free
    operations, so that LLVM vectorises it: eˣ = (e^{x/1024})^1024, a degree-7 Taylor polynomial
    on |x/1024| ≤ 0.102 (error 1e-13) squared ten times; x is clamped at EXP_FLOOR.

    Within one ulp of the correctly rounded float32 eˣ (as libm's expf), on all of [−104, 0]
    and its ends; 1.2 against 2.8 ns per element for a loop of libm calls, 1 thread.
    """
    u = max(np.float64(x), EXP_FLOOR) * (1.0 / 1024.0)
    e = EXP_TAYLOR[7]
    for k in range(6, -1, -1):
        e = e * u + EXP_TAYLOR[k]
    for _ in range(10):
        e = e * e
    return np.float32(e)


@kernel(fastmath={"reassoc"})  # reassociates the float64 sum only
def rms_norm(loop):
    def rms_norm(x, gain, eps, out):
        """x [R, D], gain [D] -> out [R, D] = x / sqrt(mean(x²) + eps) · gain.

        A float64 sum of squares, then the reference's float32 operations in its order: Gemma 3's
        residual stream has outliers in the thousands, and the logits felt every last-bit
        difference here.
        """
        D = x.shape[1]
        for r in loop(x.shape[0]):
            ss = 0.0
            for i in range(D):  # pass 1: mean square, accumulated in float64
                ss += np.float64(x[r, i]) * np.float64(x[r, i])
            denom = np.sqrt(np.float32(ss / D) + np.float32(eps))  # float32, as the reference
            for i in range(D):  # pass 2: normalise and scale, in the reference's order
                out[r, i] = x[r, i] / denom * gain[i]
    return rms_norm


@kernel(fastmath=False)  # elementwise: the reference's float32 operations, in its order
def rope(loop):
    def rope(x, cos, sin, out):
        """x [R, N, H] (R = B·T), cos/sin [R, d/2] from rope.rope_cos_sin -> out: the first
        d dims rotated in half-split pairs (i, i + d/2), the rest passed through."""
        half = cos.shape[1]
        for r in loop(x.shape[0]):
            for n in range(x.shape[1]):
                for i in range(half):
                    x1, x2 = x[r, n, i], x[r, n, half + i]
                    out[r, n, i] = x1 * cos[r, i] - x2 * sin[r, i]
                    out[r, n, half + i] = x2 * cos[r, i] + x1 * sin[r, i]
                for i in range(2 * half, x.shape[2]):
                    out[r, n, i] = x[r, n, i]
    return rope


@njit(inline="always")  # no fastmath: the reference's float32 operations, in its order
def geglu_span(gate, up, out, lo, hi):
    """gate, up, out [F] -> out[lo:hi] = gelu_tanh(gate) · up (also inside the fused matvec)."""
    for i in range(lo, hi):
        z = gate[i]
        inner = SQRT_2_OVER_PI * (z + GELU_CUBIC * z * z * z)
        out[i] = np.float32(0.5) * z * (np.float32(1) + tanh64(inner)) * up[i]


@njit(inline="always")
def geglu_exact_span(gate, up, out, lo, hi):
    """out[lo:hi] = gelu(gate) · up with the exact GELU ½ z erfc(−z/√2), in float64 from
    libm's erfc (the reference's erfc is Numerical Recipes', 1.2e-7 off)."""
    for i in range(lo, hi):
        z = np.float64(gate[i])
        out[i] = np.float32(0.5 * z * math.erfc(-z * INV_SQRT_2)) * up[i]


@kernel(fastmath=False)  # elementwise: the reference's float32 operations, in its order
def geglu(loop):
    def geglu(gate, up, out):
        """gate, up [R, F] -> out = gelu_tanh(gate) · up."""
        for r in loop(gate.shape[0]):
            geglu_span(gate[r], up[r], out[r], 0, gate.shape[1])
    return geglu


@kernel(fastmath=False)
def geglu_exact(loop):
    def geglu_exact(gate, up, out):
        """gate, up [R, F] -> out = gelu(gate) · up, the exact GELU (geglu_exact_span)."""
        for r in loop(gate.shape[0]):
            geglu_exact_span(gate[r], up[r], out[r], 0, gate.shape[1])
    return geglu_exact


@kernel(fastmath=False)
def softcap(loop):
    def softcap(x, cap, out):
        """x [R, C] -> out = cap · tanh(x / cap)."""
        c = np.float32(cap)
        for r in loop(x.shape[0]):
            for i in range(x.shape[1]):
                out[r, i] = c * tanh64(x[r, i] / c)
    return softcap

