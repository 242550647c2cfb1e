"""Every backend against the NumPy reference: each op on drawn shapes, then whole models.

The `backend` fixture (conftest.py) runs each test on every backend that works here. Inputs
are built on the host, moved with `asarray` / `prepare_weight`, and results come back through
`to_numpy`; the reference is always the NumPy backend on the same host inputs.
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minigemma.backends import get_backend
from minigemma.formats.gguf.blocks import BLOCK_FORMATS
from minigemma.text.generation import GenerationStats, generate_ids
from minigemma.text.sampling import Sampler, SamplingParams

from helpers.backend_inputs import assert_close, quantized_params, rand, random_blocks
from helpers.long_text import LONG_TEXT
from helpers.random_models import build, tiny_config, tiny_params
from helpers.tolerances import BACKEND_MODEL_ATOL, BACKEND_OP_ATOL

REF = get_backend("numpy")
seeds = st.integers(0, 2**32 - 1)
KINDS = list(BLOCK_FORMATS)


# Weights and rows

@given(st.sampled_from(KINDS), st.integers(1, 70), st.integers(1, 3),
       st.sampled_from([(1,), (2,), (1, 3), (7,), (8,), (2, 9), (33,)]), seeds)
def test_linear_on_block_weights(backend, kind, rows, n_blocks, lead, seed):
    rng = np.random.default_rng(seed)
    w = random_blocks(kind, rows, n_blocks, rng)
    x = rand(rng, *lead, w.shape[1])
    expected = REF.linear(x, REF.prepare_weight(w))  # dequantize, then matmul
    got = backend.linear(backend.asarray(x), backend.prepare_weight(w))
    assert_close(backend, got, expected, "quantized")


@given(st.integers(1, 50), st.integers(1, 70), st.sampled_from([(1,), (3,), (2, 5), (40,)]),
       seeds)
def test_linear_on_float_weights(backend, rows, cols, lead, seed):
    rng = np.random.default_rng(seed)
    w, x = rand(rng, rows, cols), rand(rng, *lead, cols)
    got = backend.linear(backend.asarray(x), backend.prepare_weight(w))
    assert_close(backend, got, REF.linear(x, REF.prepare_weight(w)))


@given(st.lists(st.tuples(st.sampled_from(KINDS + ["float32"]), st.integers(1, 70)),
                min_size=1, max_size=5), st.integers(1, 3),
       st.sampled_from([(1,), (2,), (1, 3), (7,), (8,), (2, 9)]), seeds)
def test_linear_many_is_one_linear_per_weight(backend, weights, n_blocks, lead, seed):
    """q, k, v (or gate, up) in one call: each output is the reference's x @ W_iᵀ, whatever the
    mix of storage kinds (a checkpoint may store v in another kind than q and k) and however
    many weights (more than one kernel takes are run in groups)."""
    rng = np.random.default_rng(seed)
    width = n_blocks * 256  # a multiple of every block length
    ws = [rand(rng, rows, width) if kind == "float32"
          else random_blocks(kind, rows, width // BLOCK_FORMATS[kind].block_elems, rng)
          for kind, rows in weights]
    x = rand(rng, *lead, width)
    got = backend.linear_many(backend.asarray(x), [backend.prepare_weight(w) for w in ws])
    assert isinstance(got, tuple) and len(got) == len(ws)
    for y, w in zip(got, ws):
        kind = "float32" if isinstance(w, np.ndarray) else "quantized"
        assert_close(backend, y, REF.linear(x, REF.prepare_weight(w)), kind)


@given(st.sampled_from(KINDS + ["float32"]), st.sampled_from(KINDS + ["float32"]),
       st.integers(1, 70), st.integers(1, 2), st.sampled_from([(1,), (2,), (1, 3), (9,)]),
       st.sampled_from(["tanh", "none"]), seeds)
def test_geglu_linear_is_the_geglu_of_the_two_products(backend, gate_kind, up_kind, F, n_blocks,
                                                       lead, approximate, seed):
    rng = np.random.default_rng(seed)
    width = n_blocks * 256
    w_gate, w_up = (rand(rng, F, width) if kind == "float32"
                    else random_blocks(kind, F, width // BLOCK_FORMATS[kind].block_elems, rng)
                    for kind in (gate_kind, up_kind))
    x = rand(rng, *lead, width, scale=0.3)  # products of order 1: the GELU's curved part
    expected = REF.geglu_linear(x, REF.prepare_weight(w_gate), REF.prepare_weight(w_up),
                                approximate)
    got = backend.geglu_linear(backend.asarray(x), backend.prepare_weight(w_gate),
                               backend.prepare_weight(w_up), approximate)
    quantized = "float32" not in (gate_kind, up_kind)
    assert_close(backend, got, expected, "quantized" if quantized else "float32")


def test_geglu_linear_rejects_bad_arguments(backend):
    rng = np.random.default_rng(0)
    w = backend.prepare_weight(random_blocks("q8_0", 4, 2, rng))
    other = backend.prepare_weight(random_blocks("q8_0", 5, 2, rng))
    x = backend.asarray(np.ones((1, 64), np.float32))
    with pytest.raises(ValueError, match="differ in shape"):
        backend.geglu_linear(x, w, other)
    with pytest.raises(ValueError, match="approximate"):
        backend.geglu_linear(x, w, w, "sigmoid")


def test_linear_many_checks_every_weight(backend):
    ws = [backend.prepare_weight(random_blocks("q8_0", 4, n, np.random.default_rng(0)))
          for n in (2, 1)]
    with pytest.raises(ValueError):
        backend.linear_many(backend.asarray(np.ones((1, 64), np.float32)), ws)


@given(st.sampled_from(KINDS + ["float32"]), st.integers(1, 40), st.integers(1, 2),
       st.integers(1, 3), st.integers(1, 6), st.floats(0.5, 50.0), seeds)
def test_embed_looks_up_rows_of_any_storage(backend, kind, vocab, n_blocks, B, T, scale, seed):
    rng = np.random.default_rng(seed)
    table = random_blocks("q8_0" if kind == "float32" else kind, vocab, n_blocks, rng)
    if kind == "float32":
        table = table.dequantize()
    ids = rng.integers(0, vocab, size=(B, T))
    expected = REF.embed(REF.prepare_weight(table), ids, np.float32(scale))
    got = backend.embed(backend.prepare_weight(table), backend.asarray(ids), np.float32(scale))
    assert_close(backend, got, expected)


def test_embed_rejects_out_of_range_ids(backend):
    table = backend.prepare_weight(random_blocks("q8_0", 5, 1, np.random.default_rng(0)))
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 5\)"):
        backend.embed(table, backend.asarray(np.array([[0, 5]])), 1.0)


# Row-wise ops

shapes = st.sampled_from([(1, 1, 7), (2, 3, 16), (1, 5, 640), (3, 33), (4, 2, 2, 12)])


@given(shapes, st.floats(1e-6, 1e-2), seeds)
def test_rms_norm(backend, shape, eps, seed):
    rng = np.random.default_rng(seed)
    x, gain = rand(rng, *shape, scale=3.0), 1 + rand(rng, shape[-1], scale=0.5)
    got = backend.rms_norm(backend.asarray(x), backend.prepare_weight(gain), eps)
    assert_close(backend, got, REF.rms_norm(x, gain, eps))


@given(st.integers(1, 2), st.integers(1, 5), st.integers(1, 3), st.integers(1, 20),
       st.data(), st.sampled_from([1e4, 1e6]), st.sampled_from([1.0, 8.0]), seeds)
def test_rope(backend, B, T, N, half, data, base, scale, seed):
    rng = np.random.default_rng(seed)
    H = 2 * half + data.draw(st.integers(0, 3))
    rot_dim = 2 * data.draw(st.integers(1, half))
    x = rand(rng, B, T, N, H)
    positions = np.sort(rng.integers(0, 40_000, size=(B, T)), axis=1)
    got = backend.rope(backend.asarray(x), backend.asarray(positions), base, rot_dim, scale)
    assert_close(backend, got, REF.rope(x, positions, base, rot_dim, scale))


@given(shapes, seeds)
def test_geglu(backend, shape, seed):
    rng = np.random.default_rng(seed)
    gate, up = rand(rng, *shape, scale=4.0), rand(rng, *shape)
    got = backend.geglu(backend.asarray(gate), backend.asarray(up))
    assert_close(backend, got, REF.geglu(gate, up))


@given(shapes, st.floats(0.5, 60.0), seeds)
def test_softcap(backend, shape, cap, seed):
    x = rand(np.random.default_rng(seed), *shape, scale=100.0)
    assert_close(backend, backend.softcap(backend.asarray(x), cap), REF.softcap(x, cap))


# Attention

@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # the reference's NaN rows
@given(st.integers(1, 2), st.integers(1, 24), st.integers(0, 8),
       st.sampled_from([(4, 1), (4, 2), (4, 4), (3, 3), (6, 2), (8, 1)]), st.integers(1, 40),
       st.one_of(st.none(), st.integers(1, 10)), st.one_of(st.none(), st.floats(1.0, 50.0)),
       st.booleans(), seeds)
def test_attention(backend, B, T, past, layout, H, window, cap, shuffle, seed):
    """Cached keys before the new ones, some slots empty (−1), slots in any order (a ring)."""
    rng = np.random.default_rng(seed)
    N, K = layout
    start = rng.integers(0, 30, size=(B, 1))
    q_pos = start + np.arange(T)  # [B, T]
    k_pos = np.concatenate([start - past + np.arange(past), q_pos], axis=1)  # [B, past + T]
    k_pos[k_pos < 0] = -1
    k_pos[rng.uniform(size=k_pos.shape) < 0.15] = -1  # empty slots
    if shuffle:
        k_pos = np.take_along_axis(k_pos, rng.permuted(np.tile(np.arange(k_pos.shape[1]), (B, 1)),
                                                       axis=1), axis=1)
    S = k_pos.shape[1]
    q, k, v = rand(rng, B, T, N, H), rand(rng, B, S, K, H), rand(rng, B, S, K, H)
    scale = float(rng.uniform(0.5, 2.0)) / np.sqrt(H)
    expected = REF.attention(q, k, v, q_pos, k_pos, scale=scale, window=window, softcap=cap)
    got = backend.attention(*map(backend.asarray, (q, k, v, q_pos, k_pos)), scale=scale,
                            window=window, softcap=cap)
    assert_close(backend, got, expected)


# Recurrent ops

@given(st.integers(1, 2), st.integers(1, 12), st.integers(1, 300), st.integers(1, 4), seeds)
def test_conv1d(backend, B, T, L, W, seed):
    rng = np.random.default_rng(seed)
    x, w, b, state = rand(rng, B, T, L), rand(rng, W, L), rand(rng, L), rand(rng, B, W - 1, L)
    y_ref, state_ref = REF.conv1d(x, w, b, state)
    y, new_state = backend.conv1d(*map(backend.asarray, (x, w, b, state)))
    assert_close(backend, y, y_ref)
    assert_close(backend, new_state, np.ascontiguousarray(state_ref))


@given(st.integers(1, 2), st.integers(1, 12), st.integers(1, 4), st.integers(1, 80), seeds)
def test_rglru_gates(backend, B, T, nb, bs, seed):
    rng = np.random.default_rng(seed)
    L = nb * bs
    x, a_param = rand(rng, B, T, L, scale=2.0), rand(rng, L, scale=3.0)
    gates = (rand(rng, nb, bs, bs, scale=1 / np.sqrt(bs)), rand(rng, nb, bs),
             rand(rng, nb, bs, bs, scale=1 / np.sqrt(bs)), rand(rng, nb, bs))
    a_ref, gate_x_ref = REF.rglru_gates(x, a_param, *gates)
    a, gate_x = backend.rglru_gates(*map(backend.asarray, (x, a_param, *gates)))
    assert_close(backend, a, a_ref)
    assert_close(backend, gate_x, gate_x_ref)


def test_rglru_gates_reject_wrong_shapes(backend):
    x, a_param = backend.asarray(np.zeros((1, 2, 6), np.float32)), np.zeros(6, np.float32)
    w, b = np.zeros((2, 3, 3), np.float32), np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"a_param \[6\]"):
        backend.rglru_gates(x, backend.asarray(a_param[:4]), *map(backend.asarray, (w, b, w, b)))
    with pytest.raises(ValueError, match="the recurrence gate's weight"):
        backend.rglru_gates(x, *map(backend.asarray, (a_param, w, b, w[:1], b[:1])))


@given(st.integers(1, 2), st.integers(1, 12), st.integers(1, 600), seeds)
def test_rglru_scan(backend, B, T, L, seed):
    rng = np.random.default_rng(seed)
    x, h0 = rand(rng, B, T, L), rand(rng, B, L)
    a = rng.uniform(0, 1, size=(B, T, L)).astype(np.float32)
    gate_x = rng.uniform(0, 1, size=(B, T, L)).astype(np.float32)
    reset = rng.uniform(size=(B, T)) < 0.3
    y_ref, h_ref = REF.rglru_scan(x, a, gate_x, h0, reset)
    y, h = backend.rglru_scan(*map(backend.asarray, (x, a, gate_x, h0, reset)))
    assert_close(backend, y, y_ref)
    assert_close(backend, h, h_ref)


@given(st.integers(1, 5), st.integers(2, 300), st.floats(0.5, 4.0), seeds)
def test_distill_loss_and_grad(backend, T, V, tau, seed):
    rng = np.random.default_rng(seed)
    s, t = rand(rng, T, V, scale=5.0), rand(rng, T, V, scale=5.0)
    loss_ref, grad_ref = REF.distill_loss_and_grad(s, t, tau)
    loss, grad = backend.distill_loss_and_grad(backend.asarray(s), backend.asarray(t), tau)
    assert abs(float(loss) - loss_ref) <= BACKEND_OP_ATOL["float32"] * max(1.0, abs(loss_ref))
    assert_close(backend, grad, grad_ref)


# Whole models

def greedy(model, ids, n):
    sampler = Sampler(SamplingParams())
    return list(generate_ids(model, ids, n, sampler, set(), GenerationStats()))


@pytest.mark.parametrize("family", ["gemma", "gemma2", "gemma3"])
@pytest.mark.parametrize("storage", ["float32", "q8_0+q4_0"])
def test_tiny_models_give_the_reference_logits_and_tokens(backend, family, storage):
    config = tiny_config(family, num_heads=4, num_kv_heads=2, head_dim=16, d_model=64,
                         ffn_dim=96, window=6)
    params = tiny_params(config, seed=3)
    if storage != "float32":
        params = quantized_params(config, params, ["q8_0", "q4_0"])
    ref, ours = build(config, params, "numpy"), build(config, params, backend)
    ids = np.random.default_rng(4).integers(0, config.vocab_size, size=(2, 21))
    expected, _ = ref.forward(ids)
    got, _ = ours.forward(backend.asarray(ids))
    np.testing.assert_allclose(backend.to_numpy(got), expected, rtol=0,
                               atol=BACKEND_MODEL_ATOL["float32"])
    prompt = [config.bos_id, 5, 17, 3]
    assert greedy(ours, prompt, 24) == greedy(ref, prompt, 24)


def test_tiny_griffin_gives_the_reference_logits_and_tokens(backend):
    from minigemma.models.config import GriffinConfig
    from minigemma.models.griffin import Griffin, parameter_shapes
    from minigemma.models.random_weights import random_params as random_weights
    config = GriffinConfig(vocab_size=61, d_model=32, num_layers=3, num_heads=2, lru_width=64,
                           ffn_dim=64, attention_window=5, conv_width=4, num_kv_heads=1,
                           final_softcap=12.0, max_position=512)
    params = random_weights(parameter_shapes(config), seed=5)
    ref = Griffin(config, {k: REF.prepare_weight(v) for k, v in params.items()}, REF)
    ours = Griffin(config, {k: backend.prepare_weight(v) for k, v in params.items()}, backend)
    ids = np.random.default_rng(6).integers(0, config.vocab_size, size=(1, 19))
    expected, _ = ref.forward(ids)
    got, _ = ours.forward(backend.asarray(ids))
    np.testing.assert_allclose(backend.to_numpy(got), expected, rtol=0,
                               atol=BACKEND_MODEL_ATOL["float32"])
    assert greedy(ours, [config.bos_id, 7, 9], 16) == greedy(ref, [config.bos_id, 7, 9], 16)


def test_real_model_gives_the_reference_logits_and_tokens(backend, real_model):
    """Gemma 3 270M (Q4_K_M) on this backend against the NumPy backend, across the window."""

    import minigemma
    ours = minigemma.load(real_model.path, backend=backend)
    ids = real_model.tokenizer.encode(LONG_TEXT)
    assert len(ids) > 600, "the prompt must be longer than the 512-token window"
    sampled = [0, 1, 10, 100, 300, 510, 511, 512, 513, 600, len(ids) - 1]
    expected = real_model.logits(ids)[sampled]  # the full [T, V] is dropped at once
    got = ours.logits(ids)[sampled]
    np.testing.assert_allclose(got, expected, rtol=0, atol=BACKEND_MODEL_ATOL["real-q4_k_m"])
    for prompt in ("The capital of France is", "def fibonacci(n):\n    "):
        ids = real_model.tokenizer.encode(prompt)
        assert greedy(ours, ids, 20) == greedy(real_model, ids, 20)
    long_ids = real_model.tokenizer.encode(LONG_TEXT)
    assert greedy(ours, long_ids, 8) == greedy(real_model, long_ids, 8)
