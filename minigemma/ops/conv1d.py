"""Causal depthwise temporal convolution with bias (Griffin, De et al. 2024, §2.4; docs/architecture.md#conv1d).

Each of the L channels is filtered on its own (depthwise) over the last W inputs (causal):

    y_t = b + Σ_{s=0}^{W−1} w[W−1−s] ⊙ x_{t−s}

so w[W−1] multiplies the current input and w[0] the input W−1 steps back (RecurrentGemma:
W = 4). The inputs before the first row of x come from `state`, the last W−1 inputs seen (zeros
at the start of a sequence), and the new state is the last W−1 inputs including x. A sequence
cut into chunks, each call given the state the previous one returned, therefore gives the same
y as one call, and decoding a token needs only W−1 remembered inputs.

Layouts: the official `recurrentgemma` code stores w as [W, L] (as here); HF stores a PyTorch
`Conv1d(groups=L)` weight [L, 1, W] with the same tap order (`W_hf[l, 0, k] = w[k, l]`).
Departure: in a packed multi-document prefill the official code also zeroes the taps that reach
back across a document start (segment position 0, docs/numerics.md#conv-across-documents); this function, like HF, does not
know about documents — a new sequence starts from a zero state instead.
"""
import numpy as np


def check_conv1d_shapes(x, w, b, state):
    """ValueError unless x [B, T, L], w [W, L], b [L], state [B, W−1, L] fit together."""
    B, T, L = x.shape
    W = w.shape[0]
    if w.shape != (W, L) or b.shape != (L,):
        raise ValueError(f"conv1d weights must be w [W, {L}] and b [{L}] for x of width {L}, got "
                         f"w {tuple(w.shape)} and b {tuple(b.shape)}")
    if state.shape != (B, W - 1, L):
        raise ValueError(f"conv1d state must be [batch, W−1, L] = {(B, W - 1, L)}, got "
                         f"{tuple(state.shape)}")


def conv1d(x, w, b, state, xp=np):
    """x [B, T, L] f32, w [W, L], b [L], state [B, W−1, L] -> (y [B, T, L], state [B, W−1, L])."""
    check_conv1d_shapes(x, w, b, state)
    B, T, L = x.shape
    W = w.shape[0]
    window = xp.concatenate([state.astype(x.dtype, copy=False), x], axis=1)  # [B, W−1+T, L]
    y = xp.broadcast_to(b, (B, T, L)).astype(xp.float32)
    for k in range(W):  # tap k reads the input W−1−k steps back
        y = y + w[k] * window[:, k:k + T]
    return y, window[:, T:]  # the last W−1 inputs


def conv1d_backward(dy, x, w, b, state, xp=np):
    """The gradients of conv1d: dy [B, T, L] and the forward's inputs ->
    (dx [B, T, L], dw [W, L], db [L], dstate [B, W−1, L]), float32.

    With window = [state; x] (W−1+T rows) and y_t = b + Σ_k w[k] ⊙ window[t + k]:

        ∂L/∂w[k]         = Σ_{b, t} dy_t ⊙ window[t + k]
        ∂L/∂b            = Σ_{b, t} dy_t
        ∂L/∂window[j]    = Σ_k w[k] ⊙ dy_{j − k}          (0 ≤ j − k < T)
        dstate, dx       = the first W−1 rows and the last T rows of ∂L/∂window

    The new state the forward returns is taken to carry no gradient (a training sequence ends
    with the call).
    """
    check_conv1d_shapes(x, w, b, state)
    T, W = x.shape[1], w.shape[0]
    window = xp.concatenate([state.astype(x.dtype, copy=False), x], axis=1)  # [B, W−1+T, L]
    d_window = xp.zeros(window.shape, dtype=xp.result_type(dy.dtype, w.dtype))
    dw = xp.empty(w.shape, dtype=d_window.dtype)
    for k in range(W):  # tap k read window[t + k] for output t
        dw[k] = (dy * window[:, k:k + T]).sum(axis=(0, 1))
        d_window[:, k:k + T] += w[k] * dy
    return d_window[:, W - 1:], dw, dy.sum(axis=(0, 1)), d_window[:, :W - 1]
