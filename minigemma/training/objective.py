"""What a student is trained on, and the gradient of the whole network for it:
`loss_and_grad` (docs/training.md#loss-and-gradient).

    loss_and_grad(model, ids)                              next-token prediction
        = (1/(B·(T−1))) Σ_{b, t<T−1} −log softmax(z_bt)[ids_b,t+1]
    loss_and_grad(model, ids, teacher=..., temperature=τ)  distillation (docs/distillation.md)
        = (1/(B·T)) Σ_{b, t} H(P_T,bt, softmax(z_bt / τ))   teacher: dense logits or SparseTeacher

z = softcap(RMSNorm_final(h_n) @ Eᵀ) are the logits of the tied head. They are never formed
for the whole batch: the head runs on blocks of rows, each block's logits turned into their
gradient at once (the losses' (P_S − q) / (τ·N)), and back through the head,

    ∂L/∂h = ∂L/∂z E,   ∂L/∂E += ∂L/∂zᵀ RMSNorm(h)

so that memory holds one [rows, V] block (V = 262 144 for Gemma 3) instead of [B·T, V].
"""
from minigemma.ops.norms import rms_norm_backward
from minigemma.ops.softcap import softcap_backward
from minigemma.training import kernels
from minigemma.training.backward import backward_trunk, forward_trunk
from minigemma.training.losses import SparseTeacher, check_temperature

HEAD_ROWS = 256  # rows of logits per block: 256 MiB of float32 at V = 262 144


class NextToken:
    """Targets ids[:, 1:] for the positions 0…T−2 (the last position has no next token)."""
    temperature = 1.0

    def __init__(self, ids, xp):
        ids = xp.asarray(ids)
        if ids.shape[1] < 2:
            raise ValueError(f"next-token prediction needs at least 2 tokens per row, got "
                             f"{ids.shape[1]}")
        self.targets = ids[:, 1:].reshape(-1).astype(xp.int64)  # [B·(T−1)]
        self.positions = slice(0, ids.shape[1] - 1)

    def block_loss_and_grad(self, be, logits, rows, count):
        k_ids = self.targets[rows][:, None]  # a one-hot teacher: one id, weight 1
        weights = be.xp.ones(k_ids.shape, dtype=be.xp.float64)
        return kernels.sparse_loss_and_grad(be, logits, k_ids, weights, 1.0, 1.0 / count)


class Sparse:
    """A SparseTeacher with one row per position, B·T rows in row-major order."""

    def __init__(self, teacher, shape, temperature, xp):
        B, T = shape
        if len(teacher) != B * T:
            raise ValueError(f"the sparse teacher has {len(teacher)} rows; ids [{B}, {T}] need "
                             f"{B * T}, one per position (row-major)")
        self.ids = xp.asarray(teacher.ids).astype(xp.int64)
        self.weights = xp.asarray(teacher.probs).astype(xp.float64)
        self.vocab_size = teacher.vocab_size
        self.temperature = temperature
        self.positions = slice(0, T)

    def block_loss_and_grad(self, be, logits, rows, count):
        if logits.shape[1] != self.vocab_size:
            raise ValueError(f"the sparse teacher's vocabulary has {self.vocab_size} ids, the "
                             f"student's {logits.shape[1]}")
        return kernels.sparse_loss_and_grad(be, logits, self.ids[rows], self.weights[rows],
                                            self.temperature, 1.0 / count)


class Dense:
    """Teacher logits [B, T, V], one distribution per position."""

    def __init__(self, logits, shape, temperature, xp):
        logits = xp.asarray(logits)
        if logits.ndim == 2:
            logits = logits[None]
        if logits.shape[:2] != tuple(shape):
            raise ValueError(f"teacher logits {tuple(logits.shape)} must be [B, T, V] for ids "
                             f"{tuple(shape)}")
        self.logits = logits.reshape(-1, logits.shape[-1])  # [B·T, V]
        self.temperature = temperature
        self.positions = slice(0, shape[1])

    def block_loss_and_grad(self, be, logits, rows, count):
        teacher = self.logits[rows]
        if teacher.shape != logits.shape:
            raise ValueError(f"teacher logits have {teacher.shape[1]} entries per row, the "
                             f"student's {logits.shape[1]}")
        loss, grad = be.distill_loss_and_grad(logits, teacher, self.temperature)  # block mean
        n = logits.shape[0]
        return loss * n, grad * be.xp.float32(n / count)


def targets_for(ids, teacher, temperature, xp):
    """NextToken, Sparse or Dense targets for ids [B, T]."""
    if teacher is None:
        return NextToken(ids, xp)
    tau = check_temperature(temperature)
    if isinstance(teacher, SparseTeacher):
        return Sparse(teacher, ids.shape, tau, xp)
    return Dense(teacher, ids.shape, tau, xp)


def head_loss_and_grad(network, h, targets, grads, rows_per_block=HEAD_ROWS):
    """The tied head and the loss over the positions `targets` covers, by blocks of rows.

    h [B, T, D] (the trunk's output) -> (mean loss, ∂L/∂h [B, T, D]); adds ∂L/∂E and
    ∂L/∂final_norm into `grads`.
    """
    be, c, p = network.backend, network.config, network.params
    xp, table = be.xp, p["embedding"]
    D = h.shape[-1]
    h_used = h[:, targets.positions]  # [B, T', D]
    normed = be.rms_norm(h_used, p["final_norm"], c.rms_eps)
    rows = xp.ascontiguousarray(normed.reshape(-1, D))  # [R, D]
    R = rows.shape[0]
    d_rows = xp.empty_like(rows)
    d_table = grads.setdefault("embedding", xp.zeros(table.shape, dtype=xp.float32))
    total = 0.0
    for start in range(0, R, rows_per_block):
        block = slice(start, min(start + rows_per_block, R))
        logits = be.linear(rows[block], table)  # [r, V]
        if c.final_softcap is not None:
            raw, logits = logits, be.softcap(logits, c.final_softcap)
        loss, d_logits = targets.block_loss_and_grad(be, logits, block, R)
        total += loss
        if c.final_softcap is not None:
            d_logits = softcap_backward(d_logits, raw, c.final_softcap, xp=xp)
        d_rows[block] = d_logits @ table  # [r, D]
        d_table += d_logits.T @ rows[block]  # [V, D]
    d_normed = d_rows.reshape(h_used.shape)
    d_used, d_gain = rms_norm_backward(d_normed, h_used, p["final_norm"], c.rms_eps, xp=xp)
    grads["final_norm"] = grads.get("final_norm", 0) + d_gain
    dh = xp.zeros(h.shape, dtype=xp.float32)
    dh[:, targets.positions] = d_used
    return total / R, dh


def network_loss_and_grad(network, ids, teacher=None, temperature=1.0):
    """loss_and_grad on a network (Transformer or Griffin), keeping backend arrays."""
    xp = network.backend.xp
    ids = xp.asarray(ids)
    if ids.ndim == 1:
        ids = ids[None]
    targets = targets_for(ids, teacher, temperature, xp)
    h, tape = forward_trunk(network, ids)
    grads = {}
    loss, dh = head_loss_and_grad(network, h, targets, grads)
    backward_trunk(network, tape, dh, grads)
    return loss, grads


def loss_and_grad(model, ids, teacher=None, temperature=1.0):
    """(mean loss, {parameter name: gradient}) of a minigemma Model on ids [B, T] (or [T]).

    teacher None: next-token cross-entropy, averaged over the B·(T−1) predictions of
    ids[:, 1:]. teacher given: the distillation loss H(P_T, softmax(z / τ)) averaged over all
    B·T positions, row t's target being the distribution of the token after position t:
    dense teacher logits [B, T, V] (P_T = softmax(logits / τ)), or a SparseTeacher of B·T rows
    in row-major order (`minigemma.training.losses.sample_teacher`; use the τ it was drawn at).

    The gradients are keyed by the checkpoint's own parameter names (`parameter_shapes`) and
    are NumPy float32 arrays of the parameters' shapes. A norm's gradient is taken with respect
    to the stored gain g = 1 + w; as ∂g/∂w = 1 it is also the gradient with respect to w, the
    zero-centred parameter HF and the Gemma references store: the same number either way.
    The embedding's gradient sums its two uses, the lookup (× √D) and the tied head.
    """
    network = getattr(model, "network", model)
    loss, grads = network_loss_and_grad(network, ids, teacher, temperature)
    be = network.backend
    return float(loss), {name: be.to_numpy(grads[name]) for name in network.params}

