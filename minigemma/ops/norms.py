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
