"""RecurrentGemma's two sequence ops in Numba: the causal depthwise Conv1D and the RG-LRU scan.

Semantics, shapes and the equations are the references' (`minigemma.ops.conv1d.conv1d`,
`minigemma.ops.rglru.rglru_scan`); read their docstrings. Both are elementwise chains with no
reduction to reorder, so these kernels are compiled without fastmath and do the float32
operations in the reference's order: their outputs are bit-identical to it.

    conv1d:      y_t = b + Σ_k w[k] ⊙ window[t + k],  window = [state; x]  (k = 0 … W−1, in order)
    rglru_scan:  h_t = a_t ⊙ h_{t−1} + ((x_t ⊙ gate_x_t) ⊙ √(1 − a_t²))
                 (a reset step: a_t = 0 and the square root is 1)

The outer loops are (batch, time) rows for the convolution and (batch, channel chunk) for the
scan, whose time loop is sequential; the innermost loop runs over contiguous channels.
"""
import numpy as np

from minigemma.backends.numba.jit import kernel

SCAN_CHANNELS = 256  # channels per parallel chunk of the scan


@kernel(fastmath=False)
def conv1d(loop):
    def conv1d(x, w, b, state, y, new_state):
        """x [B, T, L], w [W, L], b [L], state [B, W−1, L] -> y [B, T, L], new_state."""
        B, T, L = x.shape
        W = w.shape[0]
        for row in loop(B * T):  # one output row (batch, time) each
            n, t = row // T, row % T
            for l in range(L):
                y[n, t, l] = b[l]
            for k in range(W):  # window[t + k]: the state for the first W−1 entries, then x
                j = t + k
                for l in range(L):
                    inp = state[n, j, l] if j < W - 1 else x[n, j - (W - 1), l]
                    y[n, t, l] = y[n, t, l] + w[k, l] * inp
        for n in range(B):  # the new state: the last W−1 entries of the window
            for i in range(W - 1):
                j = T + i
                for l in range(L):
                    new_state[n, i, l] = state[n, j, l] if j < W - 1 else x[n, j - (W - 1), l]
    return conv1d


@kernel(fastmath=False)
def rglru_scan(loop):
    def rglru_scan(x, a, gate_x, h0, reset, y, h):
        """x, a, gate_x [B, T, L], h0 [B, L], reset [B, T] bool -> y [B, T, L], h [B, L] = h_T."""
        B, T, L = x.shape
        chunks = (L + SCAN_CHANNELS - 1) // SCAN_CHANNELS
        for job in loop(B * chunks):  # (batch, channel chunk): independent recurrences
            n, c0 = job // chunks, (job % chunks) * SCAN_CHANNELS
            c1 = min(L, c0 + SCAN_CHANNELS)
            for l in range(c0, c1):
                h[n, l] = h0[n, l]
            for t in range(T):  # sequential in time
                if reset[n, t]:  # a = 0, √(1 − a²) = 1, as the reference computes them
                    for l in range(c0, c1):
                        u = (x[n, t, l] * gate_x[n, t, l]) * np.float32(1)
                        h[n, l] = np.float32(0) * h[n, l] + u
                        y[n, t, l] = h[n, l]
                else:
                    for l in range(c0, c1):
                        at = a[n, t, l]
                        u = (x[n, t, l] * gate_x[n, t, l]) * np.sqrt(np.float32(1) - at * at)
                        h[n, l] = at * h[n, l] + u
                        y[n, t, l] = h[n, l]
    return rglru_scan
