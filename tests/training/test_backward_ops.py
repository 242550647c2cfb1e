"""Every op's backward (beside its forward in minigemma.ops) against finite differences in
float64, over drawn shapes: L = Σ forward(inputs) ⊙ R for a random cotangent R, whose gradient
the backward gives from R."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minigemma.models.config import RopeScaling
from minigemma.ops import attention as A
from minigemma.ops import conv1d as C
from minigemma.ops import embedding as E
from minigemma.ops import mlp as M
from minigemma.ops import norms as N
from minigemma.ops import rglru as R
from minigemma.ops import rope as P
from minigemma.ops import softcap as S

from helpers.finite_differences import FLOAT64 as xp
from helpers.finite_differences import per_input_check

seeds = st.integers(0, 2**32 - 1)
TOL = 1e-6  # relative, float64 central differences


def draw(rng, *shape, scale=1.0):
    return scale * rng.standard_normal(shape)


def loss_of(forward, cotangent):
    """The scalar Σ forward(...) ⊙ R (R = cotangent), for finite differences."""
    return lambda *inputs: float(np.sum(forward(*inputs) * cotangent))


@given(seeds, st.integers(1, 3), st.integers(1, 12), st.sampled_from([1e-6, 1e-2]))
def test_rms_norm_backward(seed, rows, D, eps):
    rng = np.random.default_rng(seed)
    x, gain, dy = draw(rng, rows, 2, D), 1 + draw(rng, D, scale=0.5), draw(rng, rows, 2, D)
    dx, dgain = N.rms_norm_backward(dy, x, gain, eps, xp=xp)
    f = loss_of(lambda x, g: N.rms_norm(x, g, eps, xp=xp), dy)
    per_input_check(f, [x, gain], [dx, dgain], rng, TOL)


@given(seeds, st.integers(1, 20), st.floats(0.5, 30.0))
def test_softcap_backward(seed, n, cap):
    rng = np.random.default_rng(seed)
    x, dy = draw(rng, n, scale=cap), draw(rng, n)
    f = loss_of(lambda x: S.softcap(x, cap, xp=xp), dy)
    per_input_check(f, [x], [S.softcap_backward(dy, x, cap, xp=xp)], rng, TOL)


@given(seeds, st.integers(1, 3), st.integers(1, 6), st.integers(1, 9), st.integers(1, 8),
       st.floats(0.5, 30.0))
def test_embedding_and_tied_head_backward(seed, B, T, V, D, scale):
    rng = np.random.default_rng(seed)
    table, ids = draw(rng, V, D), rng.integers(0, V, size=(B, T))  # ids repeat when V is small
    dy = draw(rng, B, T, D)
    f = loss_of(lambda t: E.embed(t, ids, scale, xp=xp), dy)
    per_input_check(f, [table], [E.embed_backward(dy, ids, scale, V, xp=xp)], rng, TOL)
    h, dlogits = draw(rng, B, T, D), draw(rng, B, T, V)
    dh, dtable = E.tied_head_backward(dlogits, h, table, xp=xp)
    f = loss_of(lambda h, t: h @ t.T, dlogits)
    per_input_check(f, [h, table], [dh, dtable], rng, TOL)
    into = draw(rng, V, D)  # `out=`: added into an existing gradient
    np.testing.assert_allclose(E.embed_backward(dy, ids, scale, V, out=into.copy(), xp=xp),
                               into + E.embed_backward(dy, ids, scale, V, xp=xp), atol=1e-12)


scalings = st.sampled_from([1.0, 4.0, RopeScaling("linear", 2.0),
                            RopeScaling("yarn", 8.0, original_context=16)])


@given(seeds, st.integers(1, 2), st.integers(1, 5), st.integers(1, 3), st.integers(1, 4),
       st.integers(0, 2), st.sampled_from([1e4, 1e6]), scalings, st.integers(0, 40))
def test_rope_backward(seed, B, T, Nh, half, extra, base, scale, offset):
    rng = np.random.default_rng(seed)
    rot_dim, H = 2 * half, 2 * half + 2 * extra  # partial rotation when extra > 0
    x, dy = draw(rng, B, T, Nh, H), draw(rng, B, T, Nh, H)
    pos = offset + np.arange(T)[None].repeat(B, 0)
    f = loss_of(lambda x: P.rope(x, pos, base, rot_dim, scale, xp=xp), dy)
    dx = P.rope_backward(dy, pos, base, rot_dim, scale, xp=xp)
    per_input_check(f, [x], [dx], rng, TOL)


@given(seeds, st.integers(1, 2), st.integers(1, 6), st.integers(1, 2), st.integers(1, 3),
       st.integers(1, 5), st.one_of(st.none(), st.integers(1, 6)),
       st.one_of(st.none(), st.floats(0.5, 5.0)), st.integers(0, 3))
def test_attention_backward(seed, B, T, K, G, H, window, cap, offset):
    rng = np.random.default_rng(seed)
    Nh = K * G
    q, k, v = draw(rng, B, T, Nh, H), draw(rng, B, T, K, H), draw(rng, B, T, K, H)
    pos = offset + np.arange(T)[None].repeat(B, 0)
    dout = draw(rng, B, T, Nh, H)
    kw = dict(scale=H ** -0.5 * 2.0, window=window, softcap=cap, xp=xp)
    f = loss_of(lambda q, k, v: A.attention(q, k, v, pos, pos, **kw), dout)
    grads = A.attention_backward(dout, q, k, v, pos, pos, **kw)
    per_input_check(f, [q, k, v], list(grads), rng, TOL)


@given(seeds, st.integers(1, 2), st.integers(1, 4), st.integers(1, 7),
       st.sampled_from(["tanh", "none"]))
def test_geglu_backward(seed, B, T, F, approximate):
    rng = np.random.default_rng(seed)
    gate, up, dy = draw(rng, B, T, F, scale=2.0), draw(rng, B, T, F), draw(rng, B, T, F)
    f = loss_of(lambda g, u: M.geglu(g, u, approximate, xp=xp), dy)
    grads = M.geglu_backward(dy, gate, up, approximate, xp=xp)
    # the exact GELU's forward uses an erfc good to 1.2e-7; its backward is the true slope
    # Φ(z) + z φ(z), which the approximation's own slope follows to ~1e-5 relative
    per_input_check(f, [gate, up], list(grads), rng, TOL if approximate == "tanh" else 1e-4)


@given(seeds, st.integers(1, 2), st.integers(1, 6), st.integers(1, 5), st.integers(1, 4))
def test_conv1d_backward(seed, B, T, L, W):
    rng = np.random.default_rng(seed)
    x, w, b, state = draw(rng, B, T, L), draw(rng, W, L), draw(rng, L), draw(rng, B, W - 1, L)
    dy = draw(rng, B, T, L)
    f = loss_of(lambda x, w, b, s: C.conv1d(x, w, b, s, xp=xp)[0], dy)
    per_input_check(f, [x, w, b, state], list(C.conv1d_backward(dy, x, w, b, state, xp=xp)),
                    rng, TOL)


@given(seeds, st.integers(1, 2), st.integers(1, 5), st.integers(1, 3), st.integers(1, 4))
def test_rglru_gates_backward(seed, B, T, nb, bs):
    rng = np.random.default_rng(seed)
    L = nb * bs
    x, a_param = draw(rng, B, T, L), draw(rng, L)
    weights = [draw(rng, nb, bs, bs), draw(rng, nb, bs), draw(rng, nb, bs, bs), draw(rng, nb, bs)]
    da, dg = draw(rng, B, T, L), draw(rng, B, T, L)

    def f(x, a_param, *weights):
        a, gate_x = R.rglru_gates(x, a_param, *weights, xp=xp)
        return float(np.sum(a * da) + np.sum(gate_x * dg))
    grads = R.rglru_gates_backward(da, dg, x, a_param, *weights, xp=xp)
    per_input_check(f, [x, a_param, *weights], list(grads), rng, TOL)


@given(seeds, st.integers(1, 2), st.integers(1, 7), st.integers(1, 5), st.floats(0.0, 0.5),
       st.booleans())
def test_rglru_scan_backward(seed, B, T, L, reset_rate, final_state_grad):
    rng = np.random.default_rng(seed)
    x, gate_x, h0 = draw(rng, B, T, L), rng.uniform(0, 1, (B, T, L)), draw(rng, B, L)
    a = rng.uniform(0.05, 0.95, (B, T, L))
    reset = rng.uniform(size=(B, T)) < reset_rate
    dy = draw(rng, B, T, L)
    dh_last = draw(rng, B, L) if final_state_grad else None

    def f(x, a, gate_x, h0):
        y, h = R.rglru_scan(x, a, gate_x, h0, reset, xp=xp)
        return float(np.sum(y * dy) + (np.sum(h * dh_last) if final_state_grad else 0.0))
    grads = R.rglru_scan_backward(dy, x, a, gate_x, h0, reset, dh_last, xp=xp)
    per_input_check(f, [x, a, gate_x, h0], list(grads), rng, TOL)


def test_rglru_scan_backward_where_the_decay_rounds_to_one():
    # a = 1: √(1 − a²) = 0 and its slope is infinite; the backward keeps every gradient finite
    x, gate_x, h0 = np.ones((1, 3, 2), np.float32), np.ones((1, 3, 2), np.float32), np.ones((1, 2))
    a = np.ones((1, 3, 2), np.float32)
    grads = R.rglru_scan_backward(np.ones((1, 3, 2), np.float32), x, a, gate_x,
                                  h0.astype(np.float32), np.zeros((1, 3), bool))
    assert all(np.isfinite(g).all() for g in grads)


def test_backward_ops_keep_float32():
    rng = np.random.default_rng(0)
    x = draw(rng, 2, 3, 8).astype(np.float32)
    assert all(g.dtype == np.float32 for g in N.rms_norm_backward(x, x, x[0, 0]))
    q = draw(rng, 1, 4, 2, 6).astype(np.float32)
    k = draw(rng, 1, 4, 1, 6).astype(np.float32)
    pos = np.arange(4)[None]
    grads = A.attention_backward(q, q, k, k, pos, pos, scale=0.4, window=2, softcap=3.0)
    assert all(g.dtype == np.float32 for g in grads)
    assert P.rope_backward(q, pos, 1e4).dtype == np.float32


@pytest.mark.parametrize("approximate", ["tanh", "none"])
def test_gelu_slopes_at_known_points(approximate):
    # gelu'(0) = ½ for both; far out the GELU is the identity (slope 1) or 0
    slope = M.gelu_tanh_backward if approximate == "tanh" else M.gelu_backward
    np.testing.assert_allclose(slope(np.array([0.0, 12.0, -12.0], np.float32)), [0.5, 1.0, 0.0],
                               atol=1e-6)
