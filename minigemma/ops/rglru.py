"""Real-Gated Linear Recurrent Unit, RG-LRU (Griffin, De et al. 2024, §2.4; docs/architecture.md#rg-lru).

The paper, per channel, for an input x_t (here the Conv1D output, width L):

    r_t = σ(W_a x_t + b_a)                    recurrence gate
    i_t = σ(W_x x_t + b_x)                    input gate
    a_t = a^(c·r_t),  a = σ(Λ)                c = 8
    h_t = a_t ⊙ h_{t−1} + √(1 − a_t²) ⊙ (i_t ⊙ x_t)

W_a and W_x are block-diagonal: L channels cut into `num_heads` contiguous blocks of width
bs = L / num_heads, each block mixed by its own [bs, bs] matrix (x @ W[block], no transpose).

As implemented (official `recurrentgemma`, HF, and here), a_t is computed in log space:

    log a_t = −c · r_t · softplus(θ)          θ = the stored `rglru_a_param`
    a_t     = exp(log a_t)

Since log σ(Λ) = −softplus(−Λ), this is the paper's a_t with θ = −Λ: the checkpoint stores −Λ,
and the base decay is a = σ(−θ) = exp(−softplus(θ)). For every θ and r_t in (0, 1), a_t lies in
(0, 1) (in float32 it can round to exactly 0 or 1, which the update still handles).

Reset (docs/numerics.md#positions-start-at-0): at a segment start (position 0) the state is dropped: a_t = 0 and
the normalisation √(1 − a_t²) is replaced by 1, so h_t = i_t ⊙ x_t.

Bound: if |i_t ⊙ x_t| ≤ M and a_t ≤ a* < 1 for all t, then
|h_t| ≤ max(|h_0|, M·√((1 + a*)/(1 − a*))): the normalised recurrence cannot blow up.

Dtypes: inputs float32; the state is accumulated and returned in float32 (the references keep
it in float32 even when activations are bfloat16).
"""
import numpy as np

C = 8.0  # the paper's c: a_t = a^(c·r_t) spans decays from a^0 = 1 down to a^8


def softplus(x, xp=np):
    """log(1 + eˣ), computed without overflow: max(x, 0) + log1p(e^−|x|)."""
    return xp.maximum(x, 0) + xp.log1p(xp.exp(-xp.abs(x)))


def block_diagonal(x, w, b, xp=np):
    """x [..., L], w [nb, bs, bs], b [nb, bs] -> [..., L]: each block of bs channels @ its W."""
    nb, bs, _ = w.shape
    lead = x.shape[:-1]
    blocks = x.reshape(-1, nb, bs).transpose(1, 0, 2)  # [nb, rows, bs]
    y = (blocks @ w).transpose(1, 0, 2) + b  # [rows, nb, bs] = einsum r h i, h i j -> r h j
    return y.reshape(*lead, nb * bs)


def sigmoid(x, xp=np):
    """1 / (1 + e^−x), computed without overflow through z = e^−|x|."""
    z = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1 / (1 + z), z / (1 + z))


def check_gate_shapes(x, a_param, input_gate_w, input_gate_b, recurrence_gate_w,
                      recurrence_gate_b):
    """ValueError unless x [..., L], a_param [L], both gate weights [nb, bs, bs] and both gate
    biases [nb, bs] with nb·bs = L fit together."""
    L = x.shape[-1]
    if a_param.shape != (L,):
        raise ValueError(f"rglru_gates needs a_param [{L}] for x of width {L}, got "
                         f"{tuple(a_param.shape)}")
    for name, w, b in (("input", input_gate_w, input_gate_b),
                       ("recurrence", recurrence_gate_w, recurrence_gate_b)):
        square_blocks = w.ndim == 3 and w.shape[1] == w.shape[2]
        if not (square_blocks and b.shape == w.shape[:2] and w.shape[0] * w.shape[2] == L):
            raise ValueError(f"rglru_gates needs the {name} gate's weight [nb, bs, bs] and bias "
                             f"[nb, bs] with nb·bs = {L} (the width of x), got weight "
                             f"{tuple(w.shape)} and bias {tuple(b.shape)}")


def rglru_gates(x, a_param, input_gate_w, input_gate_b, recurrence_gate_w, recurrence_gate_b,
                xp=np):
    """x [B, T, L] f32 -> (a [B, T, L] decay in (0, 1), gate_x [B, T, L] input gate i_t)."""
    check_gate_shapes(x, a_param, input_gate_w, input_gate_b, recurrence_gate_w,
                      recurrence_gate_b)
    gate_x = sigmoid(block_diagonal(x, input_gate_w, input_gate_b, xp), xp)
    gate_a = sigmoid(block_diagonal(x, recurrence_gate_w, recurrence_gate_b, xp), xp)
    log_a = xp.float32(-C) * gate_a * softplus(a_param, xp)
    return xp.exp(log_a), gate_x


def check_scan_shapes(x, a, gate_x, h0, reset):
    """ValueError unless x, a, gate_x [B, T, L], h0 [B, L] and reset [B, T] fit together."""
    B, T, L = x.shape
    if a.shape != x.shape or gate_x.shape != x.shape:
        raise ValueError(f"rglru_scan needs x, a and gate_x of one shape, got {tuple(x.shape)}, "
                         f"{tuple(a.shape)} and {tuple(gate_x.shape)}")
    if h0.shape != (B, L) or reset.shape != (B, T):
        raise ValueError(f"rglru_scan needs h0 [{B}, {L}] and reset [{B}, {T}], got "
                         f"{tuple(h0.shape)} and {tuple(reset.shape)}")


def rglru_scan(x, a, gate_x, h0, reset, xp=np):
    """x, a, gate_x [B, T, L] f32, h0 [B, L] f32, reset [B, T] bool -> (y [B, T, L], h_T [B, L]).

    The caller passes the decay a_t; the scan forms the normalisation itself:
        h_t = a_t·h_{t−1} + √(1 − a_t²)·(gate_x_t·x_t),   with a_t = 0, √(…) = 1 where reset.
    y_t = h_t. A plain loop over T: the reference every faster scan is checked against.
    """
    check_scan_shapes(x, a, gate_x, h0, reset)
    B, T, L = x.shape
    reset = xp.asarray(reset, dtype=bool)[:, :, None]  # [B, T, 1]
    multiplier = xp.where(reset, xp.float32(1.0), xp.sqrt(1 - a * a))
    a = xp.where(reset, xp.float32(0.0), a)
    u = (x * gate_x) * multiplier  # normalised, gated input
    h = h0.astype(xp.float32)  # the state is accumulated in float32
    y = xp.empty((B, T, L), dtype=xp.float32)
    for t in range(T):
        h = a[:, t] * h + u[:, t]
        y[:, t] = h
    return y, h


def rglru(x, reset, h0, a_param, input_gate_w, input_gate_b, recurrence_gate_w,
          recurrence_gate_b, xp=np):
    """The whole RG-LRU: x [B, T, L] f32, reset [B, T], h0 [B, L] -> (y [B, T, L], h_T [B, L])."""
    a, gate_x = rglru_gates(x, a_param, input_gate_w, input_gate_b, recurrence_gate_w,
                            recurrence_gate_b, xp)
    return rglru_scan(x, a, gate_x, h0, reset, xp)


def block_diagonal_backward(dy, x, w, xp=np):
    """The gradients of block_diagonal: dy, x [..., L], w [nb, bs, bs] -> (dx [..., L],
    dw [nb, bs, bs], db [nb, bs]). Per block h, with y_h = x_h W_h + b_h:

        ∂L/∂x_h = dy_h W_hᵀ        ∂L/∂W_h = Σ_rows x_hᵀ dy_h        ∂L/∂b_h = Σ_rows dy_h
    """
    nb, bs, _ = w.shape
    xs = x.reshape(-1, nb, bs).transpose(1, 0, 2)  # [nb, rows, bs]
    ds = dy.reshape(-1, nb, bs).transpose(1, 0, 2)  # [nb, rows, bs]
    dx = (ds @ w.transpose(0, 2, 1)).transpose(1, 0, 2).reshape(x.shape)
    return dx, xs.transpose(0, 2, 1) @ ds, ds.sum(axis=1)


def rglru_gates_backward(da, dgate_x, x, a_param, input_gate_w, input_gate_b,
                         recurrence_gate_w, recurrence_gate_b, xp=np):
    """The gradients of rglru_gates: da, dgate_x [B, T, L] (the gradients of its two outputs)
    and its inputs -> (dx [B, T, L], da_param [L], dinput_gate_w, dinput_gate_b,
    drecurrence_gate_w, drecurrence_gate_b), float32.

    With i = σ(z_i), r = σ(z_r) (z the block-diagonal products), log a = −c · r · softplus(θ):

        ∂L/∂log a = da ⊙ a
        ∂L/∂z_r   = ∂L/∂log a ⊙ (−c · softplus(θ)) ⊙ r (1 − r)          σ' = σ (1 − σ)
        ∂L/∂θ     = Σ_{B, T} ∂L/∂log a ⊙ (−c · r) ⊙ σ(θ)                softplus' = σ
        ∂L/∂z_i   = dgate_x ⊙ i (1 − i)
        ∂L/∂x     = the block-diagonal backward of both products, added
    """
    check_gate_shapes(x, a_param, input_gate_w, input_gate_b, recurrence_gate_w,
                      recurrence_gate_b)
    gate_x = sigmoid(block_diagonal(x, input_gate_w, input_gate_b, xp), xp)
    gate_a = sigmoid(block_diagonal(x, recurrence_gate_w, recurrence_gate_b, xp), xp)
    base = softplus(a_param, xp)
    a = xp.exp(xp.float32(-C) * gate_a * base)
    d_log_a = da * a
    d_za = d_log_a * (xp.float32(-C) * base) * gate_a * (1 - gate_a)
    d_a_param = (d_log_a * (xp.float32(-C) * gate_a)).reshape(-1, x.shape[-1]).sum(axis=0)
    d_a_param = d_a_param * sigmoid(a_param, xp)
    d_zx = dgate_x * gate_x * (1 - gate_x)
    dx_i, dw_i, db_i = block_diagonal_backward(d_zx, x, input_gate_w, xp)
    dx_r, dw_r, db_r = block_diagonal_backward(d_za, x, recurrence_gate_w, xp)
    return dx_i + dx_r, d_a_param, dw_i, db_i, dw_r, db_r


SQRT_MAX_SLOPE = 1000.0  # the references' bound on d√s/ds in the backward pass


def rglru_scan_backward(dy, x, a, gate_x, h0, reset, dh_last=None, y=None, xp=np):
    """The gradients of rglru_scan: dy [B, T, L] (and dh_last [B, L] of the final state, or
    None for 0) and the forward's inputs -> (dx, da, dgate_x [B, T, L], dh0 [B, L]), float32.

    With a'_t = a_t, n_t = √(1 − a_t²) (a'_t = 0, n_t = 1 where reset), u_t = n_t · gate_x_t · x_t
    and h_t = a'_t h_{t−1} + u_t, a reverse scan carries δ_t = ∂L/∂h_t:

        δ_t = dy_t + a'_{t+1} δ_{t+1}         (δ_T = dy_T + dh_last)
        ∂L/∂x_t = δ_t n_t gate_x_t          ∂L/∂gate_x_t = δ_t n_t x_t
        ∂L/∂a_t = δ_t h_{t−1} − δ_t gate_x_t x_t · a_t / n_t     (0 where reset)
        ∂L/∂h_0 = a'_1 δ_1

    As in the official code and HF (`SqrtBoundDerivative`), the slope of n = √(1 − a²) is
    bounded: d√s/ds = 1 / (2√s) is taken at most SQRT_MAX_SLOPE = 1000, which makes
    a_t / n_t into a_t / max(n_t, 1/2000). Where a_t rounds to 1 (n_t = 0) the gradient stays
    finite. The states h_t are the forward's output y, recomputed when not given.
    """
    check_scan_shapes(x, a, gate_x, h0, reset)
    B, T, L = x.shape
    if y is None:
        y, _ = rglru_scan(x, a, gate_x, h0, reset, xp)
    reset = xp.asarray(reset, dtype=bool)[:, :, None]  # [B, T, 1]
    norm = xp.where(reset, xp.float32(1.0), xp.sqrt(1 - a * a))  # n_t
    decay = xp.where(reset, xp.float32(0.0), a)  # a'_t
    bounded = xp.maximum(norm, xp.float32(0.5 / SQRT_MAX_SLOPE))
    d_norm_da = xp.where(reset, xp.float32(0.0), -a / bounded)  # dn/da, slope bounded
    gx = gate_x * x
    delta = xp.zeros((B, L), dtype=xp.float32) if dh_last is None else dh_last.astype(xp.float32)
    dx, da, dgate_x = (xp.empty((B, T, L), dtype=xp.float32) for _ in range(3))
    for t in range(T - 1, -1, -1):
        delta = delta + dy[:, t]
        h_prev = y[:, t - 1] if t > 0 else h0.astype(xp.float32)
        dx[:, t] = delta * norm[:, t] * gate_x[:, t]
        dgate_x[:, t] = delta * norm[:, t] * x[:, t]
        da[:, t] = xp.where(reset[:, t], xp.float32(0.0), delta * h_prev) + \
            delta * gx[:, t] * d_norm_da[:, t]
        delta = decay[:, t] * delta
    return dx, da, dgate_x, delta
