"""The Numba kernels of training (minigemma.backends.numba.backward, chosen by
minigemma.training.kernels) against the NumPy reference they are judged by."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minigemma.backends import available_backends, get_backend
from minigemma.ops.attention import attention_backward
from minigemma.ops.rglru import rglru_scan_backward
from minigemma.training import kernels
from minigemma.training.losses import sample_teacher
from minigemma.training.optimizer import adamw_update_reference

from helpers.tolerances import BACKEND_OP_ATOL

if available_backends()["numba"] is not None:
    pytest.skip(f"numba: {available_backends()['numba']}", allow_module_level=True)

NUMBA, NUMPY = get_backend("numba"), get_backend("numpy")
ATOL = BACKEND_OP_ATOL["float32"]
seeds = st.integers(0, 2**32 - 1)


def rand(rng, *shape, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(np.float32)


def close(ours, reference, atol=ATOL):
    """max |ours − reference| ≤ atol · max(1, max |reference|), as the backend op tests."""
    err = np.abs(ours - reference).max() / max(1.0, np.abs(reference).max())
    assert err <= atol, f"max error {err:.3g} (relative to max(1, |reference|))"


@given(seeds, st.integers(1, 5), st.integers(2, 300), st.integers(1, 6),
       st.floats(0.3, 3.0), st.booleans())
def test_sparse_loss_and_grad_matches_the_reference(seed, rows, V, k, tau, with_minus_inf):
    rng = np.random.default_rng(seed)
    logits = rand(rng, rows, V, scale=4.0)
    if with_minus_inf:
        logits[:, rng.integers(0, V, size=max(1, V // 4))] = -np.inf
        logits[:, 0] = 1.0  # a finite entry in every row
    ids = rng.integers(0, V, size=(rows, k))  # repeated ids add up
    weights = rng.uniform(0.0, 1.0, size=(rows, k))
    weights[:, 0] += 0.1
    weights /= weights.sum(axis=1, keepdims=True)
    finite = np.isfinite(logits[np.arange(rows)[:, None], ids])
    weights = np.where(finite, weights, 0.0)  # no target on a probability-0 id
    weights[~finite.any(axis=1), 0] = 1.0
    ids[~finite.any(axis=1), 0] = 0
    weights /= weights.sum(axis=1, keepdims=True)
    scale = 1.0 / (3 * rows)
    loss_ref, grad_ref = kernels.sparse_loss_and_grad(NUMPY, logits.copy(), ids, weights, tau,
                                                      scale)
    loss, grad = kernels.sparse_loss_and_grad(NUMBA, logits.copy(), ids, weights, tau, scale)
    assert abs(loss - loss_ref) <= 1e-5 * max(1.0, abs(loss_ref))
    close(grad, grad_ref)


def test_sparse_loss_refuses_bad_rows():
    logits = np.zeros((2, 5), np.float32)
    for bad in (np.nan, np.inf):
        z = logits.copy()
        z[1, 3] = bad
        with pytest.raises(ValueError, match="row 1"):
            kernels.sparse_loss_and_grad(NUMBA, z, np.zeros((2, 1), int), np.ones((2, 1)), 1.0, 1.0)
    with pytest.raises(ValueError, match="target ids"):
        kernels.sparse_loss_and_grad(NUMBA, logits, np.full((2, 1), 5), np.ones((2, 1)), 1.0, 1.0)


@given(seeds, st.integers(1, 2), st.integers(1, 40), st.integers(1, 3), st.integers(1, 3),
       st.integers(1, 9), st.one_of(st.none(), st.integers(1, 12)),
       st.one_of(st.none(), st.floats(0.5, 10.0)))
def test_attention_backward_matches_the_reference(seed, B, T, K, G, H, window, cap):
    rng = np.random.default_rng(seed)
    q, dout = rand(rng, B, T, K * G, H), rand(rng, B, T, K * G, H)
    k, v = rand(rng, B, T, K, H), rand(rng, B, T, K, H)
    pos = np.broadcast_to(np.arange(T), (B, T))
    kw = dict(scale=H ** -0.5, window=window, softcap=cap)
    for ours, ref in zip(kernels.attention_backward(NUMBA, dout, q, k, v, pos, pos, **kw),
                         attention_backward(dout, q, k, v, pos, pos, **kw)):
        close(ours, ref, 5 * ATOL)  # sums of T products in another order


@given(seeds, st.integers(1, 2), st.integers(1, 30), st.integers(1, 80), st.floats(0, 0.3),
       st.booleans())
def test_rglru_scan_backward_matches_the_reference(seed, B, T, L, reset_rate, near_one):
    rng = np.random.default_rng(seed)
    x, dy, h0 = rand(rng, B, T, L), rand(rng, B, T, L), rand(rng, B, L)
    gate_x = rng.uniform(0, 1, (B, T, L)).astype(np.float32)
    a = rng.uniform(0.5, 1.0 if near_one else 0.99, (B, T, L)).astype(np.float32)
    if near_one:
        a[..., ::3] = 1.0  # where √(1 − a²) = 0 and its slope is bounded
    reset = rng.uniform(size=(B, T)) < reset_rate
    dh = rand(rng, B, L)
    ours = kernels.rglru_scan_backward(NUMBA, dy, x, a, gate_x, h0, reset, dh)
    ref = rglru_scan_backward(dy, x, a, gate_x, h0, reset, dh)
    for o, r in zip(ours, ref):
        close(o, r, 5 * ATOL)


@given(seeds, st.integers(1, 70_000), st.floats(1e-5, 1e-2), st.sampled_from([0.0, 0.1]),
       st.integers(1, 1000))
def test_adamw_update_matches_the_reference(seed, n, lr, weight_decay, step):
    rng = np.random.default_rng(seed)
    param, grad = rand(rng, n), rand(rng, n)
    m, v = rand(rng, n, scale=0.1), np.abs(rand(rng, n, scale=0.01))
    kw = dict(lr=lr, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=weight_decay, step=step)
    expected = [a.copy() for a in (param, m, v)]
    adamw_update_reference(*expected[:1], grad, *expected[1:], **kw)
    got = [a.copy() for a in (param, m, v)]
    kernels.adamw_update(NUMBA, got[0], grad, got[1], got[2], **kw)
    for g, e in zip(got, expected):
        close(g, e)


@pytest.mark.parametrize("weighting", ["frequency", "renormalised"])
def test_teacher_draws_match_the_reference(weighting):
    rng = np.random.default_rng(5)
    logits = rand(rng, 40, 3000, scale=3.0)
    logits[:, :100] = -np.inf  # probability 0: never drawn
    ours = kernels.sample_teacher(NUMBA, logits, 32, seed=9, temperature=0.8, weighting=weighting)
    ref = sample_teacher(logits, 32, seed=9, temperature=0.8, weighting=weighting)
    # the same uniforms and rule: the same ids, but where a uniform falls within float32
    # rounding of a boundary between two ids (none expected here, a few per million draws)
    assert (ours.ids == ref.ids).mean() >= 0.999
    assert (ours.ids[ours.probs > 0] >= 100).all()
    np.testing.assert_allclose(ours.probs.sum(axis=1), 1.0, atol=1e-6)
    close(ours.probs, ref.probs, 1e-5)
