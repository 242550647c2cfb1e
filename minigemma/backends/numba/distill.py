"""Numba kernel of the fused distillation loss and gradient (reference: minigemma.training.losses).

    per row t:  z_S = (s − max s) / τ,  z_T = (u − max u) / τ        s, u: student, teacher logits
                e_S = exp(z_S),  e_T = exp(z_T),  P_S = e_S / Σ e_S,  P_T = e_T / Σ e_T
                loss_t = −Σ_x P_T(x) log P_S(x) = log Σ e_S − Σ_x e_T(x) z_S(x) / Σ e_T
                grad_t = (P_S − P_T) / (τ · T)
    loss = (1/T) Σ_t loss_t

Rows run in parallel (`prange`; each iteration writes only its own row). Two passes read each
row of logits: 1. the maxima; 2. e_S, e_T (kept in a float64 scratch row), their sums and
Σ e_T z_S; then the gradient row is written from the scratch. That is two exponentials per
entry, where recomputing them for the gradient would take four (the cost that dominates here).
Accumulation in float64 whatever the input. Inputs: C-contiguous, both float32 (gradient float32)
or both float64 (gradient float64); the wrapper converts anything else to float32, so each dtype
compiles once. Bad rows (NaN, +inf, no finite entry) raise the reference's ValueError.
"""
import math

import numpy as np
from numba import njit, prange

from minigemma.training.losses import check_logit_pair, check_temperature

ROW_OK, BAD_STUDENT, BAD_TEACHER = 0, 1, 2


@njit(cache=True, fastmath=False)
def _row_max(row):
    """max(row) as float64; NaN if the row holds NaN or +inf (−inf for a row of −inf only)."""
    m = -np.inf
    for x in range(row.shape[0]):
        z = np.float64(row[x])
        if math.isnan(z) or z == np.inf:
            return np.nan
        m = max(m, z)
    return m


@njit(cache=True, fastmath=False, parallel=True)
def _distill_rows(student, teacher, temperature, grad, row_loss, status):
    """student, teacher [T, V] -> fills grad [T, V], row_loss [T] float64, status [T] int8."""
    T, V = student.shape
    scale = 1.0 / (temperature * T)
    for t in prange(T):
        m_s, m_t = _row_max(student[t]), _row_max(teacher[t])
        if not math.isfinite(m_s):
            status[t] = BAD_STUDENT
            continue
        if not math.isfinite(m_t):
            status[t] = BAD_TEACHER
            continue
        e_s = np.empty(V)  # float64 scratch rows: exp(z_S), exp(z_T)
        e_t = np.empty(V)
        sum_s, sum_t, cross = 0.0, 0.0, 0.0
        for x in range(V):
            z_s = (np.float64(student[t, x]) - m_s) / temperature
            p_s = math.exp(z_s)  # unnormalised until the sums are known
            p_t = math.exp((np.float64(teacher[t, x]) - m_t) / temperature)
            e_s[x], e_t[x] = p_s, p_t
            sum_s += p_s
            sum_t += p_t
            if p_t > 0.0:  # 0 · log 0 = 0, even where z_S = −inf
                cross += p_t * z_s
        row_loss[t] = math.log(sum_s) - cross / sum_t
        for x in range(V):
            grad[t, x] = (e_s[x] / sum_s - e_t[x] / sum_t) * scale
        status[t] = ROW_OK


def distill_loss_and_grad_numba(student, teacher, temperature=1.0):
    """(loss, gradient [T, V]) as minigemma.training.losses.distillation_loss_and_grad, on the CPU in parallel.

    student, teacher [T, V] float32 or float64 NumPy arrays -> (float, [T, V] same dtype).
    """
    tau = check_temperature(temperature)
    T, V = check_logit_pair(student, teacher)
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
