"""Numba kernel of the fused distillation loss and gradient (reference: minigemma.losses).

    per row t:  P_S = softmax(z_S,t / τ),  P_T = softmax(z_T,t / τ)
                loss_t = −Σ_x P_T(x) log P_S(x)
                grad_t = (P_S − P_T) / (τ · T)
    loss = (1/T) Σ_t loss_t

Rows run in parallel (`prange`; each iteration writes only its own row), two passes per row:
    1. max m and Σ_x exp((z_x − m) / τ) of both rows in one sweep ("online softmax", Milakov &
       Gimelshein 2018): when a larger z arrives the running sum is rescaled by exp((m − z) / τ);
    2. log P_S, P_T from those; loss and gradient.
Accumulation in float64 whatever the input. Inputs: C-contiguous, both float32 (gradient float32)
or both float64 (gradient float64); the wrapper converts anything else to float32, so each dtype
compiles once. Bad rows (NaN, +inf, no finite entry) raise the reference's ValueError.
"""
import math

import numpy as np
from numba import njit, prange

from ..losses import _check_pair, _check_temperature

ROW_OK, BAD_STUDENT, BAD_TEACHER = 0, 1, 2


@njit(cache=True, fastmath=False)
def _max_and_sum_exp(row, temperature):
    """One sweep over row [V]: (m, Σ_x exp((row[x] − m) / τ)) with m = max(row).

    −inf entries add 0. Returns m = NaN for a row holding NaN or +inf, m = −inf for a row of −inf.
    """
    m = -np.inf
    total = 0.0
    for x in range(row.shape[0]):
        z = np.float64(row[x])
        if z != z or z == np.inf:
            return np.nan, np.nan
        if z > m:
            total = total * math.exp((m - z) / temperature) + 1.0  # rescale to the new max
            m = z
        elif z > -np.inf:
            total += math.exp((z - m) / temperature)
    return m, total


@njit(cache=True, fastmath=False, parallel=True)
def _distill_rows(student, teacher, temperature, grad, row_loss, status):
    """student, teacher [T, V] -> fills grad [T, V], row_loss [T] float64, status [T] int8."""
    T, V = student.shape
    scale = 1.0 / (temperature * T)
    for t in prange(T):
        m_s, sum_s = _max_and_sum_exp(student[t], temperature)
        m_t, sum_t = _max_and_sum_exp(teacher[t], temperature)
        if not math.isfinite(m_s):
            status[t] = BAD_STUDENT
            continue
        if not math.isfinite(m_t):
            status[t] = BAD_TEACHER
            continue
        log_sum_s = math.log(sum_s)
        loss = 0.0
        for x in range(V):
            log_p_s = (np.float64(student[t, x]) - m_s) / temperature - log_sum_s
            p_t = math.exp((np.float64(teacher[t, x]) - m_t) / temperature) / sum_t
            if p_t > 0.0:  # 0 · log 0 = 0, even where log P_S = −inf
                loss -= p_t * log_p_s
            grad[t, x] = (math.exp(log_p_s) - p_t) * scale
        row_loss[t] = loss
        status[t] = ROW_OK


def distill_loss_and_grad_numba(student, teacher, temperature=1.0):
    """(loss, gradient [T, V]) as minigemma.losses.distillation_loss_and_grad, on the CPU in parallel.

    student, teacher [T, V] float32 or float64 NumPy arrays -> (float, [T, V] same dtype).
    """
    tau = _check_temperature(temperature)
    T, V = _check_pair(student, teacher)
    both_f64 = student.dtype == np.float64 and teacher.dtype == np.float64
    dtype = np.float64 if both_f64 else np.float32  # one compiled version per dtype
    student = np.ascontiguousarray(student, dtype=dtype)
    teacher = np.ascontiguousarray(teacher, dtype=dtype)
    grad = np.empty((T, V), dtype=dtype)
    row_loss = np.zeros(T, dtype=np.float64)
    status = np.zeros(T, dtype=np.int8)
    _distill_rows(student, teacher, tau, grad, row_loss, status)
    bad = np.flatnonzero(status)
    if bad.size:
        name = "student_logits" if status[bad[0]] == BAD_STUDENT else "teacher_logits"
        raise ValueError(f"{name} row {bad[0]} has NaN, +inf or no finite entry; logits must be "
                         f"finite or −inf (probability 0), with a finite entry in every row")
    return float(row_loss.sum() / T), grad


def warm_up():
    """Compile (or load from the cache) both dtypes' versions on tiny inputs."""
    for dtype in (np.float32, np.float64):
        x = np.zeros((2, 3), dtype=dtype)
        distill_loss_and_grad_numba(x, x, 1.0)
