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
