"""Causal, windowed, soft-capped GQA attention in Numba — the semantics of `minigemma.attention`.

For each query row (b, t, n), reading kv head k = n // G (llama2.c's index arithmetic; the kv
heads are never repeated):

    allowed(s) = k_pos[b, s] ≠ −1  and  k_pos[b, s] ≤ q_pos[b, t]  and  q_pos − k_pos < window
    score_s    = softcap(q · k_s · scale)           for allowed keys only (the others weigh 0)
    out        = Σ_s softmax(score)_s · v_s

Masked keys are skipped instead of being set to −∞, which gives the same weights. A query with no
allowed key gets NaN, as the reference does (its softmax over only −∞ is 0/0). The backend passes
window=None as the largest int64 (no key is that far back) and cap=None as 0 (no soft-cap).
"""
import numpy as np

from .jit_numba import kernel


@kernel
def attention(loop):
    def attention(q, k, v, q_pos, k_pos, scale, window, cap, out):
        """q [B, T, N, H], k/v [B, S, K, H], q_pos [B, T], k_pos [B, S] -> out [B, T, N, H]."""
        B, T, N, H = q.shape
        S, K = k.shape[1], k.shape[2]
        G = N // K
        sc, c = np.float32(scale), np.float32(cap)
        for row in loop(B * T * N):  # each query row writes its own out[b, t, n]
            b, t, n = row // (T * N), (row // N) % T, row % N
            kv = n // G
            p = q_pos[b, t]
            scores = np.empty(S, np.float32)
            top = np.float32(-np.inf)
            for s in range(S):  # pass 1: scores of the allowed keys, and their max
                kp = k_pos[b, s]
                if kp == -1 or kp > p or p - kp >= window:
                    scores[s] = -np.inf
                    continue
                dot = np.float32(0)
                for h in range(H):
                    dot += q[b, t, n, h] * k[b, s, kv, h]
                x = dot * sc
                if cap != 0:
                    x = c * np.tanh(x / c)
                scores[s] = x
                top = max(top, x)
            for h in range(H):
                out[b, t, n, h] = 0
            if top == -np.inf:  # no key allowed: the reference's 0/0
                for h in range(H):
                    out[b, t, n, h] = np.nan
                continue
            total = np.float32(0)
            for s in range(S):  # pass 2: unnormalised weights
                if scores[s] != -np.inf:
                    scores[s] = np.exp(scores[s] - top)
                    total += scores[s]
            for s in range(S):  # pass 3: weighted sum of the values
                if scores[s] != -np.inf:
                    w = scores[s] / total
                    for h in range(H):
                        out[b, t, n, h] += w * v[b, s, kv, h]
    return attention
