"""RecurrentGemma components: Conv1D, RG-LRU, config and presets (properties and equations)."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minigemma.backends import get_backend
from minigemma.models.config import GriffinConfig, config_from_hf_recurrent_gemma, preset
from minigemma.models.griffin import Griffin, parameter_shapes
from minigemma.ops.conv1d import conv1d
from minigemma.ops.rglru import C, block_diagonal, rglru, rglru_gates, rglru_scan, sigmoid, softplus

from helpers.tolerances import COMPONENT_ATOL

ATOL = COMPONENT_ATOL["float32"]
seeds = st.integers(0, 2**31 - 1)


def f32(rng, *shape, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(np.float32)


# --- Conv1D -------------------------------------------------------------------------------

@given(st.integers(1, 5), st.integers(1, 12), st.integers(0, 12), seeds)
def test_conv1d_with_state_carried_in_chunks_equals_one_call(width, T, split, seed):
    split = min(split, T)
    rng = np.random.default_rng(seed)
    x, w, b = f32(rng, 2, T, 3), f32(rng, width, 3), f32(rng, 3)
    state0 = f32(rng, 2, width - 1, 3)
    y, state = conv1d(x, w, b, state0)
    y1, s1 = conv1d(x[:, :split], w, b, state0)
    y2, s2 = conv1d(x[:, split:], w, b, s1)
    np.testing.assert_allclose(np.concatenate([y1, y2], axis=1), y, atol=ATOL, rtol=0)
    np.testing.assert_array_equal(s2, state)


@given(st.integers(1, 5), st.integers(1, 9), seeds)
def test_conv1d_is_the_causal_sum_of_the_docstring(width, T, seed):
    rng = np.random.default_rng(seed)
    x, w, b = f32(rng, 1, T, 4), f32(rng, width, 4), f32(rng, 4)
    y, state = conv1d(x, w, b, np.zeros((1, width - 1, 4), np.float32))
    for t in range(T):
        expected = b + sum(w[width - 1 - s] * x[0, t - s] for s in range(width) if t - s >= 0)
        np.testing.assert_allclose(y[0, t], expected, atol=ATOL, rtol=0)
    last = x[0, max(0, T - (width - 1)):]  # the state holds the last W−1 inputs, zero-padded
    np.testing.assert_array_equal(state[0, state.shape[1] - len(last):], last)


@pytest.mark.oracle
def test_conv1d_tap_order_and_hf_layout():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x, w, b = f32(rng, 1, 7, 5), f32(rng, 4, 5), f32(rng, 5)
    y, _ = conv1d(x, w, b, np.zeros((1, 3, 5), np.float32))
    # HF: Conv1d(groups=L, padding=W−1) with weight [L, 1, W] = wᵀ, output cut to the first T.
    conv = torch.nn.Conv1d(5, 5, 4, groups=5, padding=3)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(w.T[:, None, :]))
        conv.bias.copy_(torch.tensor(b))
        expected = conv(torch.tensor(x).transpose(1, 2))[..., :7].transpose(1, 2).numpy()
    np.testing.assert_allclose(y, expected, atol=ATOL, rtol=0)
    impulse = np.zeros((1, 1, 5), np.float32)
    impulse[0, 0, 0] = 1.0
    y, _ = conv1d(impulse, w, np.zeros(5, np.float32), np.zeros((1, 3, 5), np.float32))
    assert y[0, 0, 0] == w[3, 0]  # w[W−1] multiplies the current input


def test_conv1d_rejects_wrong_shapes():
    x = np.zeros((2, 3, 4), np.float32)
    with pytest.raises(ValueError, match="state"):
        conv1d(x, np.zeros((4, 4), np.float32), np.zeros(4, np.float32),
               np.zeros((2, 2, 4), np.float32))
    with pytest.raises(ValueError, match="weights"):
        conv1d(x, np.zeros((4, 5), np.float32), np.zeros(4, np.float32),
               np.zeros((2, 3, 4), np.float32))


# --- RG-LRU -------------------------------------------------------------------------------

def bounded_gate_params(rng, nb, bs):
    """Gate weights/biases with |pre-activation| ≤ 3 for inputs in [−2, 2]."""
    def w():
        return rng.uniform(-1, 1, (nb, bs, bs)).astype(np.float32) / np.float32(bs)

    def b():
        return rng.uniform(-1, 1, (nb, bs)).astype(np.float32)
    return w(), b(), w(), b()


@given(st.integers(1, 3), st.integers(1, 4), st.integers(1, 10), seeds)
def test_decay_lies_strictly_between_0_and_1(nb, bs, T, seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, (2, T, nb * bs)).astype(np.float32)
    a_param = rng.uniform(-6, 6, nb * bs).astype(np.float32)
    a, gate_x = rglru_gates(x, a_param, *bounded_gate_params(rng, nb, bs))
    assert a.dtype == np.float32 and a.shape == x.shape
    assert np.all(a > 0) and np.all(a < 1)
    assert np.all(gate_x > 0) and np.all(gate_x < 1)


@given(st.integers(1, 3), st.integers(1, 4), seeds)
def test_log_space_decay_is_the_papers_a_to_the_c_r(nb, bs, seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, (1, 5, nb * bs)).astype(np.float32)
    theta = rng.uniform(-4, 4, nb * bs)
    params = bounded_gate_params(rng, nb, bs)
    a, _ = rglru_gates(x, theta.astype(np.float32), *params)
    r = sigmoid(block_diagonal(x.astype(np.float64), params[2], params[3]))
    lam = -theta  # the checkpoint stores θ = −Λ
    paper = (1 / (1 + np.exp(-lam))) ** (C * r)  # a_t = σ(Λ)^(c·r_t)
    np.testing.assert_allclose(a, paper, rtol=1e-5, atol=0)


@given(st.integers(1, 3), st.integers(1, 12), st.floats(0.0, 0.999), seeds)
def test_state_stays_bounded_for_bounded_inputs(L, T, a_max, seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (2, T, L)).astype(np.float32)
    gate_x = rng.uniform(0, 1, (2, T, L)).astype(np.float32)
    a = rng.uniform(0, a_max, (2, T, L)).astype(np.float32)
    h0 = f32(rng, 2, L, scale=3.0)
    reset = rng.random((2, T)) < 0.2
    y, h_last = rglru_scan(x, a, gate_x, h0, reset)
    M = np.abs(x * gate_x).max(axis=1)  # [2, L]
    a_star = a.max(axis=1)
    bound = np.maximum(np.abs(h0), M * np.sqrt((1 + a_star) / (1 - a_star)))
    assert np.all(np.abs(y) <= bound[:, None] * (1 + 1e-5) + 1e-6)
    np.testing.assert_array_equal(h_last, y[:, -1])


@given(st.integers(1, 12), st.integers(0, 11), seeds)
def test_reset_makes_the_output_independent_of_everything_before(T, r, seed):
    r = min(r, T - 1)
    rng = np.random.default_rng(seed)

    def draw():
        return (f32(rng, 1, T, 3), rng.uniform(0, 1, (1, T, 3)).astype(np.float32),
                rng.uniform(0, 1, (1, T, 3)).astype(np.float32), f32(rng, 1, 3))
    x1, a1, g1, h1 = draw()
    x2, a2, g2, h2 = draw()
    for later, other in ((x2, x1), (a2, a1), (g2, g1)):  # same inputs from the reset on
        later[:, r:] = other[:, r:]
    reset = np.zeros((1, T), bool)
    reset[0, r] = True
    y1, last1 = rglru_scan(x1, a1, g1, h1, reset)
    y2, last2 = rglru_scan(x2, a2, g2, h2, reset)
    np.testing.assert_array_equal(y1[:, r:], y2[:, r:])
    np.testing.assert_array_equal(last1, last2)
    np.testing.assert_allclose(y1[:, r], x1[:, r] * g1[:, r], atol=0, rtol=1e-6)  # h = i ⊙ x


def test_scan_keeps_its_state_in_float32_and_checks_shapes():
    x = np.ones((1, 3, 2), np.float32)
    y, h = rglru_scan(x, 0.5 * x, x, np.zeros((1, 2), np.float32), np.zeros((1, 3), bool))
    assert y.dtype == np.float32 and h.dtype == np.float32
    with pytest.raises(ValueError, match="h0"):
        rglru_scan(x, x, x, np.zeros((1, 3), np.float32), np.zeros((1, 3), bool))
    with pytest.raises(ValueError, match="one shape"):
        rglru_scan(x, x[:, :2], x, np.zeros((1, 2), np.float32), np.zeros((1, 3), bool))


def test_block_diagonal_is_a_dense_block_diagonal_matrix():
    rng = np.random.default_rng(3)
    nb, bs = 3, 4
    w, b, x = f32(rng, nb, bs, bs), f32(rng, nb, bs), f32(rng, 2, 5, nb * bs)
    dense = np.zeros((nb * bs, nb * bs), np.float32)
    for h in range(nb):
        dense[h * bs:(h + 1) * bs, h * bs:(h + 1) * bs] = w[h]
    np.testing.assert_allclose(block_diagonal(x, w, b), x @ dense + b.reshape(-1), atol=ATOL,
                               rtol=0)


def test_softplus_and_sigmoid_are_stable():
    x = np.array([-1000.0, -30.0, -1.0, 0.0, 1.0, 30.0, 1000.0], np.float32)
    with np.errstate(over="raise"):
        sp, sg = softplus(x), sigmoid(x)
    np.testing.assert_allclose(sp[1:-1], np.log1p(np.exp(x[1:-1].astype(np.float64))), rtol=1e-6)
    assert sp[0] == 0 and sp[-1] == 1000 and sg[0] == 0 and sg[-1] == 1
    np.testing.assert_allclose(sg[1:-1], 1 / (1 + np.exp(-x[1:-1].astype(np.float64))), rtol=1e-6)


def test_rglru_composes_gates_and_scan():
    rng = np.random.default_rng(5)
    x, theta = f32(rng, 1, 6, 4), f32(rng, 4)
    params = bounded_gate_params(rng, 2, 2)
    reset = np.array([[True, False, False, False, False, False]])
    h0 = np.zeros((1, 4), np.float32)
    a, gate_x = rglru_gates(x, theta, *params)
    np.testing.assert_array_equal(rglru(x, reset, h0, theta, *params)[0],
                                  rglru_scan(x, a, gate_x, h0, reset)[0])


def test_backend_ops_are_the_components():
    be = get_backend("numpy")
    rng = np.random.default_rng(1)
    x, w, b, state = f32(rng, 1, 4, 3), f32(rng, 3, 3), f32(rng, 3), f32(rng, 1, 2, 3)
    for got, expected in zip(be.conv1d(x, w, b, state), conv1d(x, w, b, state)):
        np.testing.assert_array_equal(got, expected)
    a, h0, reset = 0.5 * np.ones_like(x), f32(rng, 1, 3), np.array([[False, True, False, False]])
    for got, expected in zip(be.rglru_scan(x, a, x, h0, reset), rglru_scan(x, a, x, h0, reset)):
        np.testing.assert_array_equal(got, expected)


# --- config, presets, embedding scale ----------------------------------------------------

@pytest.mark.parametrize("name, params_billion", [("recurrentgemma-2b", 2.683),
                                                  ("recurrentgemma-9b", 8.580)])
def test_preset_parameter_counts_match_the_spec(name, params_billion):
    total = sum(math.prod(s) for s in parameter_shapes(preset(name)).values())
    assert abs(total / 1e9 - params_billion) < 0.0015 * params_billion


def test_presets_follow_the_spec():
    c = preset("recurrentgemma-2b")
    assert c.layer_types.count("attention") == 8 and c.layer_types[:3] == (
        "recurrent", "recurrent", "attention")
    assert (c.head_dim, c.rot_dim, c.query_scale, c.num_kv_heads) == (256, 128, 1 / 16, 1)
    assert preset("recurrentgemma-9b").layer_types.count("recurrent") == 26
    assert c.attention_span == 2048 and c.replace(window_includes_extra_key=True).attention_span == 2049
    assert GriffinConfig.from_dict(c.to_dict()) == c


def test_embedding_scale_is_bf16_whatever_the_weight_dtype():
    be = get_backend("numpy")
    for dtype in ("float32", "bfloat16"):
        assert Griffin(preset("recurrentgemma-2b"), {}, be, dtype).embed_scale == np.float32(50.5)
        assert Griffin(preset("recurrentgemma-9b"), {}, be, dtype).embed_scale == np.float32(64.0)


@pytest.mark.parametrize("bad, match", [
    (dict(num_heads=3), "multiples"),
    (dict(num_kv_heads=3), "multiple of num_kv_heads"),
    (dict(d_model=24, num_heads=4, lru_width=24), "even"),  # head_dim 6 -> RoPE on 3 dims
    (dict(block_pattern=("recurrent", "mlp")), "block_pattern"),
    (dict(conv_width=0), "positive"),
    (dict(final_softcap=0.0), "final_softcap"),
    (dict(max_position=-1), "positive"),
])
def test_config_validation(bad, match):
    fields = dict(vocab_size=11, d_model=32, num_layers=3, num_heads=4, lru_width=16, ffn_dim=8)
    fields.update(bad)
    with pytest.raises(ValueError, match=match):
        GriffinConfig.from_dict(fields)
    with pytest.raises(ValueError, match="unknown config fields"):
        GriffinConfig.from_dict({**fields, "sliding_window": 4})


def test_config_from_hf_recurrent_gemma():
    hf = dict(model_type="recurrent_gemma", vocab_size=256000, hidden_size=2560,
              intermediate_size=15360, num_hidden_layers=26, num_attention_heads=10,
              num_key_value_heads=1, attention_window_size=2048, conv1d_width=4,
              logits_soft_cap=30.0, rms_norm_eps=1e-6, block_types=["recurrent", "recurrent",
                                                                    "attention"],
              rope_parameters={"rope_theta": 10000.0, "partial_rotary_factor": 0.5,
                               "rope_type": "default"}, lru_width=None, bos_token_id=2,
              eos_token_id=1, pad_token_id=0, hidden_activation="gelu_pytorch_tanh")
    assert config_from_hf_recurrent_gemma(hf) == preset("recurrentgemma-2b")  # F = 15360 / 2
    no_kv = {k: v for k, v in hf.items() if k != "num_key_value_heads"}
    assert config_from_hf_recurrent_gemma(no_kv).num_kv_heads == 10  # HF's default: MHA
    for change, match in ((dict(model_type="gemma"), "model_type"),
                          (dict(attention_bias=True), "attention_bias"),
                          (dict(hidden_activation="relu"), "activation"),
                          (dict(intermediate_size=15361), "even")):
        with pytest.raises(ValueError, match=match):
            config_from_hf_recurrent_gemma({**hf, **change})
