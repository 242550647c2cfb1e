"""RMSNorm with Gemma's zero-centred gain (Zhang & Sennrich 2019; Gemma report §2).

    rms(x)     = sqrt(mean(x², over the last axis) + eps)
    RMSNorm(x) = x / rms(x) · (1 + w)

Gemma stores w centred on zero (initialised to 0), so the effective gain is 1 + w. minigemma's
checkpoints store the effective gain g = 1 + w: the HF converter adds the 1 once, in float32 (as
HF does at run time); llama.cpp's GGUF files already hold 1 + w. This function therefore takes g.
Everything is computed in float32, whatever the input dtype (docs/numerics.md#rmsnorm-in-float32).
"""
import numpy as np


def rms_norm(x, gain, eps=1e-6, xp=np):
    """x [..., D] any float, gain [D] (= 1 + w) -> [..., D] float32."""
    x = x.astype(xp.float32, copy=False)
    mean_square = xp.mean(x * x, axis=-1, keepdims=True)  # [..., 1]
    return x / xp.sqrt(mean_square + xp.float32(eps)) * gain.astype(xp.float32, copy=False)


def rms_norm_backward(dy, x, gain, eps=1e-6, xp=np):
    """The gradients of rms_norm: dy, x [..., D], gain [D] -> (dx [..., D], dgain [D]) float32.

    With r = (mean(x²) + eps)^(−½) per row and y = x · r · g:

        ∂L/∂g = Σ_rows dy ⊙ x · r
        ∂L/∂x = r · (dy ⊙ g) − x · r³ · mean(dy ⊙ g ⊙ x)        (mean over the last axis)

    g is the stored gain 1 + w; since ∂g/∂w = 1, dgain is also the gradient with respect to
    Gemma's zero-centred w (HF's parameter).
    """
    x = x.astype(xp.float32, copy=False)
    dy = dy.astype(xp.float32, copy=False)
    g = gain.astype(xp.float32, copy=False)
    r = 1 / xp.sqrt(xp.mean(x * x, axis=-1, keepdims=True) + xp.float32(eps))  # [..., 1]
    dgain = (dy * x * r).reshape(-1, x.shape[-1]).sum(axis=0)  # [D]
    dyg = dy * g
    dx = r * dyg - x * (r * r * r) * xp.mean(dyg * x, axis=-1, keepdims=True)
    return dx, dgain
