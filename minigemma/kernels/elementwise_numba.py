"""Row-wise and elementwise ops in Numba: rms_norm, rope, geglu, softcap, log_softmax.

The equations are the references' (`norms`, `rope`, `mlp`, `softcap`, the NumPy backend's
log_softmax); everything is float32, as there. Every kernel walks the rows of a 2-D (rope: 3-D)
array; the backend flattens the leading axes. Sums are float32 and reassociated (fastmath), so
results agree with the reference to float32 rounding, not bitwise.
"""
import math

import numpy as np

from .jit_numba import kernel

SQRT_2_OVER_PI = np.float32(math.sqrt(2.0 / math.pi))
GELU_CUBIC = np.float32(0.044715)


@kernel
def rms_norm(loop):
    def rms_norm(x, gain, eps, out):
        """x [R, D], gain [D] -> out [R, D] = x / sqrt(mean(x²) + eps) · gain."""
        D = x.shape[1]
        for r in loop(x.shape[0]):
            ss = np.float32(0)
            for i in range(D):  # pass 1: mean square
                ss += x[r, i] * x[r, i]
            inv = np.float32(1) / np.sqrt(ss / np.float32(D) + np.float32(eps))
            for i in range(D):  # pass 2: normalise and scale
                out[r, i] = x[r, i] * inv * gain[i]
    return rms_norm


@kernel
def rope(loop):
    def rope(x, positions, base, rot_dim, scale, out):
        """x [R, N, H] (R = B·T), positions [R] -> out: half-split rotation of rot_dim dims."""
        half = rot_dim // 2
        for r in loop(x.shape[0]):
            pos = np.float32(positions[r]) / np.float32(scale)
            for i in range(half):  # θ_i = pos / base^(2i/d), in float32 as rope.rope_angles
                exponent = np.float32(2 * i) / np.float32(rot_dim)
                theta = pos * (np.float32(1) / np.float32(base) ** exponent)
                c, s = np.cos(theta), np.sin(theta)
                for n in range(x.shape[1]):
                    x1, x2 = x[r, n, i], x[r, n, half + i]
                    out[r, n, i] = x1 * c - x2 * s
                    out[r, n, half + i] = x2 * c + x1 * s
            for n in range(x.shape[1]):  # the dims past rot_dim pass through
                for i in range(rot_dim, x.shape[2]):
                    out[r, n, i] = x[r, n, i]
    return rope


@kernel
def geglu(loop):
    def geglu(gate, up, out):
        """gate, up [R, F] -> out = gelu_tanh(gate) · up."""
        for r in loop(gate.shape[0]):
            for i in range(gate.shape[1]):
                z = gate[r, i]
                inner = SQRT_2_OVER_PI * (z + GELU_CUBIC * z * z * z)
                out[r, i] = np.float32(0.5) * z * (np.float32(1) + np.tanh(inner)) * up[r, i]
    return geglu


@kernel
def softcap(loop):
    def softcap(x, cap, out):
        """x [R, C] -> out = cap · tanh(x / cap)."""
        c = np.float32(cap)
        for r in loop(x.shape[0]):
            for i in range(x.shape[1]):
                out[r, i] = c * np.tanh(x[r, i] / c)
    return softcap


@kernel
def log_softmax(loop):
    def log_softmax(x, out):
        """x [R, V] -> out = x − max − log Σ exp(x − max)."""
        for r in loop(x.shape[0]):
            top = x[r, 0]
            for i in range(1, x.shape[1]):  # pass 1: max
                top = max(top, x[r, i])
            total = np.float32(0)
            for i in range(x.shape[1]):  # pass 2: Σ exp
                total += np.exp(x[r, i] - top)
            log_total = np.log(total)
            for i in range(x.shape[1]):  # pass 3: write
                out[r, i] = (x[r, i] - top) - log_total
    return log_softmax
