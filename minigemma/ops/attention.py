"""Scaled dot-product attention with grouped query heads, soft-cap and sliding windows.

Vaswani et al. 2017; MQA (Shazeer 2019) and GQA (Ainslie et al. 2023) as used by Gemma;
docs/architecture.md#attention. For query head n, reading kv head k = n // G (G = N / K query heads per kv head):

    s[t, s'] = softcap(q_t · k_s' · scale)          scale = query_pre_attn_scalar^(−½)
    s[t, s'] = −∞  unless  0 ≤ pos(s') ≤ pos(t)  and  pos(t) − pos(s') < window
    out_t    = Σ_s' softmax(s[t])_s' · v_s'

MHA is K = N, MQA is K = 1. The kv heads are never repeated: the query heads are reshaped to
[K, G] and each group reads its own kv head (einsum `BTKGH,BSKH->BKGTS`). The soft-cap is
applied before the mask, as in every reference. The mask is computed from positions, not from
array indices, so keys may sit in any order in a ring-buffer cache; a key position of −1 marks an
empty cache slot. A window of W admits W keys including the current one (Gemma 2/3, HF); the
official RecurrentGemma admits W + 1, which is `window=W + 1` here.
"""
import numpy as np

from minigemma.ops.softcap import softcap as _softcap

EMPTY_SLOT = -1


def attention_mask(q_pos, k_pos, window=None, xp=np):
    """q_pos [B, T], k_pos [B, S] int -> allowed [B, 1, 1, T, S] bool (causal, windowed)."""
    q = xp.asarray(q_pos)[:, :, None]  # [B, T, 1]
    k = xp.asarray(k_pos)[:, None, :]  # [B, 1, S]
    allowed = (k != EMPTY_SLOT) & (k <= q)
    if window is not None:
        allowed &= (q - k) < window
    return allowed[:, None, None]  # [B, 1, 1, T, S]


def attention(q, k, v, q_pos, k_pos, *, scale, window=None, softcap=None, xp=np):
    """q [B, T, N, H], k/v [B, S, K, H] float32, q_pos [B, T], k_pos [B, S] -> [B, T, N, H] f32."""
    B, T, N, H = q.shape
    K = k.shape[2]
    if N % K:
        raise ValueError(f"query heads ({N}) must be a multiple of kv heads ({K})")
    G = N // K
    q = q.reshape(B, T, K, G, H).transpose(0, 2, 3, 1, 4)  # [B, K, G, T, H]
    keys = k.transpose(0, 2, 3, 1)[:, :, None]  # [B, K, 1, H, S]
    scores = (q @ keys) * xp.float32(scale)  # [B, K, G, T, S] = einsum BTKGH,BSKH->BKGTS
    if softcap is not None:
        scores = _softcap(scores, softcap, xp)
    allowed = attention_mask(q_pos, k_pos, window, xp)
    scores = xp.where(allowed, scores, xp.float32(-xp.inf))
    scores -= scores.max(axis=-1, keepdims=True)
    weights = xp.exp(scores)
    weights /= weights.sum(axis=-1, keepdims=True)  # softmax over keys, float32
    values = v.transpose(0, 2, 1, 3)[:, :, None]  # [B, K, 1, S, H]
    out = weights @ values  # [B, K, G, T, H]
    return out.transpose(0, 3, 1, 2, 4).reshape(B, T, N, H)


def attention_backward(dout, q, k, v, q_pos, k_pos, *, scale, window=None, softcap=None, xp=np):
    """The gradients of attention: dout [B, T, N, H] and the forward's inputs ->
    (dq [B, T, N, H], dk [B, S, K, H], dv [B, S, K, H]), float32.

    With r = q kᵀ · scale, s = softcap(r) (s = r without a cap), P = softmax(s + mask) over the
    keys and out = P v, per query head (kv head n // G):

        ∂L/∂v = Pᵀ dout                      summed over the G query heads of each kv head
        ∂L/∂P = dout vᵀ
        ∂L/∂s = P ⊙ (∂L/∂P − Σ_s' P ⊙ ∂L/∂P)  the softmax's Jacobian; 0 where masked (P = 0)
        ∂L/∂r = ∂L/∂s ⊙ (1 − tanh²(r / cap)) the soft-cap's slope (1 without a cap)
        ∂L/∂q = ∂L/∂r k · scale,   ∂L/∂k = ∂L/∂rᵀ q · scale (summed over the G heads)

    P is recomputed here from q and k rather than kept by the forward.
    """
    B, T, N, H = q.shape
    K = k.shape[2]
    G = N // K
    c = xp.ascontiguousarray  # stacked matmuls reach BLAS only on contiguous matrices
    qg = c(q.reshape(B, T, K, G, H).transpose(0, 2, 3, 1, 4))  # [B, K, G, T, H]
    keys = c(k.transpose(0, 2, 1, 3))[:, :, None]  # [B, K, 1, S, H]
    values_t = c(v.transpose(0, 2, 3, 1))[:, :, None]  # [B, K, 1, H, S]
    raw = (qg @ c(k.transpose(0, 2, 3, 1))[:, :, None]) * xp.float32(scale)  # [B, K, G, T, S]
    scores = raw if softcap is None else _softcap(raw, softcap, xp)
    allowed = attention_mask(q_pos, k_pos, window, xp)
    scores = xp.where(allowed, scores, xp.float32(-xp.inf))
    weights = xp.exp(scores - scores.max(axis=-1, keepdims=True))
    weights /= weights.sum(axis=-1, keepdims=True)  # P [B, K, G, T, S]
    d_out = c(dout.reshape(B, T, K, G, H).transpose(0, 2, 3, 1, 4))  # [B, K, G, T, H]
    dv = (c(weights.swapaxes(-1, -2)) @ d_out).sum(axis=2)  # [B, K, S, H]
    d_weights = d_out @ values_t  # [B, K, G, T, S]
    d_scores = weights * (d_weights - (weights * d_weights).sum(axis=-1, keepdims=True))
    if softcap is not None:
        t = xp.tanh(raw / xp.float32(softcap))
        d_scores = d_scores * (1 - t * t)
    d_scores = d_scores * xp.float32(scale)
    dq = d_scores @ keys  # [B, K, G, T, H]
    dk = (c(d_scores.swapaxes(-1, -2)) @ qg).sum(axis=2)  # [B, K, S, H]
    return (dq.transpose(0, 3, 1, 2, 4).reshape(B, T, N, H), dk.transpose(0, 2, 1, 3),
            dv.transpose(0, 2, 1, 3))
