"""Losses of next-token prediction and of distillation (Gemma 2, Gemma 3, Gemini Nano; docs/distillation.md).

Notation: T positions (flatten a batch into T), V vocabulary, z logits [T, V], τ temperature,
P = softmax(z / τ) per position, H(P) = −Σ_x P(x) log P(x) the entropy.

    cross_entropy(z, y)            = (1/T) Σ_t −log softmax(z_t)[y_t]        next-token prediction
    distillation_loss(z_S, z_T, τ) = (1/T) Σ_t H(P_T,t, P_S,t)               what Gemma 2 minimises
                 with H(P_T, P_S)  = −Σ_x P_T(x) · log P_S(x)                the cross-entropy
    kl_divergence(z_S, z_T, τ)     = (1/T) Σ_t KL(P_T,t ‖ P_S,t)
                                   = distillation_loss − (1/T) Σ_t H(P_T,t)

Gemma 2 trains its 2B and 9B models on "min_{P_S} Σ_x −P_T(x | x_c) log P_S(x | x_c)"
(docs/distillation.md#gemma-2): the cross-entropy, `distillation_loss`. Gemini Nano is distilled
from larger Gemini models (docs/distillation.md#gemini-nano).
The KL divergence differs from the cross-entropy only by the teacher's entropy, which does not
depend on the student: the two have the same gradient and the same minimiser P_S = P_T, where the
KL is 0 and the cross-entropy is H(P_T) ≥ 0.

Gradient with respect to the student logits, per position (the same for both losses):

    ∂H(P_T, P_S) / ∂z_S = (P_S − P_T) / τ        the 1/τ is the chain rule through z_S / τ

and the mean over T divides it by T; each row sums to zero. Hinton et al. (2015) multiply the soft
loss by τ² so that its gradient keeps its size as τ changes; the Gemma reports state no
temperature, and nothing here multiplies by τ² (do it yourself when mixing with a hard loss).
Cross-entropy is the same formula with a one-hot teacher and τ = 1: (softmax(z) − onehot(y)) / T.

Sparse teacher (Gemma 3, docs/distillation.md#sparse-targets): dense targets cost T·V floats, 1 MiB per position for Gemma's
262 144-token vocabulary. `sample_teacher` keeps k drawn ids per position with weights, and
`sparse_distillation_loss` reads them as the distribution q_t = Σ_j w_tj δ(id_tj) in place of P_T.

Numerics: every loss works in float64 on blocks of at most BLOCK_ELEMENTS entries (so a [T, V]
float64 temporary never exists; the gradient itself is [T, V] in the input dtype, float32 at
least). Each row's largest logit is subtracted before dividing by τ and exponentiating
(log-sum-exp), so logits of 1e30 and tiny τ neither overflow nor give NaN. −inf means
"probability 0"; NaN, +inf and rows without a finite entry are errors. Losses are Python floats.
"""
import math
from dataclasses import dataclass

import numpy as np

BLOCK_ELEMENTS = 1 << 21  # 8 rows of a 262 144 vocabulary: 16 MiB per float64 temporary
WEIGHTINGS = ("frequency", "renormalised")


# Checks and the row-block machinery shared by every loss

def _check_logits(name, x):
    """x [T, V] float -> (T, V)."""
    if getattr(x, "ndim", None) != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array [T, V] (flatten a batch into T), "
                         f"got shape {getattr(x, 'shape', type(x).__name__)}")
    if x.dtype.kind != "f":
        raise ValueError(f"{name} must hold floating-point logits, got dtype {x.dtype}")
    return x.shape


def check_logit_pair(student_logits, teacher_logits):
    """(T, V), or a ValueError unless both logits are non-empty float [T, V] of one shape."""
    shape = _check_logits("student_logits", student_logits)
    if _check_logits("teacher_logits", teacher_logits) != shape:
        raise ValueError(f"student_logits {student_logits.shape} and teacher_logits "
                         f"{teacher_logits.shape} must have the same shape [T, V]")
    return shape


def check_temperature(temperature):
    try:
        tau = float(temperature)
    except (TypeError, ValueError):
        tau = math.nan
    if not (math.isfinite(tau) and tau > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    return tau


def _grad_dtype(logits, xp):
    return xp.result_type(logits.dtype, xp.float32)  # float32, or float64 for float64 logits


def _row_blocks(T, V):
    """Slices of at most max(1, BLOCK_ELEMENTS // V) rows covering 0..T−1."""
    step = max(1, BLOCK_ELEMENTS // V)
    return [slice(start, min(start + step, T)) for start in range(0, T, step)]


def _log_softmax(logits, temperature, name, xp):
    """Rows [b, V] of logits -> log softmax(logits / τ) [b, V] float64.

        log P(x) = (z_x − m) / τ − log Σ_y exp((z_y − m) / τ),   m = max_y z_y

    Shifting by m first makes the largest entry exactly 0 whatever τ is, so the sum lies in [1, V].
    """
    z = logits.astype(xp.float64)  # float64: (z − m) / τ must not overflow for z ~ 1e30, tiny τ
    top = z.max(axis=-1, keepdims=True)  # [b, 1]; NaN anywhere makes it NaN
    if not bool(xp.isfinite(top).all()):
        raise ValueError(f"{name} has a row with NaN, +inf or no finite entry; logits must be "
                         f"finite or −inf (probability 0), with a finite entry in every row")
    with np.errstate(over="ignore"):  # 1e308 − (−1e308) overflows to −inf: the right limit
        z -= top
        z /= temperature
    z -= xp.log(xp.exp(z).sum(axis=-1, keepdims=True))
    return z


def _cross_entropy_rows(p, log_q, xp):
    """−Σ_x p(x) log q(x) per row: [b, n] twice -> [b]; entries with p = 0 add 0 (0 · log 0 = 0)."""
    return -(p * xp.where(p > 0, log_q, 0.0)).sum(axis=-1)


def _scatter_rows(ids, weights, V, xp):
    """Sparse rows (ids [b, k], weights [b, k]) -> dense rows [b, V] float64; repeated ids add up."""
    b, k = ids.shape
    flat = (xp.arange(b)[:, None] * V + ids.astype(xp.int64)).ravel()  # [b·k] into [b·V]
    dense = xp.bincount(flat, weights=weights.astype(xp.float64).ravel(), minlength=b * V)
    return dense.reshape(b, V)


# Dense losses

def _dense_blocks(student_logits, teacher_logits, temperature, xp):
    """Yield (rows, log P_S, log P_T) per row block, each [b, V] float64."""
    T, V = student_logits.shape
    for rows in _row_blocks(T, V):
        yield (rows, _log_softmax(student_logits[rows], temperature, "student_logits", xp),
               _log_softmax(teacher_logits[rows], temperature, "teacher_logits", xp))


def _distill(student_logits, teacher_logits, temperature, xp, with_grad):
    """The dense loss, and its gradient when with_grad (else None)."""
    tau = check_temperature(temperature)
    T, V = check_logit_pair(student_logits, teacher_logits)
    grad = xp.empty((T, V), dtype=_grad_dtype(student_logits, xp)) if with_grad else None
    total = 0.0
    for rows, log_p_s, log_p_t in _dense_blocks(student_logits, teacher_logits, tau, xp):
        p_t = xp.exp(log_p_t)  # [b, V]
        total += float(_cross_entropy_rows(p_t, log_p_s, xp).sum())
        if with_grad:
            grad[rows] = (xp.exp(log_p_s) - p_t) / (tau * T)  # (P_S − P_T) / τ, mean over T
    return total / T, grad


def distillation_loss(student_logits, teacher_logits, temperature=1.0, xp=np):
    """Mean cross-entropy (1/T) Σ_t −Σ_x P_T,t(x) log P_S,t(x), P = softmax(logits / τ).

    student_logits, teacher_logits [T, V] float -> float (nats per position). At least the mean
    teacher entropy, equal to it exactly when P_S = P_T. This is the loss Gemma 2 minimises.
    """
    return _distill(student_logits, teacher_logits, temperature, xp, with_grad=False)[0]


def distillation_loss_and_grad(student_logits, teacher_logits, temperature=1.0, xp=np):
    """(distillation_loss, gradient [T, V]) with gradient = (P_S − P_T) / (τ · T).

    The gradient is in the logits' dtype (float32 at least); each row sums to zero. This is the
    backends' `distill_loss_and_grad` op.
    """
    return _distill(student_logits, teacher_logits, temperature, xp, with_grad=True)


def kl_divergence(student_logits, teacher_logits, temperature=1.0, xp=np):
    """Mean KL(P_T ‖ P_S) = (1/T) Σ_t Σ_x P_T,t(x) (log P_T,t(x) − log P_S,t(x)) ≥ 0.

    Equals distillation_loss − entropy(teacher_logits); computed directly as a sum of
    P_T (log P_T − log P_S) so that a small divergence is not the difference of two large numbers.
    Its gradient is distillation_loss_and_grad's: the teacher's entropy is a constant.
    """
    tau = check_temperature(temperature)
    T, _ = check_logit_pair(student_logits, teacher_logits)
    total = 0.0
    for _, log_p_s, log_p_t in _dense_blocks(student_logits, teacher_logits, tau, xp):
        p_t = xp.exp(log_p_t)  # [b, V]
        supported = p_t > 0  # elsewhere the term is 0, even where log P_S = −inf too
        log_ratio = xp.where(supported, log_p_t - xp.where(supported, log_p_s, 0.0), 0.0)
        total += float((p_t * log_ratio).sum())  # +inf where P_T > 0 = P_S
    return total / T


def entropy(logits, temperature=1.0, xp=np):
    """Mean entropy (1/T) Σ_t H(softmax(z_t / τ)) = (1/T) Σ_t −Σ_x P(x) log P(x): [T, V] -> float."""
    tau = check_temperature(temperature)
    T, V = _check_logits("logits", logits)
    total = 0.0
    for rows in _row_blocks(T, V):
        log_p = _log_softmax(logits[rows], tau, "logits", xp)
        total += float(_cross_entropy_rows(xp.exp(log_p), log_p, xp).sum())
    return total / T


# Sparse targets: next-token prediction (one-hot) and the sampled teacher

def _sparse(student_logits, ids, weights, temperature, xp, with_grad):
    """(1/T) Σ_t −Σ_j w_tj log P_S,t(id_tj) and its gradient (P_S − q) / (τ · T).

    student_logits [T, V], ids [T, k] int, weights [T, k] -> (float, [T, V] or None), where
    q_t = Σ_j w_tj δ(id_tj) is the sparse target as a dense row (repeated ids add up). Each row of
    weights is divided by its sum in float64, so float32 weights such as 1/3 leave no mass out
    and every gradient row sums to zero.
    """
    T, V = student_logits.shape
    grad = xp.empty((T, V), dtype=_grad_dtype(student_logits, xp)) if with_grad else None
    total = 0.0
    for rows in _row_blocks(T, V):
        log_p_s = _log_softmax(student_logits[rows], temperature, "student_logits", xp)  # [b, V]
        w = weights[rows].astype(xp.float64)  # [b, k]
        w /= w.sum(axis=-1, keepdims=True)  # undo float32 rounding: each row sums to 1 exactly
        picked = xp.take_along_axis(log_p_s, ids[rows].astype(xp.int64), axis=-1)  # [b, k]
        total += float(_cross_entropy_rows(w, picked, xp).sum())
        if with_grad:
            q = _scatter_rows(ids[rows], w, V, xp)  # [b, V]
            grad[rows] = (xp.exp(log_p_s) - q) / (temperature * T)
    return total / T, grad


def _check_targets(targets, T, V, xp):
    if getattr(targets, "ndim", None) != 1 or targets.shape[0] != T:
        raise ValueError(f"targets must be a 1-D array of {T} token ids (one per row of the "
                         f"logits), got shape {getattr(targets, 'shape', type(targets).__name__)}")
    if targets.dtype.kind not in "iu":
        raise ValueError(f"targets must hold integer token ids, got dtype {targets.dtype}")
    if bool((targets < 0).any()) or bool((targets >= V).any()):
        raise ValueError(f"targets must be token ids in [0, {V}), got values from "
                         f"{int(targets.min())} to {int(targets.max())}")


def _cross_entropy(logits, targets, xp, with_grad):
    T, V = _check_logits("logits", logits)
    targets = xp.asarray(targets)
    _check_targets(targets, T, V, xp)
    one_hot = xp.ones((T, 1), dtype=xp.float64)  # a teacher that puts all its mass on y_t
    return _sparse(logits, targets[:, None], one_hot, 1.0, xp, with_grad)


def cross_entropy(logits, targets, xp=np):
    """Next-token prediction: (1/T) Σ_t −log softmax(z_t)[y_t]. logits [T, V], targets [T] int -> float."""
    return _cross_entropy(logits, targets, xp, with_grad=False)[0]


def cross_entropy_and_grad(logits, targets, xp=np):
    """(cross_entropy, gradient [T, V]) with gradient = (softmax(z) − onehot(y)) / T."""
    return _cross_entropy(logits, targets, xp, with_grad=True)


@dataclass(frozen=True)
class SparseTeacher:
    """A teacher's next-token distributions kept as k (id, weight) pairs per position.

    ids    [T, k] int32    drawn token ids: each row's distinct ids first, ascending, then padding
    probs  [T, k] float32  their weights, summing to 1 in each row; padding is id 0 with weight 0
    vocab_size             V of the distributions

    Memory: T·k·8 bytes, against T·V·4 for dense float32 targets (`nbytes`, `dense_nbytes`).
    """
    ids: object
    probs: object
    vocab_size: int

    def __post_init__(self):
        ids, probs, V = self.ids, self.probs, self.vocab_size
        if getattr(ids, "ndim", None) != 2 or getattr(probs, "shape", None) != ids.shape:
            raise ValueError(f"a SparseTeacher holds ids and probs of the same shape [T, k], got "
                             f"{getattr(ids, 'shape', None)} and {getattr(probs, 'shape', None)}")
        if ids.dtype.kind not in "iu" or probs.dtype.kind != "f":
            raise ValueError(f"SparseTeacher ids must be integers and probs floats, got "
                             f"{ids.dtype} and {probs.dtype}")
        if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= V):
            raise ValueError(f"SparseTeacher ids must lie in [0, vocab_size = {V}), got values "
                             f"from {int(ids.min())} to {int(ids.max())}")
        if probs.size and (float(probs.min()) < 0 or
                           float(abs(probs.sum(axis=-1, dtype=np.float64) - 1).max()) > 1e-4):
            raise ValueError("SparseTeacher probs must be >= 0 and sum to 1 in every row")

    def __len__(self):
        return self.ids.shape[0]

    def rows(self, start, stop):
        """The targets of positions start..stop−1, as a SparseTeacher."""
        return SparseTeacher(self.ids[start:stop], self.probs[start:stop], self.vocab_size)

    @property
    def nbytes(self):
        return int(self.ids.nbytes + self.probs.nbytes)

    @property
    def dense_nbytes(self):
        """What the same positions would take as dense [T, V] float32 probabilities."""
        return int(self.ids.shape[0] * self.vocab_size * 4)


def _inverse_cdf(p, uniforms, xp):
    """Rows of probabilities p [b, V] and uniforms [b, k] in [0, 1) -> drawn ids [b, k].

    x = the first id with cdf(x) > u. Dividing the cumulative sum by its last entry makes that
    entry exactly 1.0 (x / x = 1 in IEEE arithmetic), so every u < 1 finds an id, and ids of
    probability 0 are never drawn (their cdf equals their predecessor's).
    """
    cdf = xp.cumsum(p, axis=-1)  # [b, V]
    cdf = cdf / cdf[:, -1:]
    return xp.stack([xp.searchsorted(cdf[r], uniforms[r], side="right")
                     for r in range(cdf.shape[0])])


def _merge_duplicates(draws, xp):
    """Draws [b, k] -> (ids [b, k] int32, counts [b, k]): each drawn id once, ascending, with the
    number of times it was drawn; the freed slots at the end hold id 0 with count 0.

        draws [[7, 3, 7, 7]]  ->  ids [[3, 7, 0, 0]], counts [[1, 3, 0, 0]]
    """
    b, k = draws.shape
    ordered = xp.sort(draws, axis=-1)  # [b, k]: equal ids in runs
    first = xp.ones((b, k), dtype=bool)  # the start of each run
    first[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    slot = xp.cumsum(first, axis=-1) - 1  # [b, k]: the slot of each run in the output
    flat = (xp.arange(b)[:, None] * k + slot).ravel()  # [b·k]
    counts = xp.bincount(flat, minlength=b * k).reshape(b, k)  # run lengths; 0 = padding
    ids = xp.zeros(b * k, dtype=xp.int32)
    ids[flat[first.ravel()]] = ordered.ravel()[first.ravel()]
    return ids.reshape(b, k), counts


def sample_teacher(teacher_logits, k, seed, temperature=1.0, weighting="frequency", xp=np):
    """Draw k token ids per position from P_T = softmax(teacher_logits / τ): [T, V] -> SparseTeacher.

    Draws: k ids per position, independently and with replacement, according to P_T. Memory is
    O(T·k) for the result plus one block of rows of [b, V] float64 while drawing.

    Duplicates, weighting="frequency" (default): an id drawn c times is stored once with weight
    c / k. The stored row is the empirical distribution of the k draws, so for every student

        E[−Σ_j w_j log P_S(id_j)] = E[−(1/k) Σ_{draws x} log P_S(x)] = −Σ_x P_T(x) log P_S(x):

    the sparse loss is an UNBIASED estimate of the dense distillation loss, and its gradient of the
    dense gradient (both are linear in the weights).
    weighting="renormalised" stores instead the teacher's probabilities of the distinct drawn ids
    divided by their sum (the Gemma 3 recipe as its report describes it, docs/distillation.md#sparse-targets). Its variance
    is lower but it is BIASED towards the teacher's likely ids: with k = 2 draws from
    P_T = (0.9, 0.1) its expected weights are (0.972, 0.028).

    Exact rule: when k ≥ V, drawing is pointless and P_T itself is stored (ids 0..V−1 in every row,
    probs = P_T rounded to float32, shape [T, V]); the sparse loss then equals the dense loss up to
    that rounding.

    seed: anything np.random.default_rng takes (an int, or a tuple such as (seed, window)). The
    uniforms are drawn on the host with NumPy, so every backend draws the same ids.
    """
    tau = check_temperature(temperature)
    T, V = _check_logits("teacher_logits", teacher_logits)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k (ids kept per position) must be an integer >= 1, got {k!r}")
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    if k >= V:  # the exact rule
        probs = xp.empty((T, V), dtype=xp.float32)
        for rows in _row_blocks(T, V):
            probs[rows] = xp.exp(_log_softmax(teacher_logits[rows], tau, "teacher_logits", xp))
        ids = xp.broadcast_to(xp.arange(V, dtype=xp.int32), (T, V)).copy()
        return SparseTeacher(ids, probs, V)
    uniforms = xp.asarray(np.random.default_rng(seed).random((T, k)))  # [T, k] in [0, 1)
    ids = xp.empty((T, k), dtype=xp.int32)
    probs = xp.empty((T, k), dtype=xp.float32)
    for rows in _row_blocks(T, V):
        p_t = xp.exp(_log_softmax(teacher_logits[rows], tau, "teacher_logits", xp))  # [b, V]
        block_ids, counts = _merge_duplicates(_inverse_cdf(p_t, uniforms[rows], xp), xp)
        if weighting == "frequency":
            weights = counts / k
        else:  # P_T of each distinct drawn id, renormalised over them
            kept = xp.take_along_axis(p_t, block_ids.astype(xp.int64), axis=-1) * (counts > 0)
            weights = kept / kept.sum(axis=-1, keepdims=True)
        ids[rows], probs[rows] = block_ids, weights
    return SparseTeacher(ids, probs, V)


def _check_sparse(student_logits, teacher):
    T, V = _check_logits("student_logits", student_logits)
    if not isinstance(teacher, SparseTeacher):
        raise ValueError(f"the teacher must be a SparseTeacher (see sample_teacher), got "
                         f"{type(teacher).__name__}")
    if len(teacher) != T or teacher.vocab_size != V:
        raise ValueError(f"student_logits [T={T}, V={V}] do not match the sparse teacher: "
                         f"{len(teacher)} positions over a vocabulary of {teacher.vocab_size}")


def _sparse_distill(student_logits, teacher, temperature, xp, with_grad):
    tau = check_temperature(temperature)
    _check_sparse(student_logits, teacher)
    return _sparse(student_logits, teacher.ids, teacher.probs, tau, xp, with_grad)


def sparse_distillation_loss(student_logits, teacher, temperature=1.0, xp=np):
    """(1/T) Σ_t −Σ_j w_tj log P_S,t(id_tj): the distillation loss against a SparseTeacher.

    student_logits [T, V] -> float. With sample_teacher's default weighting, an unbiased estimate
    of distillation_loss(student_logits, teacher_logits, τ); use the τ the teacher was sampled at.
    """
    return _sparse_distill(student_logits, teacher, temperature, xp, with_grad=False)[0]


def sparse_distillation_loss_and_grad(student_logits, teacher, temperature=1.0, xp=np):
    """(sparse_distillation_loss, gradient [T, V]) with gradient = (P_S − q) / (τ · T), where q is
    the sparse teacher's row as a dense distribution (weights scattered to their ids)."""
    return _sparse_distill(student_logits, teacher, temperature, xp, with_grad=True)
