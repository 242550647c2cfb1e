"""GeGLU feed-forward block with the tanh-approximate GELU (Shazeer 2020; Gemma report §2).

    gelu_tanh(z) = ½ z (1 + tanh(√(2/π) (z + 0.044715 z³)))
    gelu(z)      = ½ z (1 + erf(z / √2)) = ½ z erfc(−z / √2)          the exact GELU
    MLP(x)       = (gelu_tanh(x W_gateᵀ) ⊙ (x W_upᵀ)) W_downᵀ

Every released Gemma uses the tanh approximation (docs/numerics.md#tanh-gelu). HF transformers
computes the exact GELU for a Gemma 2 or 3 config that asks for it (`hidden_activation:
"gelu"`), and so does minigemma (`approximate="none"`, PyTorch's name). No biases in Gemma 1/2/3
(RecurrentGemma adds them in its model code).
"""
import math

import numpy as np

SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
# erfc(y) = t·exp(−y² + P(t)), t = 1 / (1 + y/2), y ≥ 0: Numerical Recipes' `erfcc` (Press et
# al., 3rd ed., §6.2.2), relative error below 1.2e-7 for every y, about two float32 ulps.
ERFC_COEFFICIENTS = (-1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806,
                     0.27886807, -1.13520398, 1.48851587, -0.82215223, 0.17087277)


def gelu_tanh(z, xp=np):
    """z any shape float32 -> same shape."""
    return 0.5 * z * (1.0 + xp.tanh(xp.float32(SQRT_2_OVER_PI) * (z + xp.float32(0.044715) * z * z * z)))


def erfc(y, xp=np):
    """The complementary error function of y (any shape), in float64."""
    y = xp.asarray(y, dtype=xp.float64)
    t = 1.0 / (1.0 + 0.5 * xp.abs(y))
    poly = xp.zeros_like(t)
    for c in reversed(ERFC_COEFFICIENTS):  # Horner: c0 + t (c1 + t (c2 + …))
        poly = c + t * poly
    tail = t * xp.exp(-y * y + poly)  # erfc(|y|)
    return xp.where(y >= 0, tail, 2.0 - tail)


def gelu(z, xp=np):
    """The exact GELU: z any shape float32 -> same shape (computed in float64)."""
    return (0.5 * z * erfc(-z / math.sqrt(2.0), xp)).astype(xp.float32)


def geglu(gate, up, approximate="tanh", xp=np):
    """gate, up [..., F] float32 -> [..., F]: gelu(gate) ⊙ up, with the tanh GELU
    (approximate="tanh") or the exact one (approximate="none")."""
    if approximate == "tanh":
        return gelu_tanh(gate, xp) * up
    if approximate == "none":
        return gelu(gate, xp) * up
    raise ValueError(f"approximate must be 'tanh' or 'none' (the exact GELU), got {approximate!r}")


def gelu_tanh_backward(z, xp=np):
    """d gelu_tanh / dz, z any shape float32 -> same shape. With u = √(2/π)(z + 0.044715 z³):

        gelu_tanh'(z) = ½ (1 + tanh u) + ½ z (1 − tanh² u) · √(2/π) (1 + 3 · 0.044715 z²)
    """
    c, k = xp.float32(SQRT_2_OVER_PI), xp.float32(0.044715)
    t = xp.tanh(c * (z + k * z * z * z))
    return 0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * c * (1.0 + 3 * k * z * z)


def gelu_backward(z, xp=np):
    """d gelu / dz for the exact GELU, in float64 like gelu, returned as float32:

        gelu'(z) = Φ(z) + z φ(z),   Φ(z) = ½ erfc(−z / √2),  φ(z) = e^(−z²/2) / √(2π)
    """
    z64 = xp.asarray(z, dtype=xp.float64)
    pdf = xp.exp(-0.5 * z64 * z64) / math.sqrt(2.0 * math.pi)
    return (0.5 * erfc(-z64 / math.sqrt(2.0), xp) + z64 * pdf).astype(xp.float32)


def geglu_backward(dy, gate, up, approximate="tanh", xp=np):
    """The gradients of geglu: dy, gate, up [..., F] -> (dgate, dup), each [..., F].

        ∂L/∂gate = dy ⊙ up ⊙ gelu'(gate)          ∂L/∂up = dy ⊙ gelu(gate)

    gelu' is gelu_tanh_backward (approximate="tanh") or gelu_backward ("none").
    """
    if approximate == "tanh":
        act, slope = gelu_tanh(gate, xp), gelu_tanh_backward(gate, xp)
    elif approximate == "none":
        act, slope = gelu(gate, xp), gelu_backward(gate, xp)
    else:
        raise ValueError(f"approximate must be 'tanh' or 'none' (the exact GELU), got "
                         f"{approximate!r}")
    return dy * up * slope, dy * act
