"""minigemma.training.optimizer: AdamW against torch.optim.AdamW, clipping by global norm and the
warmup + cosine schedule, as their docstrings state them."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minigemma.backends import available_backends, get_backend
from minigemma.training.optimizer import (
    AdamW,
    clip_by_global_norm,
    decay_mask,
    global_norm,
    warmup_cosine,
)

seeds = st.integers(0, 2**32 - 1)
BACKENDS = [n for n in ("numpy", "numba") if available_backends()[n] is None]


def params_and_grads(rng, steps):
    shapes = {"layers.0.q_proj": (5, 7), "layers.0.pre_attn_norm": (7,), "embedding": (300, 70)}
    params = {n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items()}
    grads = [{n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items()}
             for _ in range(steps)]
    return params, grads


@pytest.mark.oracle
@pytest.mark.parametrize("backend", BACKENDS)
def test_adamw_matches_torch(backend):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    params, grads = params_and_grads(rng, steps=5)
    be = get_backend(backend)
    opt = AdamW(beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1)
    tensors = {n: torch.tensor(p.copy(), requires_grad=True) for n, p in params.items()}
    groups = [{"params": [t], "weight_decay": 0.1 if decay_mask(n, t.shape) else 0.0}
              for n, t in tensors.items()]
    reference = torch.optim.AdamW(groups, lr=1e-2, betas=(0.9, 0.95), eps=1e-8)
    for step, g in enumerate(grads):
        lr = 1e-2 * (0.5 + 0.1 * step)  # a schedule: both read the rate of this step
        for group in reference.param_groups:
            group["lr"] = lr
        for n, t in tensors.items():
            t.grad = torch.tensor(g[n])
        reference.step()
        opt.update(be, params, g, lr)
    for n, t in tensors.items():
        np.testing.assert_allclose(params[n], t.detach().numpy(), rtol=1e-5, atol=1e-6)
    assert opt.step == len(grads)


def test_norm_gains_and_vectors_are_not_decayed():
    be = get_backend("numpy")
    params = {"final_norm": np.full(4, 2.0, np.float32), "w": np.full((2, 2), 2.0, np.float32)}
    zero = {n: np.zeros_like(p) for n, p in params.items()}
    AdamW(weight_decay=0.5).update(be, params, zero, lr=0.1)
    np.testing.assert_array_equal(params["final_norm"], 2.0)  # g = 1 + w is not pulled to 0
    np.testing.assert_allclose(params["w"], 2.0 * (1 - 0.1 * 0.5), rtol=1e-6)


def test_optimizer_state_round_trip():
    # an optimizer rebuilt from its saved state continues exactly as the original
    be = get_backend("numpy")
    params, grads = params_and_grads(np.random.default_rng(1), steps=2)
    original = AdamW()
    original.update(be, params, grads[0], 1e-3)
    rebuilt = AdamW.from_state(original.hyperparameters(),
                               {k: a.copy() for k, a in original.state_arrays().items()}, be)
    copy = {n: p.copy() for n, p in params.items()}
    original.update(be, params, grads[1], 1e-3)
    rebuilt.update(be, copy, grads[1], 1e-3)
    assert rebuilt.step == original.step == 2
    for n in params:
        np.testing.assert_array_equal(copy[n], params[n])


def test_missing_gradient_and_bad_hyperparameters():
    be = get_backend("numpy")
    with pytest.raises(ValueError, match="no gradient"):
        AdamW().update(be, {"a": np.zeros(2, np.float32)}, {}, 1e-3)
    with pytest.raises(ValueError, match="beta2"):
        AdamW(beta2=1.0)


@given(seeds, st.floats(0.01, 100.0))
def test_clip_by_global_norm(seed, max_norm):
    rng = np.random.default_rng(seed)
    grads = {n: (rng.standard_normal(s) * rng.uniform(0.01, 10)).astype(np.float32)
             for n, s in (("a", (3, 4)), ("b", (5,)))}
    before = {n: g.copy() for n, g in grads.items()}
    norm = clip_by_global_norm(grads, max_norm)
    expected = math.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in before.values()))
    assert abs(norm - expected) <= 1e-9 * expected
    after = global_norm(grads)
    assert after <= max_norm * (1 + 1e-6)
    factor = min(1.0, max_norm / norm)
    for n, g in grads.items():  # the direction is kept: every gradient scaled by one factor
        np.testing.assert_allclose(g, before[n] * factor, rtol=1e-6, atol=1e-7)


@given(st.integers(0, 50), st.integers(1, 200), st.floats(1e-4, 1e-2), st.floats(0.0, 0.5))
def test_warmup_cosine(warmup, extra, peak, min_ratio):
    total = warmup + extra
    min_lr = peak * min_ratio
    lrs = [warmup_cosine(s, peak, warmup, total, min_lr) for s in range(total + 3)]
    if warmup:
        assert lrs[0] == pytest.approx(peak / warmup)  # the first update already moves
        assert all(a < b for a, b in zip(lrs[:warmup - 1], lrs[1:warmup]))  # rising
        assert lrs[warmup - 1] == pytest.approx(peak)
    assert lrs[warmup] == pytest.approx(peak)  # the cosine starts at the peak
    decay = lrs[warmup:total]
    assert all(a >= b - 1e-15 for a, b in zip(decay, decay[1:]))  # then never rises
    assert all(0 < lr <= peak + 1e-15 for lr in lrs[:warmup])
    assert all(min_lr - 1e-15 <= lr <= peak + 1e-15 for lr in lrs[warmup:])
    assert lrs[total:] == [min_lr] * 3
    with pytest.raises(ValueError):
        warmup_cosine(0, peak, total + 1, total)
