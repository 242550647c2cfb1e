"""GeGLU feed-forward block with tanh-approximate GELU (Shazeer 2020; Gemma report §2).

    gelu_tanh(z) = ½ z (1 + tanh(√(2/π) (z + 0.044715 z³)))
    MLP(x)       = (gelu_tanh(x W_gateᵀ) ⊙ (x W_upᵀ)) W_downᵀ

Every Gemma model uses the tanh approximation; the exact (erf) GELU is wrong for all of them
(docs/numerics.md#tanh-gelu). No biases in Gemma 1/2/3 (RecurrentGemma adds them in its model code).
"""
import math

import numpy as np

SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def gelu_tanh(z, xp=np):
    """z any shape float32 -> same shape."""
    return 0.5 * z * (1.0 + xp.tanh(xp.float32(SQRT_2_OVER_PI) * (z + xp.float32(0.044715) * z * z * z)))


def geglu(gate, up, xp=np):
    """gate, up [..., F] float32 -> [..., F]: gelu_tanh(gate) ⊙ up."""
    return gelu_tanh(gate, xp) * up
