"""Causal, windowed, soft-capped GQA attention in Numba — the semantics of `minigemma.ops.attention`.

For each query row (b, t, n), reading kv head k = n // G (llama2.c's index arithmetic; the kv
heads are never repeated):

    allowed(s) = k_pos[b, s] ≠ EMPTY_SLOT and k_pos[b, s] ≤ q_pos[b, t] and q_pos − k_pos < window
    score_s    = softcap(q · k_s · scale)           for allowed keys only (the others weigh 0)
    out        = Σ_s softmax(score)_s · v_s

Two paths. Decode (a few query rows): `attention`, one loop per query row that skips masked
keys. Prefill (many rows): `attention_prefill` runs the two products as BLAS GEMMs per kv head
and chunk of queries — scores = Q_g Kᵀ, then `masked_softmax` in place, then out = P V — as the
reference does, but without its [B, K, G, T, S] temporaries.

Masked keys weigh exactly 0. A query with no allowed key gets NaN, as the reference does (its
softmax over only −∞ is 0/0). The softmax's exponentials are `exp64` (elementwise.py): libm's
expf is a scalar call LLVM cannot vectorise; masked_softmax went 4.7 -> 2.3 ns per score
(a 501-token prefill has 11 M of them). window=None is passed as the largest int64 (no key is
that far back) and cap=None as 0 (no soft-cap).
"""
import numpy as np
from numba import njit

from minigemma.backends.numba.elementwise import exp64
from minigemma.backends.numba.jit import FASTMATH, kernel
from minigemma.ops.attention import EMPTY_SLOT  # −1; a compiled constant in the kernels

SCORES_BYTES = 1 << 24  # at most this many bytes of float32 scores per chunk of queries
QUERY_CHUNK = 128  # queries per chunk: smaller skips more of the causal mask's zeros
NO_WINDOW = np.iinfo(np.int64).max


@njit(inline="always", fastmath=FASTMATH)
def dot(a, b):
    acc = np.float32(0)
    for h in range(a.shape[0]):
        acc += a[h] * b[h]
    return acc


@njit(inline="always", fastmath=FASTMATH)
def axpy(w, x, y):
    """y += w · x (vectors of one length)."""
    for h in range(x.shape[0]):
        y[h] += w * x[h]


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
            query, o = q[b, t, n], out[b, t, n]  # [H]
            scores = np.empty(S, np.float32)
            top = np.float32(-np.inf)
            for s in range(S):  # pass 1: scores of the allowed keys, and their max
                kp = k_pos[b, s]
                if kp == EMPTY_SLOT or kp > p or p - kp >= window:
                    scores[s] = -np.inf
                    continue
                x = dot(query, k[b, s, kv]) * sc
                if cap != 0:
                    x = c * np.tanh(x / c)
                scores[s] = x
                top = max(top, x)
            o[:] = 0
            if top == -np.inf:  # no key allowed: the reference's 0/0
                o[:] = np.nan
                continue
            total = np.float32(0)
            for s in range(S):  # pass 2: unnormalised weights
                if scores[s] != -np.inf:
                    scores[s] = exp64(scores[s] - top)
                    total += scores[s]
            for s in range(S):  # pass 3: weighted sum of the values
                if scores[s] != -np.inf:
                    axpy(scores[s] / total, v[b, s, kv], o)
    return attention


@kernel
def masked_softmax(loop):
    def masked_softmax(scores, q_pos, k_pos, G, scale, window, cap):
        """scores [R, S] = q·k (row r is query r // G) -> softmax weights in place."""
        S = scores.shape[1]
        sc, c = np.float32(scale), np.float32(cap)
        for r in loop(scores.shape[0]):
            p = q_pos[r // G]
            top = np.float32(-np.inf)
            for s in range(S):  # pass 1: scale, cap, mask, max
                kp = k_pos[s]
                if kp == EMPTY_SLOT or kp > p or p - kp >= window:
                    scores[r, s] = -np.inf
                    continue
                x = scores[r, s] * sc
                if cap != 0:
                    x = c * np.tanh(x / c)
                scores[r, s] = x
                top = max(top, x)
            if top == -np.inf:  # no key allowed: the reference's 0/0
                scores[r, :] = np.nan
                continue
            total = np.float32(0)
            for s in range(S):  # pass 2: exp of the allowed scores; masked keys weigh 0
                if scores[r, s] == -np.inf:
                    scores[r, s] = 0
                else:
                    scores[r, s] = exp64(scores[r, s] - top)
                    total += scores[r, s]
            inv = np.float32(1) / total
            for s in range(S):  # pass 3: normalise
                scores[r, s] *= inv
    return masked_softmax


def attention_prefill(q, k, v, q_pos, k_pos, scale, window, cap, parallel=True):
    """attention() for many query rows: BLAS products per kv head and chunk of queries.

    Each chunk multiplies only the keys that some query of the chunk may see (causal prefix,
    window, no empty slots), so a causal prefill does about half the work of the full product.
    """
    B, T, N, H = q.shape
    S, K = k.shape[1], k.shape[2]
    G = N // K
    out = np.empty_like(q)
    chunk = max(1, min(QUERY_CHUNK, SCORES_BYTES // (4 * S * G)))  # queries per chunk
    for b in range(B):
        for t0 in range(0, T, chunk):
            t1 = min(T, t0 + chunk)
            lo, hi = q_pos[b, t0:t1].min(), q_pos[b, t0:t1].max()
            kp = k_pos[b]
            seen = np.flatnonzero((kp != EMPTY_SLOT) & (kp <= hi) & (lo - kp < window))  # slots
            if seen.size == 0:  # no query of the chunk sees any key: the reference's NaN
                out[b, t0:t1] = np.nan
                continue
            kp_seen = np.ascontiguousarray(kp[seen])
            for kv in range(K):
                heads = slice(kv * G, (kv + 1) * G)  # the query heads that read kv head kv
                keys, values = k[b, seen, kv], v[b, seen, kv]  # [S', H]
                qg = q[b, t0:t1, heads].reshape((t1 - t0) * G, H)  # rows (t, g)
                scores = qg @ keys.T  # [Tc·G, S']
                masked_softmax(scores, q_pos[b, t0:t1], kp_seen, G, scale, window, cap,
                               parallel=parallel)
                out[b, t0:t1, heads] = (scores @ values).reshape(t1 - t0, G, H)
    return out
