"""Logit soft-capping (Gemma 2 report §2; docs/architecture.md#soft-capping).

    softcap(x) = cap · tanh(x / cap)

Smooth, odd and strictly increasing, equal to x near 0 and bounded in (−cap, cap). Gemma 2 caps
attention scores at 50 (after scaling, before the mask) and final logits at 30; RecurrentGemma
caps final logits at 30; Gemma 3 replaces the caps with QK-norm.
"""
import numpy as np


def softcap(x, cap, xp=np):
    """x any shape float32, cap > 0 -> same shape, values in (−cap, cap)."""
    cap = xp.float32(cap)
    return cap * xp.tanh(x / cap)


def softcap_backward(dy, x, cap, xp=np):
    """The gradient of softcap: dy, x any shape float32 -> dx = dy · (1 − tanh²(x / cap)).

    d/dx [cap · tanh(x / cap)] = 1 − tanh²(x / cap): 1 at x = 0, vanishing as |x| ≫ cap.
    """
    t = xp.tanh(x / xp.float32(cap))
    return dy * (1 - t * t)
