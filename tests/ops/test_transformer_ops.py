"""Properties of each reference component, stated in its docstring."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minigemma.ops.attention import attention, attention_mask
from minigemma.ops.embedding import embed, embedding_scale
from minigemma.ops.mlp import gelu_tanh
from minigemma.ops.norms import rms_norm
from minigemma.ops.rope import rope
from minigemma.ops.softcap import softcap

from helpers.tolerances import COMPONENT_ATOL

seeds = st.integers(0, 2**32 - 1)
ATOL = COMPONENT_ATOL["float32"]


def rand(seed, *shape, scale=1.0):
    return (scale * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


@given(seeds, st.floats(0.5, 60.0))
def test_softcap_bounded_odd_monotone(seed, cap):
    x = np.sort(rand(seed, 200, scale=100.0))
    y = softcap(x, cap)
    assert np.all(np.abs(y) <= cap)
    np.testing.assert_allclose(softcap(-x, cap), -y, atol=ATOL * cap)
    assert np.all(np.diff(y) >= 0)
    small = x / 1e6
    np.testing.assert_allclose(softcap(small, cap), small, rtol=1e-4, atol=1e-7)


@given(seeds, st.floats(0.5, 1e3))
def test_rms_norm_invariant_to_input_scale(seed, scale):
    # holds while mean(x²) >> eps; eps = 1e-6 is what breaks it for vanishing inputs
    x, g = rand(seed, 3, 16), 1.0 + rand(seed + 1, 16)
    np.testing.assert_allclose(rms_norm(x * np.float32(scale), g), rms_norm(x, g), atol=1e-4, rtol=1e-4)


def test_rms_norm_unit_gain_gives_unit_rms():
    y = rms_norm(rand(0, 5, 64, scale=7.0), np.ones(64, np.float32))
    np.testing.assert_allclose(np.sqrt((y * y).mean(-1)), 1.0, atol=1e-5)


@given(seeds, st.integers(0, 5000))
def test_rope_preserves_norms(seed, offset):
    x = rand(seed, 1, 6, 2, 16)
    pos = np.arange(offset, offset + 6)[None]
    y = rope(x, pos, 10_000.0)
    np.testing.assert_allclose(np.linalg.norm(y, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-5)


@given(seeds, st.integers(0, 3000), st.integers(0, 3000))
def test_rope_dot_product_depends_on_relative_position(seed, p, shift):
    q, k = rand(seed, 1, 1, 1, 32), rand(seed + 1, 1, 1, 1, 32)

    def score(pq, pk):
        return float((rope(q, np.array([[pq]]), 1e4) * rope(k, np.array([[pk]]), 1e4)).sum())
    assert math.isclose(score(p + 7, p), score(p + 7 + shift, p + shift), rel_tol=1e-3, abs_tol=1e-3)


def test_rope_partial_rotation_leaves_the_rest():
    x = rand(0, 1, 4, 2, 16)
    y = rope(x, np.arange(4)[None], 1e4, rot_dim=8)
    np.testing.assert_array_equal(y[..., 8:], x[..., 8:])
    assert not np.allclose(y[:, 1:, :, :8], x[:, 1:, :, :8])


def test_rope_is_half_split_not_interleaved():
    # A unit vector on dim 0 at position 1 rotates into dim H/2 (its pair), not into dim 1.
    x = np.zeros((1, 1, 1, 8), np.float32)
    x[..., 0] = 1
    y = rope(x, np.array([[1]]), 1e4)
    assert abs(y[0, 0, 0, 4] - math.sin(1.0)) < 1e-6 and y[0, 0, 0, 1] == 0


@given(seeds, st.integers(1, 4), st.sampled_from([1, 2, 4]), st.one_of(st.none(), st.integers(1, 6)),
       st.one_of(st.none(), st.floats(0.5, 10)))
def test_attention_rows_are_convex_combinations(seed, G, K, window, cap):
    T, H = 7, 8
    q, k = rand(seed, 1, T, K * G, H), rand(seed + 1, 1, T, K, H)
    v = np.abs(rand(seed + 2, 1, T, K, H)) + 1.0
    pos = np.arange(T)[None]
    out = attention(q, k, v, pos, pos, scale=0.3, window=window, softcap=cap)
    # each output lies inside the per-dimension range of the values it may read
    for t in range(T):
        first = 0 if window is None else max(0, t - window + 1)
        for n in range(K * G):
            seen = v[0, first:t + 1, n // G]
            assert np.all(out[0, t, n] >= seen.min(0) - 1e-5)
            assert np.all(out[0, t, n] <= seen.max(0) + 1e-5)


@given(st.integers(1, 12), st.integers(1, 12))
def test_mask_is_causal_and_window_wide(T, window):
    pos = np.arange(T)[None]
    allowed = attention_mask(pos, pos, window)[0, 0, 0]
    for q in range(T):
        row = allowed[q]
        assert not row[q + 1:].any(), "a query sees the future"
        assert row.sum() == min(q + 1, window), "window admits W keys including the current one"


def test_mask_ignores_empty_slots_and_slot_order():
    k_pos = np.array([[3, -1, 1, 2]])
    allowed = attention_mask(np.array([[3]]), k_pos, window=2)[0, 0, 0, 0]
    assert allowed.tolist() == [True, False, False, True]


def test_attention_soft_cap_applies_before_mask():
    # With a cap, huge scores are bounded, so a masked key (-inf) still gets zero weight and an
    # allowed key keeps a finite share.
    q = np.full((1, 2, 1, 4), 100.0, np.float32)
    k = np.full((1, 2, 1, 4), 100.0, np.float32)
    v = np.array([[[[1.0] * 4], [[3.0] * 4]]], np.float32)
    out = attention(q, k, v, np.array([[0, 1]]), np.array([[0, 1]]), scale=1.0, softcap=5.0)
    np.testing.assert_allclose(out[0, 0, 0], 1.0)
    np.testing.assert_allclose(out[0, 1, 0], 2.0, atol=1e-5)


def test_gqa_equals_mha_with_repeated_kv_heads():
    q, k, v = rand(0, 2, 5, 6, 8), rand(1, 2, 5, 2, 8), rand(2, 2, 5, 2, 8)
    pos = np.tile(np.arange(5), (2, 1))
    grouped = attention(q, k, v, pos, pos, scale=0.35)
    repeated = attention(q, np.repeat(k, 3, axis=2), np.repeat(v, 3, axis=2), pos, pos, scale=0.35)
    np.testing.assert_allclose(grouped, repeated, atol=ATOL)


def test_window_at_least_length_equals_global():
    q, k, v = rand(0, 1, 9, 4, 8), rand(1, 1, 9, 2, 8), rand(2, 1, 9, 2, 8)
    pos = np.arange(9)[None]
    np.testing.assert_allclose(attention(q, k, v, pos, pos, scale=0.3, window=9),
                               attention(q, k, v, pos, pos, scale=0.3), atol=ATOL)


@pytest.mark.oracle
def test_gelu_tanh_matches_torch_and_is_not_erf():
    torch = pytest.importorskip("torch")
    z = np.linspace(-6, 6, 241).astype(np.float32)
    expected = torch.nn.functional.gelu(torch.tensor(z, dtype=torch.float64), approximate="tanh")
    np.testing.assert_allclose(gelu_tanh(z), expected.numpy(), atol=1e-6)
    erf = 0.5 * 1.0 * (1 + math.erf(1 / math.sqrt(2)))
    assert abs(float(gelu_tanh(np.float32(1.0))) - erf) > 1e-4


@pytest.mark.parametrize("d, dtype, expected", [(640, "bfloat16", 25.25), (640, "float32", 25.298222),
                                                (1152, "bfloat16", 34.0), (3072, "bfloat16", 55.5),
                                                (2560, "bfloat16", 50.5), (3584, "float16", 59.875)])
def test_embedding_scale_rounded_to_weight_dtype(d, dtype, expected):
    assert abs(float(embedding_scale(d, dtype)) - expected) < 1e-5  # values from docs/architecture.md#embedding-scale


def test_embed_rejects_out_of_range_ids():
    with pytest.raises(ValueError, match="token ids"):
        embed(np.zeros((5, 3), np.float32), np.array([[0, 5]]), 1.0)
