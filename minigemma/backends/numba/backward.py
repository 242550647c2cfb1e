"""Numba kernels for the costly parts of a training step (called by minigemma.training.kernels;
references: minigemma.training.losses, minigemma.ops.rglru, minigemma.training.optimizer).

    attention_backward     per (sequence, kv head): the softmax of each query row recomputed over
                           the keys its mask admits, then ∂L/∂q, ∂L/∂k, ∂L/∂v accumulated
    sparse_loss_and_grad   per row of logits z [r, V] against sparse targets (ids, w [r, k]):
                           m = max z, e = exp((z − m)/τ) written over z (a vectorised
                           exp), s = Σ e,
                           loss = log s − Σ_j w̃_j (z_id_j − m)/τ,   w̃ = w / Σ w
                           grad = (e / s − q) / τ · scale, in place of z
    rglru_scan_backward    the reverse scan δ_t = dy_t + a'_{t+1} δ_{t+1} per (batch, channel)
    adamw_update           m, v and θ of one parameter in one pass
    draw_teacher_ids       the inverse-CDF draws of a teacher's sparse targets (capturing them
                           costs a softmax and a cumulative sum over V per position)

Rows, (batch, channel chunks) and parameter chunks run in parallel (`prange`); each iteration
writes only its own slice. Sums in float64, elementwise work in float32, as the references.
Inputs are made C-contiguous float32 (int64 ids, float64 weights) by the wrappers, so each
kernel compiles once.
"""
import math

import numpy as np
from numba import njit, prange

from minigemma.backends.numba.jit import FASTMATH
from minigemma.ops.rglru import SQRT_MAX_SLOPE

ROW_OK, BAD_ROW = 0, 1
ADAM_CHUNK = 1 << 16  # parameters per parallel chunk of the AdamW update
SCAN_CHANNELS = 64  # channels per parallel chunk of the reverse scan


# exp(v) for v ≤ 0 as 2^k · p(r), v = k ln 2 + r, |r| ≤ ln 2 / 2 (Cephes' expf polynomial,
# relative error ~2 ulps): a loop the compiler vectorises, where Numba's exp calls expf one
# value at a time (4x slower than NumPy's SIMD exp; this is 2x faster than NumPy's).
LOG2E = np.float32(1.4426950408889634)
LN2_HI, LN2_LO = np.float32(0.693359375), np.float32(-2.12194440e-4)
EXP_MIN = np.float32(-87.0)  # below it exp underflows float32: 0
EXPF_POLY = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
             1.6666665459e-1, 5.0000001201e-1)
P0, P1, P2, P3, P4, P5 = (np.float32(c) for c in EXPF_POLY)


@njit(inline="always")
def _bad_row(m, total):
    """A row whose maximum is not finite, or whose sum is NaN or infinite, has no softmax."""
    return not math.isfinite(m) or math.isnan(total) or total == np.inf


@njit(cache=True, fastmath=FASTMATH)
def _row_max_and_sum(row):
    """(max, sum) of a float32 row: the sum is NaN or +inf when the row holds NaN or +inf."""
    m, total = row[0], np.float32(0)
    for i in range(row.shape[0]):
        m = max(m, row[i])
        total += row[i]
    return m, total


@njit(cache=True, fastmath=FASTMATH)
def _exp_shifted(row, m, inv_tau, bits):
    """row ← exp((row − m) / τ) in place (float32); returns the sum in float64."""
    for i in range(row.shape[0]):
        v = (row[i] - m) * inv_tau
        w = max(v, EXP_MIN)
        k = np.floor(w * LOG2E + np.float32(0.5))
        r = w - k * LN2_HI - k * LN2_LO
        p = ((((P0 * r + P1) * r + P2) * r + P3) * r + P4) * r + P5
        bits[i] = (np.int32(k) + np.int32(127)) << 23  # the float32 bits of 2^k
        row[i] = (p * r * r + r + np.float32(1)) if v > EXP_MIN else np.float32(0)
    powers = bits.view(np.float32)
    s = 0.0
    for i in range(row.shape[0]):
        e = row[i] * powers[i]
        row[i] = e
        s += e
    return s


@njit(cache=True, fastmath=FASTMATH, parallel=True)
def _sparse_rows(z, ids, weights, temperature, scale, row_loss, status):
    """z [r, V] float32 (overwritten by the gradient), ids [r, k] int64, weights [r, k] float64."""
    r, V = z.shape
    k = ids.shape[1]
    inv_tau = np.float32(1.0 / temperature)
    for t in prange(r):
        m, total = _row_max_and_sum(z[t])
        if _bad_row(m, total):
            status[t] = BAD_ROW
            continue
        w_sum, picked = 0.0, 0.0
        for j in range(k):
            w_sum += weights[t, j]
        for j in range(k):  # the targets' logits, read before z is overwritten
            if weights[t, j] > 0.0:
                picked += weights[t, j] / w_sum * (np.float64(z[t, ids[t, j]]) - m) / temperature
        bits = np.empty(V, np.int32)
        s = _exp_shifted(z[t], m, inv_tau, bits)
        row_loss[t] = math.log(s) - picked
        factor = np.float32(scale / (temperature * s))
        for x in range(V):
            z[t, x] *= factor
        for j in range(k):  # − q / τ · scale (repeated ids add up)
            z[t, ids[t, j]] -= np.float32(weights[t, j] / w_sum * scale / temperature)
        status[t] = ROW_OK


def sparse_loss_and_grad(logits, ids, weights, temperature, scale):
    """(Σ_rows loss, gradient [r, V] float32) as minigemma.training.kernels.sparse_loss_and_grad;
    the gradient is written over `logits` when they are a C-contiguous float32 array."""
    z = np.ascontiguousarray(logits, dtype=np.float32)
    if not z.flags.writeable:
        z = z.copy()
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    weights = np.ascontiguousarray(weights, dtype=np.float64)
    if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= z.shape[1]):
        raise ValueError(f"target ids must lie in [0, {z.shape[1]}), got values from "
                         f"{int(ids.min())} to {int(ids.max())}")
    row_loss = np.zeros(z.shape[0], dtype=np.float64)
    status = np.zeros(z.shape[0], dtype=np.int8)
    _sparse_rows(z, ids, weights, float(temperature), float(scale), row_loss, status)
    bad = np.flatnonzero(status)
    if bad.size:
        raise ValueError(f"student_logits row {bad[0]} has NaN, +inf or no finite entry; logits "
                         f"must be finite or −inf (probability 0), with a finite entry in every row")
    return float(row_loss.sum()), z


@njit(cache=True, fastmath=False, parallel=True)
def _scan_backward(dy, x, a, gate_x, h0, reset, y, delta0, dx, da, dgate_x, dh0):
    """All [B, T, L] float32 but h0, delta0, dh0 [B, L] and reset [B, T] bool."""
    B, T, L = x.shape
    chunks = (L + SCAN_CHANNELS - 1) // SCAN_CHANNELS
    floor = np.float32(0.5 / SQRT_MAX_SLOPE)
    for job in prange(B * chunks):
        n, c0 = job // chunks, (job % chunks) * SCAN_CHANNELS
        c1 = min(L, c0 + SCAN_CHANNELS)
        for l in range(c0, c1):
            delta = delta0[n, l]
            for t in range(T - 1, -1, -1):
                delta += dy[n, t, l]
                h_prev = y[n, t - 1, l] if t > 0 else h0[n, l]
                at = a[n, t, l]
                if reset[n, t]:
                    norm, decay, slope = np.float32(1), np.float32(0), np.float32(0)
                else:
                    norm = np.sqrt(np.float32(1) - at * at)
                    decay = at
                    slope = -at / max(norm, floor)
                dx[n, t, l] = delta * norm * gate_x[n, t, l]
                dgate_x[n, t, l] = delta * norm * x[n, t, l]
                da_t = delta * gate_x[n, t, l] * x[n, t, l] * slope
                if not reset[n, t]:
                    da_t += delta * h_prev
                da[n, t, l] = da_t
                delta = decay * delta
            dh0[n, l] = delta


def rglru_scan_backward(dy, x, a, gate_x, h0, reset, dh_last=None, y=None):
    """minigemma.ops.rglru.rglru_scan_backward, compiled: -> (dx, da, dgate_x, dh0)."""
    from minigemma.ops.rglru import check_scan_shapes, rglru_scan
    check_scan_shapes(x, a, gate_x, h0, reset)
    if y is None:
        y, _ = rglru_scan(x, a, gate_x, h0, reset)

    def c(v, dtype=np.float32):
        return np.ascontiguousarray(v, dtype=dtype)
    B, T, L = x.shape
    delta0 = np.zeros((B, L), np.float32) if dh_last is None else c(dh_last)
    dx, da, dgate_x = (np.empty((B, T, L), np.float32) for _ in range(3))
    dh0 = np.empty((B, L), np.float32)
    _scan_backward(c(dy), c(x), c(a), c(gate_x), c(h0), c(reset, np.bool_), c(y), delta0, dx, da,
                   dgate_x, dh0)
    return dx, da, dgate_x, dh0


@njit(cache=True, fastmath=True, parallel=True)
def _adamw(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, m_scale, v_scale):
    """Flat float32 arrays, updated in place."""
    n = param.shape[0]
    b1, b2 = np.float32(beta1), np.float32(beta2)
    c1, c2 = np.float32(1 - beta1), np.float32(1 - beta2)
    ms, vs = np.float32(m_scale), np.float32(v_scale)
    lr32, e32, wd = np.float32(lr), np.float32(eps), np.float32(weight_decay)
    for chunk in prange((n + ADAM_CHUNK - 1) // ADAM_CHUNK):
        for i in range(chunk * ADAM_CHUNK, min(n, (chunk + 1) * ADAM_CHUNK)):
            g = grad[i]
            mi = b1 * m[i] + c1 * g
            vi = b2 * v[i] + c2 * (g * g)
            m[i], v[i] = mi, vi
            param[i] -= lr32 * ((mi * ms) / (np.sqrt(vi * vs) + e32) + wd * param[i])


def adamw_update(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step):
    """minigemma.training.optimizer.adamw_update_reference in one pass, in place. param, m and
    v must be C-contiguous float32 arrays (they are updated through flat views)."""
    for name, array in (("param", param), ("m", m), ("v", v)):
        if array.dtype != np.float32 or not array.flags.c_contiguous:
            raise ValueError(f"adamw_update needs {name} as a C-contiguous float32 array")
    g = np.ascontiguousarray(grad, dtype=np.float32).reshape(-1)
    _adamw(param.reshape(-1), g, m.reshape(-1), v.reshape(-1), float(lr), float(beta1),
           float(beta2), float(eps), float(weight_decay), 1.0 / (1 - beta1 ** step),
           1.0 / (1 - beta2 ** step))


@njit(cache=True, fastmath=FASTMATH, parallel=True)
def _draw_rows(z, uniforms, temperature, draws, drawn_p, status):
    """z [r, V] float32, uniforms [r, k] in [0, 1) sorted per row -> draws [r, k] int64 (the
    first id whose cumulative weight exceeds u · total) and P_T of each draw, float64."""
    r, V = z.shape
    k = uniforms.shape[1]
    inv_tau = np.float32(1.0 / temperature)
    for t in prange(r):
        m, total = _row_max_and_sum(z[t])
        if _bad_row(m, total):
            status[t] = BAD_ROW
            continue
        e = z[t].copy()
        bits = np.empty(V, np.int32)
        s = _exp_shifted(e, m, inv_tau, bits)
        j, x, cdf = 0, 0, np.float64(e[0])
        while j < k:  # uniforms ascending: one walk along the cumulative sum
            u = uniforms[t, j] * s
            while cdf <= u and x < V - 1:
                x += 1
                cdf += e[x]
            while x > 0 and e[x] == 0:  # never a probability-0 id (cdf rounding at the end)
                x -= 1
            draws[t, j] = x
            drawn_p[t, j] = e[x] / s
            j += 1
        status[t] = ROW_OK


def draw_teacher_ids(logits, uniforms, temperature):
    """Inverse-CDF draws of minigemma.training.losses.sample_teacher, compiled: logits [r, V],
    uniforms [r, k] -> (draws [r, k] int64, their probabilities P_T [r, k] float64).

    Each draw is the first id whose cumulative probability exceeds its uniform, as in the
    reference; the probabilities come from a float32 exponential summed in float64, so a uniform
    within float32 rounding of a boundary between two ids may pick the neighbour the
    reference would not (the draws have the same distribution).
    """
    z = np.ascontiguousarray(logits, dtype=np.float32)
    u = np.asarray(uniforms, dtype=np.float64)
    order = np.argsort(u, axis=1, kind="stable")
    u_sorted = np.ascontiguousarray(np.take_along_axis(u, order, axis=1))
    r, k = u.shape
    draws_sorted = np.empty((r, k), np.int64)
    p_sorted = np.empty((r, k), np.float64)
    status = np.zeros(r, np.int8)
    _draw_rows(z, u_sorted, float(temperature), draws_sorted, p_sorted, status)
    bad = np.flatnonzero(status)
    if bad.size:
        raise ValueError(f"teacher_logits row {bad[0]} has NaN, +inf or no finite entry; logits "
                         f"must be finite or −inf (probability 0), with a finite entry in every row")
    draws, p = np.empty_like(draws_sorted), np.empty_like(p_sorted)
    np.put_along_axis(draws, order, draws_sorted, axis=1)  # back in the uniforms' order
    np.put_along_axis(p, order, p_sorted, axis=1)
    return draws, p


@njit(cache=True, fastmath=FASTMATH, parallel=True)
def _attention_backward(q, k, v, dout, q_pos, k_pos, scale, window, cap, dq, dk, dv):
    """q, dout [B, T, N, H], k, v [B, S, K, H] float32, positions int64; window 0 = none,
    cap 0 = no soft-cap -> dq, dk, dv (zeroed by the caller), as ops.attention.attention_backward."""
    B, T, N, H = q.shape
    S, K = k.shape[1], k.shape[2]
    G = N // K
    for job in prange(B * K):  # one (sequence, kv head): it alone writes dk, dv of that head
        b, kh = job // K, job % K
        p = np.empty(S, np.float32)
        dp = np.empty(S, np.float32)
        slope = np.ones(S, np.float32)
        for n in range(kh * G, (kh + 1) * G):
            for t in range(T):
                qp = q_pos[b, t]
                m = -np.inf
                for s in range(S):
                    kp = k_pos[b, s]
                    if kp == -1 or kp > qp or (window > 0 and qp - kp >= window):
                        p[s] = -np.inf
                        continue
                    r = np.float32(0)
                    for h in range(H):
                        r += q[b, t, n, h] * k[b, s, kh, h]
                    r *= np.float32(scale)
                    if cap > 0:
                        th = np.tanh(r / np.float32(cap))
                        r = np.float32(cap) * th
                        slope[s] = np.float32(1) - th * th
                    p[s] = r
                    m = max(m, r)
                total = np.float32(0)
                for s in range(S):
                    e = np.exp(p[s] - m) if p[s] > -np.inf else np.float32(0)
                    p[s] = e
                    total += e
                weighted = np.float32(0)  # Σ_s P ⊙ ∂L/∂P
                for s in range(S):
                    p[s] /= total
                    if p[s] > 0:
                        d = np.float32(0)
                        for h in range(H):
                            d += dout[b, t, n, h] * v[b, s, kh, h]
                        dp[s] = d
                        weighted += p[s] * d
                for s in range(S):
                    if p[s] > 0:
                        ds = p[s] * (dp[s] - weighted) * slope[s] * np.float32(scale)
                        for h in range(H):
                            dv[b, s, kh, h] += p[s] * dout[b, t, n, h]
                            dq[b, t, n, h] += ds * k[b, s, kh, h]
                            dk[b, s, kh, h] += ds * q[b, t, n, h]


def attention_backward(dout, q, k, v, q_pos, k_pos, scale, window=None, softcap=None):
    """ops.attention.attention_backward, compiled: -> (dq, dk, dv) float32. The softmax is
    recomputed per query row over the keys its mask admits (a window's worth on local layers)."""
    def c(a, dtype=np.float32):
        return np.ascontiguousarray(a, dtype=dtype)
    q, k, v, dout = c(q), c(k), c(v), c(dout)
    if q.shape[2] % k.shape[2]:
        raise ValueError(f"query heads ({q.shape[2]}) must be a multiple of kv heads "
                         f"({k.shape[2]})")
    dq, dk, dv = np.zeros_like(q), np.zeros_like(k), np.zeros_like(v)
    _attention_backward(q, k, v, dout, c(q_pos, np.int64), c(k_pos, np.int64), float(scale),
                        0 if window is None else int(window),
                        0.0 if softcap is None else float(softcap), dq, dk, dv)
    return dq, dk, dv


def warm_up():
    """Compile (or load from the cache) every kernel on tiny inputs."""
    z = np.zeros((2, 3), np.float32)
    sparse_loss_and_grad(z, np.zeros((2, 1), np.int64), np.ones((2, 1)), 1.0, 0.5)
    x = np.ones((1, 2, 3), np.float32)
    rglru_scan_backward(x, x, 0.5 * x, x, np.zeros((1, 3), np.float32), np.zeros((1, 2), bool))
    p = np.zeros(4, np.float32)
    adamw_update(p, p, p.copy(), p.copy(), 1e-3, 0.9, 0.95, 1e-8, 0.1, 1)
    draw_teacher_ids(z, np.full((2, 2), 0.5), 1.0)
    q = np.ones((1, 2, 2, 4), np.float32)
    pos = np.arange(2)[None]
    attention_backward(q, q, q[:, :, :1], q[:, :, :1], pos, pos, 0.5, 1, 2.0)
