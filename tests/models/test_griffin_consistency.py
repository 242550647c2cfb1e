"""Consistency: one Griffin model computed in different ways must agree (float32, random weights)."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minigemma.backends import get_backend
from minigemma.models.config import GriffinConfig
from minigemma.models.gemma import is_norm
from minigemma.models.griffin import Griffin, parameter_shapes
from minigemma.ops.rglru import rglru_scan
from minigemma.text.generation import GenerationStats, generate_ids
from minigemma.text.sampling import Sampler, SamplingParams

from helpers.tolerances import CONSISTENCY_ATOL

ATOL = CONSISTENCY_ATOL["float32"]
seeds = st.integers(0, 10_000)
conventions = st.booleans()  # window_includes_extra_key: official (W + 1 keys) or HF (W)


def tiny_config(window=5, extra_key=False, **overrides):
    fields = dict(vocab_size=61, d_model=24, num_layers=4, num_heads=2, lru_width=20, ffn_dim=28,
                  attention_window=window, conv_width=3, num_kv_heads=1, final_softcap=12.0,
                  block_pattern=("recurrent", "attention"), window_includes_extra_key=extra_key,
                  max_position=2048)
    fields.update(overrides)
    return GriffinConfig(**fields)


def tiny_params(config, seed=0):
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in parameter_shapes(config).items():
        if is_norm(name):
            value = 1.0 + 0.5 * rng.standard_normal(shape)
        elif name.endswith("rglru_a_param"):  # base decay exp(−softplus(θ)) in [0.6, 0.99]
            value = np.log(np.expm1(-np.log(rng.uniform(0.6, 0.99, shape))))
        else:
            value = 0.2 * rng.standard_normal(shape)
        params[name] = value.astype(np.float32)
    return params


def build(config, params):
    be = get_backend("numpy")
    return Griffin(config, {k: be.prepare_weight(v) for k, v in params.items()}, be)


def ids_for(config, T, seed, batch=1):
    ids = np.random.default_rng(seed).integers(0, config.vocab_size, size=(batch, T))
    ids[:, 0] = config.bos_id
    return ids


@given(st.integers(1, 9), st.integers(1, 4), seeds)
def test_scan_equals_a_step_by_step_loop(T, L, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, T, L)).astype(np.float32)
    a = rng.uniform(0, 1, (2, T, L)).astype(np.float32)
    gate_x = rng.uniform(0, 1, (2, T, L)).astype(np.float32)
    h = rng.standard_normal((2, L)).astype(np.float32)
    reset = rng.random((2, T)) < 0.3
    y, h_last = rglru_scan(x, a, gate_x, h, reset)
    steps = []
    for t in range(T):
        y_t, h = rglru_scan(x[:, t:t + 1], a[:, t:t + 1], gate_x[:, t:t + 1], h, reset[:, t:t + 1])
        steps.append(y_t)
    np.testing.assert_array_equal(np.concatenate(steps, axis=1), y)
    np.testing.assert_array_equal(h, h_last)


@given(st.integers(1, 6), conventions, st.integers(1, 16), seeds)
def test_prefill_in_two_chunks_equals_one_prefill(window, extra_key, split, seed):
    config = tiny_config(window, extra_key)
    model = build(config, tiny_params(config, seed))
    ids = ids_for(config, 17, seed, batch=2)
    full, _ = model.forward(ids)
    cache = model.new_cache(batch=2)
    first, cache = model.forward(ids[:, :split], cache=cache)
    second, cache = model.forward(ids[:, split:], cache=cache)
    np.testing.assert_allclose(np.concatenate([first, second], axis=1), full, atol=ATOL, rtol=0)


@given(st.integers(1, 6), conventions, seeds)
def test_cached_decode_equals_full_forward_past_the_window(window, extra_key, seed):
    config = tiny_config(window, extra_key)
    model = build(config, tiny_params(config, seed))
    ids = ids_for(config, 17, seed, batch=2)
    full, _ = model.forward(ids)
    cache = model.new_cache(batch=2)
    out = [model.forward(ids[:, :3], cache=cache)[0]]
    for t in range(3, ids.shape[1]):
        out.append(model.forward(ids[:, t:t + 1], cache=cache)[0])
    np.testing.assert_allclose(np.concatenate(out, axis=1), full, atol=ATOL, rtol=0)


def test_cache_size_is_constant_in_the_number_of_decoded_tokens():
    config = tiny_config(window=4)
    model = build(config, tiny_params(config))
    cache = model.new_cache()
    empty = cache.nbytes()
    model.forward(ids_for(config, 6, 0), cache=cache)
    sizes = {}
    for step in range(1, 1001):
        _, cache = model.forward(np.array([[step % config.vocab_size]]), cache=cache)
        if step in (10, 1000):
            sizes[step] = cache.nbytes()
    assert sizes[10] == sizes[1000] == empty
    assert cache.next_position == 1006
    ring = cache.layers[1]
    assert sorted(ring.positions[0].tolist()) == [1002, 1003, 1004, 1005]


@given(seeds)
def test_both_window_conventions_agree_while_the_sequence_fits_the_window(seed):
    hf_style = tiny_config(window=9, extra_key=False)
    params = tiny_params(hf_style, seed)
    official = build(hf_style.replace(window_includes_extra_key=True), params)
    hf_model = build(hf_style, params)
    ids = ids_for(hf_style, 12, seed)
    a, b = official.forward(ids)[0], hf_model.forward(ids)[0]
    np.testing.assert_allclose(a[:, :9], b[:, :9], atol=ATOL, rtol=0)
    assert np.abs(a[:, 9:] - b[:, 9:]).max() > 1e-3  # the extra key is seen from position W on


def test_last_only_equals_last_row():
    config = tiny_config()
    model = build(config, tiny_params(config))
    ids = ids_for(config, 8, 3, batch=2)
    np.testing.assert_allclose(model.forward(ids, last_only=True)[0][:, 0],
                               model.forward(ids)[0][:, -1], atol=ATOL, rtol=0)


def test_greedy_generation_follows_the_full_forward():
    config = tiny_config(window=3)
    model = build(config, tiny_params(config, 7))
    prompt = [config.bos_id, 5, 9]
    new = list(generate_ids(model, prompt, 12, Sampler(SamplingParams()), set(), GenerationStats()))
    ids = list(prompt)
    for _ in range(12):
        ids.append(int(np.argmax(model.forward(np.array([ids]))[0][0, -1])))
    assert new == ids[len(prompt):]


def test_errors_are_sentences():
    config = tiny_config()
    model = build(config, tiny_params(config))
    with pytest.raises(ValueError, match="context"):
        model.new_cache(max_len=config.max_position + 1)
    with pytest.raises(ValueError, match="context"):
        model.forward(ids_for(config, 2, 0), positions=np.array([[0, config.max_position]]))
    with pytest.raises(ValueError, match="holds 1 sequences"):
        model.forward(ids_for(config, 2, 0, batch=2), cache=model.new_cache(batch=1))
    with pytest.raises(ValueError, match="batch, tokens"):
        model.forward(np.array([1, 2, 3]))
