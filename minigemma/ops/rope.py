"""Rotary position embedding, half-split layout (Su et al. 2021; docs/architecture.md#rope).

For a rotated width d (d = H for Gemma 1/2/3, d = H/2 for RecurrentGemma) and position p:

    θ_i  = p · f_i,   f_i = base^(−2i/d)                i = 0 … d/2 − 1
    x1, x2 = x[:d/2], x[d/2:d]
    out  = [x1·cos θ − x2·sin θ,  x2·cos θ + x1·sin θ] · m,  then x[d:] unchanged

Pairs are (i, i + d/2), not interleaved (2i, 2i+1): every Gemma reference and HF use this layout,
so no weight permutation is needed anywhere. `scale` stretches RoPE past its training context:

    a number s          linear position interpolation, θ_i = (p / s) · f_i, m = 1 (s = 1: plain)
    a RopeScaling       (minigemma.models.config) with kind "linear" (the same, s = factor) or
                        "yarn": f_i blends f_i and f_i / factor per dimension, m = its
                        attention factor (Peng et al. 2023, YaRN §3.2–3.4; HF's
                        `_compute_yarn_parameters`, whose float32 arithmetic this follows)

Angles are computed in float32 from exact integer positions (docs/numerics.md#rope-in-float32:
bf16 angles lose precision at large positions).
"""
import math

import numpy as np


def rope_frequencies(base, rot_dim, scale=1.0, xp=np):
    """(f [rot_dim/2] float32, position divisor s, attention factor m) of a RoPE `scale`.

        plain / linear: f_i = base^(−2i/d), s = factor, m = 1
        yarn:           f_i = f_i/factor · (1 − γ_i) + f_i · γ_i,  s = 1,  m = attention_factor
                        γ_i = 1 − clip((i − lo) / (hi − lo), 0, 1), lo/hi the dims at which a
                        frequency turns beta_fast / beta_slow times over the original context
    """
    exponent = xp.arange(0, rot_dim, 2, dtype=xp.float32) / xp.float32(rot_dim)
    powers = xp.float32(base) ** exponent  # base^(2i/d), [rot_dim/2]
    inv_freq = xp.float32(1.0) / powers
    kind = getattr(scale, "kind", None)
    if kind is None:
        return inv_freq, float(scale), 1.0
    if kind == "linear":
        return inv_freq, float(scale.factor), 1.0
    if kind != "yarn":
        raise ValueError(f"RoPE scaling {kind!r} is not implemented (linear, yarn)")
    factor, context = scale.factor, scale.original_context

    def dim_of(rotations):  # the dim whose frequency turns `rotations` times over the context
        return rot_dim * math.log(context / (rotations * 2 * math.pi)) / (2 * math.log(base))
    lo, hi = dim_of(scale.beta_fast), dim_of(scale.beta_slow)
    if scale.truncate:
        lo, hi = math.floor(lo), math.ceil(hi)
    lo, hi = max(lo, 0), min(hi, rot_dim - 1)
    if lo == hi:
        hi += 0.001  # as HF: no division by zero
    ramp = xp.clip((xp.arange(rot_dim // 2, dtype=xp.float32) - xp.float32(lo))
                   / xp.float32(hi - lo), 0, 1)
    extrapolation = xp.float32(1.0) - ramp  # γ_i: 1 keeps f_i, 0 interpolates f_i / factor
    interpolated = xp.float32(1.0) / (xp.float32(factor) * powers)
    inv_freq = interpolated * (xp.float32(1.0) - extrapolation) + inv_freq * extrapolation
    m = scale.attention_factor
    if m is None:
        m = 0.1 * math.log(factor) + 1.0 if factor > 1 else 1.0
    return inv_freq.astype(xp.float32), 1.0, float(m)


def rope_angles(positions, base, rot_dim, scale=1.0, xp=np):
    """positions [B, T] int -> θ [B, T, rot_dim/2] float32."""
    inv_freq, divisor, _ = rope_frequencies(base, rot_dim, scale, xp)
    return _angles(positions, inv_freq, divisor, xp)


def _angles(positions, inv_freq, divisor, xp):
    pos = xp.asarray(positions).astype(xp.float32)
    if divisor != 1.0:
        pos = pos / xp.float32(divisor)
    return pos[..., None] * inv_freq  # [B, T, rot_dim/2]


def rope_cos_sin(positions, base, rot_dim, scale=1.0, xp=np):
    """positions [B, T] -> (m·cos θ, m·sin θ), each [B, T, rot_dim/2] float32."""
    inv_freq, divisor, m = rope_frequencies(base, rot_dim, scale, xp)
    theta = _angles(positions, inv_freq, divisor, xp)
    cos, sin = xp.cos(theta), xp.sin(theta)
    if m != 1.0:  # YaRN's attention factor (HF multiplies cos and sin by it)
        cos, sin = cos * xp.float32(m), sin * xp.float32(m)
    return cos, sin


def rope(x, positions, base, rot_dim=None, scale=1.0, xp=np):
    """x [B, T, N, H] float32, positions [B, T] -> same shape, first rot_dim dims rotated."""
    rot_dim = x.shape[-1] if rot_dim is None else rot_dim
    half = rot_dim // 2
    cos, sin = rope_cos_sin(positions, base, rot_dim, scale, xp)
    cos, sin = cos[:, :, None, :], sin[:, :, None, :]  # [B, T, 1, d/2]
    x1, x2, rest = x[..., :half], x[..., half:rot_dim], x[..., rot_dim:]
    return xp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin, rest], axis=-1)


def rope_backward(dy, positions, base, rot_dim=None, scale=1.0, xp=np):
    """The gradient of rope with respect to x: dy [B, T, N, H] -> dx, same shape.

    RoPE multiplies each pair (x1_i, x2_i) by m·R(θ_i), R(θ) = [[cos θ, −sin θ], [sin θ, cos θ]].
    The transpose of a rotation is the rotation by −θ, so

        ∂L/∂x = m·R(θ)ᵀ dy = m·R(−θ) dy = rope(dy, −positions)      (x[d:] passes dy through)

    θ is linear in the position for every scaling (θ_i = (p / s) · f_i), so negating the
    positions negates θ exactly.
    """
    return rope(dy, -xp.asarray(positions), base, rot_dim, scale, xp)
