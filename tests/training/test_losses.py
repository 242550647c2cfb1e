"""minigemma.training.losses: properties stated in its docstrings, PyTorch as the oracle, the Numba kernel
against the reference."""
import itertools
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minigemma.backends import get_backend
from minigemma.training import losses as L

from helpers.tolerances import COMPONENT_ATOL, CONSISTENCY_ATOL, ORACLE_ATOL

seeds = st.integers(0, 2**32 - 1)
rows = st.integers(1, 6)
vocabs = st.integers(2, 40)
temperatures = st.floats(0.25, 4.0)
scales = st.floats(0.1, 10.0)
GEMMA_V = 262_144


def pair(seed, T, V, scale=3.0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return tuple((scale * rng.standard_normal((T, V))).astype(dtype) for _ in range(2))


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


# ----------------------------------------------------------------- cross-entropy vs KL


@given(seeds, rows, vocabs, temperatures, scales)
def test_loss_is_at_least_the_teacher_entropy_and_kl_is_the_difference(seed, T, V, tau, scale):
    s, t = pair(seed, T, V, scale)
    loss, h, kl = L.distillation_loss(s, t, tau), L.entropy(t, tau), L.kl_divergence(s, t, tau)
    assert loss >= h - 1e-12
    assert kl >= -1e-12
    assert math.isclose(kl, loss - h, rel_tol=1e-9, abs_tol=1e-12)


@given(seeds, rows, vocabs, temperatures)
def test_equality_iff_the_distributions_agree(seed, T, V, tau):
    s, t = pair(seed, T, V)
    # "if": the same distribution (logits shifted per row) gives loss = entropy, KL = 0
    shifted = t + np.random.default_rng(seed).standard_normal((T, 1)) * 100
    assert math.isclose(L.distillation_loss(shifted, t, tau), L.entropy(t, tau), rel_tol=1e-12,
                        abs_tol=1e-12)
    assert abs(L.kl_divergence(shifted, t, tau)) < 1e-12
    # "only if", quantitatively (Pinsker): ‖P_T − P_S‖₁ ≤ sqrt(2 KL) on every row
    for r in range(T):
        kl = L.kl_divergence(s[r:r + 1], t[r:r + 1], tau)
        l1 = np.abs(softmax(s[r] / tau) - softmax(t[r] / tau)).sum()
        assert l1 <= math.sqrt(2 * max(kl, 0.0)) + 1e-9


def test_kl_stays_accurate_when_tiny():
    # computed directly, not as loss − entropy (two numbers near 10): for a student
    # z_S = z_T + ε·n, KL(P_T ‖ P_S) = ε²/2 · Var_{P_T}(n) + O(ε³), here about 5e-11
    eps, t = 1e-5, pair(0, 1, GEMMA_V // 8)[1]
    n = np.random.default_rng(1).standard_normal(t.shape)
    p_t = softmax(t)
    variance = (p_t * n * n).sum() - (p_t * n).sum() ** 2
    assert math.isclose(L.kl_divergence(t + eps * n, t), eps**2 / 2 * variance, rel_tol=1e-3)


# ----------------------------------------------------------------- gradients


def finite_differences(f, x, h=1e-5):
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[index] += h
        down[index] -= h
        grad[index] = (f(up) - f(down)) / (2 * h)
    return grad


@given(seeds, st.integers(1, 4), st.integers(2, 12), temperatures)
def test_distillation_gradient_matches_finite_differences(seed, T, V, tau):
    s, t = pair(seed, T, V, 2.0)
    loss, grad = L.distillation_loss_and_grad(s, t, tau)
    assert grad.dtype == np.float64 and loss == L.distillation_loss(s, t, tau)
    np.testing.assert_allclose(grad, finite_differences(lambda x: L.distillation_loss(x, t, tau), s),
                               atol=1e-8)
    np.testing.assert_allclose(grad.sum(-1), 0, atol=1e-15)


@given(seeds, st.integers(1, 4), st.integers(2, 12))
def test_cross_entropy_gradient_matches_finite_differences(seed, T, V):
    z, _ = pair(seed, T, V, 2.0)
    y = np.random.default_rng(seed).integers(0, V, T)
    loss, grad = L.cross_entropy_and_grad(z, y)
    np.testing.assert_allclose(grad, finite_differences(lambda x: L.cross_entropy(x, y), z), atol=1e-8)
    np.testing.assert_allclose(grad.sum(-1), 0, atol=1e-15)
    expected = softmax(z)
    expected[np.arange(T), y] -= 1
    np.testing.assert_allclose(grad, expected / T, atol=1e-15)


@given(seeds, st.integers(1, 4), st.integers(2, 12), st.integers(1, 6), temperatures)
def test_sparse_gradient_matches_finite_differences(seed, T, V, k, tau):
    s, t = pair(seed, T, V, 2.0)
    teacher = L.sample_teacher(t, k, seed, tau)
    loss, grad = L.sparse_distillation_loss_and_grad(s, teacher, tau)
    fd = finite_differences(lambda x: L.sparse_distillation_loss(x, teacher, tau), s)
    np.testing.assert_allclose(grad, fd, atol=1e-8)
    np.testing.assert_allclose(grad.sum(-1), 0, atol=1e-15)


def test_cross_entropy_is_distillation_from_a_one_hot_teacher():
    z, _ = pair(3, 5, 30)
    y = np.array([0, 29, 4, 4, 17])
    one_hot = np.full((5, 30), -np.inf)
    one_hot[np.arange(5), y] = 0.0
    loss, grad = L.cross_entropy_and_grad(z, y)
    loss2, grad2 = L.distillation_loss_and_grad(z, one_hot)
    assert math.isclose(loss, loss2, rel_tol=1e-14)
    np.testing.assert_allclose(grad, grad2, atol=1e-16)


# ----------------------------------------------------------------- temperature


@given(seeds, rows, vocabs, temperatures)
def test_temperature_divides_the_logits_and_the_gradient(seed, T, V, tau):
    s, t = pair(seed, T, V)
    loss, grad = L.distillation_loss_and_grad(s, t, tau)
    loss1, grad1 = L.distillation_loss_and_grad(s / tau, t / tau, 1.0)
    assert math.isclose(loss, loss1, rel_tol=1e-12)
    np.testing.assert_allclose(grad, grad1 / tau, atol=1e-15)  # chain rule: one factor 1/τ, no τ²
    np.testing.assert_allclose(grad, (softmax(s / tau) - softmax(t / tau)) / (tau * T), atol=1e-15)


def test_temperature_limits():
    s, t = pair(5, 3, 50)
    # τ → ∞: both distributions uniform: loss = log V, KL = 0
    assert math.isclose(L.distillation_loss(s, t, 1e12), math.log(50), rel_tol=1e-9)
    assert L.kl_divergence(s, t, 1e12) < 1e-12
    # τ → 0: the teacher is one-hot on its argmax, its entropy vanishes
    assert L.entropy(t, 1e-6) == 0.0
    a = t.argmax(-1)
    expected = np.mean((s.max(-1) - s[np.arange(3), a]) / 1e-6)
    assert math.isclose(L.distillation_loss(s, t, 1e-6), expected, rel_tol=1e-9)


# ----------------------------------------------------------------- numerics


@pytest.mark.parametrize("scale", [1e4, 1e30])
@pytest.mark.parametrize("tau", [1e-30, 1.0, 1e30])
def test_no_overflow_at_huge_logits(scale, tau):
    s, t = pair(7, 4, 1000, scale, np.float32)
    for loss, grad, row_sum_atol in [(*L.distillation_loss_and_grad(s, t, tau), 1e-6 / tau),
                                     (*L.cross_entropy_and_grad(s, t.argmax(-1)), 1e-6)]:
        assert np.isfinite(loss) and loss >= 0
        assert grad.dtype == np.float32 and np.isfinite(grad).all()
        np.testing.assert_allclose(grad.sum(-1), 0, atol=row_sum_atol)
    assert np.isfinite(L.kl_divergence(s, t, tau)) and np.isfinite(L.entropy(t, tau))
    s64 = s.astype(np.float64) / tau
    if scale / tau >= 1e20:  # both distributions are one-hot: loss = mean(max s − s[argmax t]) / τ
        a = t.argmax(-1)
        expected = np.mean(s64.max(-1) - s64[np.arange(4), a])
        assert math.isclose(L.distillation_loss(s, t, tau), expected, rel_tol=1e-12)


def test_float64_extremes_and_infinities():
    s = np.array([[1e308, -1e308, 0.0], [-np.inf, 0.0, 1.0]])
    t = np.array([[0.0, 1.0, -np.inf], [0.0, 0.0, -np.inf]])
    loss, grad = L.distillation_loss_and_grad(s, t)
    assert loss == np.inf  # the teacher gives mass to tokens the student rules out
    assert np.isfinite(grad).all()
    # −inf on the teacher side is probability 0 and adds nothing
    loss, grad = L.distillation_loss_and_grad(t, t)
    assert math.isclose(loss, L.entropy(t), rel_tol=1e-15) and np.abs(grad).max() < 1e-16


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_and_plus_inf_are_errors(bad):
    s, t = pair(0, 3, 8)
    t[1, 2] = bad
    with pytest.raises(ValueError, match="teacher_logits has a row with NaN"):
        L.distillation_loss(s, t)
    with pytest.raises(ValueError, match="student_logits has a row"):
        L.distillation_loss(t, s)


def test_argument_errors_are_sentences():
    s, t = pair(0, 3, 8)
    with pytest.raises(ValueError, match=r"same shape \[T, V\]"):
        L.distillation_loss(s, t[:, :7])
    with pytest.raises(ValueError, match="2-D array"):
        L.distillation_loss(s[0], t[0])
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        L.distillation_loss(s, t, 0.0)
    with pytest.raises(ValueError, match=r"token ids in \[0, 8\)"):
        L.cross_entropy(s, np.array([0, 8, 1]))
    with pytest.raises(ValueError, match="integer token ids"):
        L.cross_entropy(s, np.array([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match="integer >= 1"):
        L.sample_teacher(t, 0, seed=0)
    with pytest.raises(ValueError, match="do not match the sparse teacher"):
        L.sparse_distillation_loss(s[:2], L.sample_teacher(t, 4, 0))


def test_row_blocks_do_not_change_the_result(monkeypatch):
    s, t = pair(11, 37, 100)
    whole = L.distillation_loss_and_grad(s, t, 1.5)
    monkeypatch.setattr(L, "BLOCK_ELEMENTS", 300)  # blocks of 3 rows
    blocked = L.distillation_loss_and_grad(s, t, 1.5)
    assert math.isclose(whole[0], blocked[0], rel_tol=1e-14)
    np.testing.assert_array_equal(whole[1], blocked[1])


# ----------------------------------------------------------------- the sparse teacher


@given(seeds, rows, vocabs, st.integers(1, 50), temperatures)
def test_sample_teacher_layout(seed, T, V, k, tau):
    _, t = pair(seed, T, V)
    t[:, 0] = -np.inf  # probability 0: never drawn
    teacher = L.sample_teacher(t, k, seed, tau)
    assert teacher.ids.dtype == np.int32 and teacher.probs.dtype == np.float32
    np.testing.assert_allclose(teacher.probs.sum(-1), 1, atol=1e-6)
    if k >= V:  # the exact rule
        assert teacher.ids.shape == (T, V)
        np.testing.assert_array_equal(teacher.ids, np.broadcast_to(np.arange(V), (T, V)))
        np.testing.assert_allclose(teacher.probs, softmax(t / tau), atol=1e-7)
        return
    assert teacher.ids.shape == (T, k)
    kept = teacher.probs > 0
    for r in range(T):
        ids = teacher.ids[r, kept[r]]
        assert (np.diff(ids) > 0).all() and (ids != 0).all()  # distinct, ascending, 0 not drawn
        assert (teacher.ids[r, ~kept[r]] == 0).all() and kept[r, :kept[r].sum()].all()
    counts = teacher.probs * k  # frequency weights: whole numbers of draws
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-4)
    again = L.sample_teacher(t, k, seed, tau)
    np.testing.assert_array_equal(again.ids, teacher.ids)
    assert teacher.nbytes == T * k * 8 and teacher.dense_nbytes == T * V * 4


@given(seeds, rows, vocabs, temperatures)
def test_a_sparse_teacher_with_k_at_least_v_reproduces_the_dense_loss(seed, T, V, tau):
    s, t = pair(seed, T, V)
    teacher = L.sample_teacher(t, V + seed % 3, seed, tau)
    loss, grad = L.sparse_distillation_loss_and_grad(s, teacher, tau)
    dense_loss, dense_grad = L.distillation_loss_and_grad(s, t, tau)
    assert math.isclose(loss, dense_loss, rel_tol=1e-6)  # the probs are rounded to float32
    np.testing.assert_allclose(grad, dense_grad, atol=1e-6)


def frequency_and_renormalised_expectations(p, k):
    """E[weights] of both rules by enumerating all V^k ordered draws (no sampling)."""
    p = np.asarray(p)
    V = len(p)
    freq, renorm = np.zeros(V), np.zeros(V)
    for draws in itertools.product(range(V), repeat=k):
        chance = np.prod([p[x] for x in draws])
        counts = np.bincount(draws, minlength=V)
        freq += chance * counts / k
        drawn = counts > 0
        renorm += chance * np.where(drawn, p, 0) / p[drawn].sum()
    return freq, renorm


def test_the_docstring_example_frequency_is_unbiased_renormalised_is_not():
    freq, renorm = frequency_and_renormalised_expectations([0.9, 0.1], 2)
    np.testing.assert_allclose(freq, [0.9, 0.1], atol=1e-15)
    np.testing.assert_allclose(renorm, [0.972, 0.028], atol=1e-15)
    freq, renorm = frequency_and_renormalised_expectations([0.6, 0.25, 0.1, 0.05], 3)
    np.testing.assert_allclose(freq, [0.6, 0.25, 0.1, 0.05], atol=1e-15)
    assert renorm[0] > 0.6 + 0.05


def test_sample_teacher_weights_average_to_the_teacher_distribution():
    # E[q] = P_T: the sparse gradient (P_S − q)/τ is an unbiased estimate of the dense one.
    # Fixed seeds: the statistics are computed once, the test cannot flake.
    T, k = 20_000, 2
    t = np.tile([[math.log(0.9), math.log(0.1), -np.inf]], (T, 1))  # V = 3 > k: drawn
    for weighting, expected in [("frequency", 0.9), ("renormalised", 0.972)]:
        teacher = L.sample_teacher(t, k, seed=1, weighting=weighting)
        q = L._scatter_rows(teacher.ids, teacher.probs, 3, np)[:, 0]  # weight on id 0 per row
        standard_error = q.std() / math.sqrt(T)
        assert abs(q.mean() - expected) < 4 * standard_error
    assert abs(q.mean() - 0.9) > 20 * standard_error  # renormalised: biased, visibly


@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_sparse_loss_is_an_unbiased_estimate_of_the_dense_loss(tau):
    T, V, k = 4000, 64, 8
    s, t = pair(2024, T, V, 2.0)
    s = t + s / 2  # a student that roughly follows its teacher
    dense_rows = -(softmax(t / tau) * log_softmax(s / tau)).sum(-1)
    assert math.isclose(dense_rows.mean(), L.distillation_loss(s, t, tau), rel_tol=1e-12)

    def estimate_rows(teacher):
        log_p_s = log_softmax(s / tau)
        picked = np.take_along_axis(log_p_s, teacher.ids.astype(np.int64), axis=-1)
        return -(teacher.probs * picked).sum(-1)

    teacher = L.sample_teacher(t, k, seed=7, temperature=tau)
    est = estimate_rows(teacher)
    assert math.isclose(L.sparse_distillation_loss(s, teacher, tau), est.mean(), rel_tol=1e-6)
    error = est - dense_rows
    z = error.mean() / (error.std() / math.sqrt(T))
    assert abs(z) < 4, f"sparse mean {est.mean():.4f} vs dense {dense_rows.mean():.4f}: z = {z:.2f}"
    biased = estimate_rows(L.sample_teacher(t, k, seed=7, temperature=tau, weighting="renormalised"))
    error = biased - dense_rows
    assert abs(error.mean() / (error.std() / math.sqrt(T))) > 4  # the Gemma 3 rule is biased


def test_sparse_targets_memory_on_gemma_vocabulary():
    _, t = pair(0, 2, GEMMA_V, 3.0, np.float32)
    teacher = L.sample_teacher(t, 256, seed=0)
    assert teacher.ids.shape == (2, 256)
    assert teacher.nbytes == 2 * 256 * 8 and teacher.dense_nbytes == 2 * GEMMA_V * 4  # 512x


# Oracle: PyTorch


@pytest.mark.oracle
@pytest.mark.parametrize("V", [37, GEMMA_V])
@pytest.mark.parametrize("tau", [0.5, 1.0, 2.0])
def test_matches_pytorch(V, tau):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    T = 5 if V == GEMMA_V else 16
    s32, t32 = pair(V, T, V, 4.0, np.float32)
    y = np.random.default_rng(V).integers(0, V, T)
    # float64: the same mathematics, to rounding. float32: torch's own sums over V lose ~1e-5
    # relative, so the float32 comparison is relative, at the oracle tolerance.
    for dtype, np_dtype, tol, grad_atol in [(torch.float64, np.float64, 1e-12, 1e-14),
                                            (torch.float32, np.float32, ORACLE_ATOL["float32"], 1e-9)]:
        s, t = s32.astype(np_dtype), t32.astype(np_dtype)
        ours = {"distill": L.distillation_loss_and_grad(s, t, tau),
                "kl": (L.kl_divergence(s, t, tau), L.distillation_loss_and_grad(s, t, tau)[1]),
                "ce": L.cross_entropy_and_grad(s, y)}
        for name, (loss, grad) in ours.items():
            ts = torch.tensor(s, requires_grad=True)
            tt = torch.tensor(t)
            if name == "distill":  # cross_entropy with probability targets
                ref = F.cross_entropy(ts / tau, F.softmax(tt / tau, -1))
            elif name == "kl":
                ref = F.kl_div(F.log_softmax(ts / tau, -1), F.log_softmax(tt / tau, -1),
                               reduction="batchmean", log_target=True)
            else:
                ref = F.cross_entropy(ts, torch.tensor(y))
            ref.backward()
            assert ts.dtype == dtype
            assert abs(loss - ref.item()) <= tol * max(1.0, abs(loss)), (name, dtype)
            np.testing.assert_allclose(grad, ts.grad.numpy(), rtol=tol, atol=grad_atol,
                                       err_msg=f"{name} {dtype}")


# ----------------------------------------------------------------- backends and the Numba kernel


def test_numpy_backend_op_is_the_reference():
    s, t = pair(1, 3, 20, 2.0, np.float32)
    loss, grad = get_backend("numpy").distill_loss_and_grad(s, t, 2.0)
    ref = L.distillation_loss_and_grad(s, t, 2.0)
    assert loss == ref[0]
    np.testing.assert_array_equal(grad, ref[1])


@pytest.fixture(scope="module")
def numba_kernel():
    pytest.importorskip("numba")
    from minigemma.backends.numba import distill as distill_numba
    distill_numba.warm_up()
    return distill_numba.distill_loss_and_grad_numba


@given(seeds, st.integers(1, 9), st.integers(1, 300), temperatures, st.floats(0.1, 1e4),
       st.sampled_from([np.float32, np.float64]))
def test_numba_kernel_equals_the_reference(numba_kernel, seed, T, V, tau, scale, dtype):
    s, t = pair(seed, T, V, scale, dtype)
    if V > 2:  # −inf entries: probability 0 on either side
        s[0, 1], t[-1, 2] = -np.inf, -np.inf
    loss, grad = numba_kernel(s, t, tau)
    ref_loss, ref_grad = L.distillation_loss_and_grad(s, t, tau)
    assert grad.dtype == ref_grad.dtype
    atol = CONSISTENCY_ATOL["float32"]
    assert loss == ref_loss or math.isclose(loss, ref_loss, rel_tol=atol, abs_tol=atol)
    np.testing.assert_allclose(grad, ref_grad, atol=atol / T, rtol=0)


@pytest.mark.parametrize("scale", [1.0, 1e4, 1e30])
def test_numba_kernel_on_gemma_vocabulary(numba_kernel, scale):
    s, t = pair(3, 12, GEMMA_V, scale, np.float32)
    for tau in (0.7, 1.0, 3.0):
        loss, grad = numba_kernel(s, t, tau)
        ref_loss, ref_grad = L.distillation_loss_and_grad(s, t, tau)
        assert math.isclose(loss, ref_loss, rel_tol=COMPONENT_ATOL["float32"])
        np.testing.assert_allclose(grad, ref_grad, atol=CONSISTENCY_ATOL["float32"] / 12, rtol=0)


def test_numba_kernel_errors_match_the_reference(numba_kernel):
    s, t = pair(0, 3, 8, 1.0, np.float32)
    t[2, 5] = np.nan
    with pytest.raises(ValueError, match="teacher_logits row 2 has NaN"):
        numba_kernel(s, t, 1.0)
    s[1, :] = -np.inf
    with pytest.raises(ValueError, match="student_logits row 1"):
        numba_kernel(s, t, 1.0)
    with pytest.raises(ValueError, match="same shape"):
        numba_kernel(s, t[:, :4], 1.0)
    with pytest.raises(ValueError, match="temperature"):
        numba_kernel(s, s, -1.0)
