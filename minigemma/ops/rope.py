"""Rotary position embedding, half-split layout (Su et al. 2021; docs/architecture.md#rope).

For a rotated width d (d = H for Gemma 1/2/3, d = H/2 for RecurrentGemma) and position p:

    θ_i  = p / base^(2i/d) / scale                   i = 0 … d/2 − 1
    x1, x2 = x[:d/2], x[d/2:d]
    out  = [x1·cos θ − x2·sin θ,  x2·cos θ + x1·sin θ,  x[d:]]

Pairs are (i, i + d/2), not interleaved (2i, 2i+1): every Gemma reference and HF use this layout,
so no weight permutation is needed anywhere. `scale` is linear position interpolation (only the
global layers of the larger Gemma 3 models use it). Angles are computed in float32 from exact
integer positions (docs/numerics.md#rope-in-float32: bf16 angles lose precision at large positions).
"""
import numpy as np


def rope_angles(positions, base, rot_dim, scale=1.0, xp=np):
    """positions [B, T] int -> θ [B, T, rot_dim/2] float32."""
    exponent = xp.arange(0, rot_dim, 2, dtype=xp.float32) / xp.float32(rot_dim)
    inv_freq = xp.float32(1.0) / (xp.float32(base) ** exponent)  # [rot_dim/2]
    pos = xp.asarray(positions).astype(xp.float32) / xp.float32(scale)
    return pos[..., None] * inv_freq  # [B, T, rot_dim/2]


def rope(x, positions, base, rot_dim=None, scale=1.0, xp=np):
    """x [B, T, N, H] float32, positions [B, T] -> same shape, first rot_dim dims rotated."""
    rot_dim = x.shape[-1] if rot_dim is None else rot_dim
    half = rot_dim // 2
    theta = rope_angles(positions, base, rot_dim, scale, xp)[:, :, None, :]  # [B, T, 1, d/2]
    cos, sin = xp.cos(theta), xp.sin(theta)
    x1, x2, rest = x[..., :half], x[..., half:rot_dim], x[..., rot_dim:]
    return xp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin, rest], axis=-1)
