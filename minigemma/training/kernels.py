"""Which implementation of each costly backward computation a backend gets.

The NumPy reference (the ops' backward functions and the losses) is the specification and runs
on every backend; the Numba backend gets compiled kernels (`minigemma.backends.numba.backward`)
for the computations that dominate a training step, each checked against the reference in
tests/training/test_backward_kernels.py:

    sparse_loss_and_grad   the loss rows of the 262k-entry head: softmax, loss and gradient
                           in place, one exponential per logit
    attention_backward     the softmax's backward over the keys each query sees
    rglru_scan_backward    the reverse RG-LRU scan, sequential in time
    adamw_update           the optimizer step, one pass over each parameter and its moments
    sample_teacher         capturing a teacher's sparse targets: the draws of k ids per
                           position (a softmax and a cumulative sum over V each)

These are not ops of the backend contract (`minigemma.backends.base`): they are training's,
chosen here by the backend's name, in one place.
"""
import numpy as np

from minigemma.ops.attention import attention_backward as _attention_backward_reference
from minigemma.ops.rglru import rglru_scan_backward as _scan_backward_reference
from minigemma.training import losses
from minigemma.training.losses import SparseTeacher, sparse_distillation_loss_and_grad


def _numba(be):
    """The Numba kernels module when `be` is the Numba backend, else None."""
    if getattr(be, "name", None) != "numba":
        return None
    from minigemma.backends.numba import backward
    return backward


def sparse_loss_and_grad(be, logits, ids, weights, temperature, scale):
    """Rows of logits z [r, V] against sparse targets (ids, weights [r, k]) at τ ->
    (Σ_rows −Σ_j w̃_j log P_S(id_j), gradient [r, V] = (P_S − q) / τ · scale), where
    P_S = softmax(z / τ), w̃ = each row's weights divided by their sum and q their dense row.

    The Numba kernel overwrites `logits` with the gradient.
    """
    fast = _numba(be)
    if fast is not None:
        return fast.sparse_loss_and_grad(logits, ids, weights, temperature, scale)
    xp = be.xp
    n = logits.shape[0]
    teacher = SparseTeacher(ids, weights, logits.shape[1])
    loss, grad = sparse_distillation_loss_and_grad(logits, teacher, temperature, xp=xp)
    return loss * n, grad * xp.float32(n * scale)  # the reference's mean over n, undone


def rglru_scan_backward(be, dy, x, a, gate_x, h0, reset, dh_last=None, y=None):
    """ops.rglru.rglru_scan_backward, or its Numba kernel."""
    fast = _numba(be)
    if fast is not None:
        return fast.rglru_scan_backward(dy, x, a, gate_x, h0, reset, dh_last, y)
    return _scan_backward_reference(dy, x, a, gate_x, h0, reset, dh_last, y, xp=be.xp)


def attention_backward(be, dout, q, k, v, q_pos, k_pos, *, scale, window=None, softcap=None):
    """ops.attention.attention_backward, or its Numba kernel (which visits only the keys each
    query's mask admits: NumPy's stacked [T, S] products are small matmuls it runs one by one)."""
    fast = _numba(be)
    if fast is not None:
        return fast.attention_backward(dout, q, k, v, q_pos, k_pos, scale, window, softcap)
    return _attention_backward_reference(dout, q, k, v, q_pos, k_pos, scale=scale,
                                         window=window, softcap=softcap, xp=be.xp)


def adamw_update(be, param, grad, m, v, *, lr, beta1, beta2, eps, weight_decay, step):
    """One AdamW step on one parameter, in place (see minigemma.training.optimizer.AdamW)."""
    fast = _numba(be)
    if fast is not None and param.size >= 1 << 14:
        return fast.adamw_update(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step)
    from minigemma.training.optimizer import adamw_update_reference
    return adamw_update_reference(param, grad, m, v, lr=lr, beta1=beta1, beta2=beta2, eps=eps,
                                  weight_decay=weight_decay, step=step, xp=be.xp)


def sample_teacher(be, teacher_logits, k, seed, temperature=1.0, weighting="frequency"):
    """losses.sample_teacher on backend `be`'s logits. The Numba kernel draws from the same
    uniforms (NumPy's, from `seed`) by the same inverse-CDF rule; its float32 softmax can move a
    draw that falls within rounding of a boundary to the neighbouring id (same distribution)."""
    fast = _numba(be)
    V = teacher_logits.shape[-1] if getattr(teacher_logits, "ndim", 0) == 2 else 0
    if fast is None or not 0 < k < V:  # the reference, and its exact rule for k >= V
        return losses.sample_teacher(teacher_logits, k, seed, temperature, weighting, xp=be.xp)
    tau = losses.check_temperature(temperature)
    if weighting not in losses.WEIGHTINGS:
        raise ValueError(f"weighting must be one of {losses.WEIGHTINGS}, got {weighting!r}")
    T = teacher_logits.shape[0]
    uniforms = np.random.default_rng(seed).random((T, k))  # [T, k], as the reference
    draws, p = fast.draw_teacher_ids(teacher_logits, uniforms, tau)
    ids, counts = losses._merge_duplicates(draws, np)
    if weighting == "frequency":
        weights = counts / k
    else:  # P_T of each distinct drawn id, renormalised over them
        weights = np.zeros((T, k))
        for t in range(T):
            _, first = np.unique(draws[t], return_index=True)  # ascending ids, as `ids`
            weights[t, :first.size] = p[t, first]
        weights /= weights.sum(axis=-1, keepdims=True)
    return SparseTeacher(ids, weights.astype(np.float32), V)
