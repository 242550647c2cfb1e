"""Consistency: one model computed in different ways must agree (float32, random weights)."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minigemma.models.config import GemmaConfig

from helpers.random_models import build, tiny_config, tiny_params
from helpers.tolerances import CONSISTENCY_ATOL

ATOL = CONSISTENCY_ATOL["float32"]
families = st.sampled_from(["gemma", "gemma2", "gemma3"])
layouts = st.sampled_from([(4, 1), (4, 2), (4, 4), (3, 3), (6, 2)])


def ids_for(config, T, seed, batch=1):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, config.vocab_size, size=(batch, T))
    ids[:, 0] = config.bos_id
    return ids


@given(families, layouts, st.integers(1, 6), st.integers(0, 10_000))
def test_cached_decode_equals_full_forward_past_the_window(family, layout, window, seed):
    config = tiny_config(family, *layout, window=window)
    model = build(config, tiny_params(config, seed))
    ids = ids_for(config, 17, seed, batch=2)
    full, _ = model.forward(ids)
    cache = model.new_cache(batch=2, max_len=32)
    out = [model.forward(ids[:, :3], cache=cache)[0]]
    for t in range(3, ids.shape[1]):
        out.append(model.forward(ids[:, t:t + 1], cache=cache)[0])
    np.testing.assert_allclose(np.concatenate(out, axis=1), full, atol=ATOL, rtol=0)


@given(families, st.integers(1, 6), st.integers(1, 16), st.integers(0, 10_000))
def test_chunked_prefill_equals_one_prefill(family, window, split, seed):
    config = tiny_config(family, window=window)
    model = build(config, tiny_params(config, seed))
    ids = ids_for(config, 17, seed)
    full, _ = model.forward(ids)
    cache = model.new_cache(max_len=17)
    first, _ = model.forward(ids[:, :split], cache=cache)
    second, _ = model.forward(ids[:, split:], cache=cache)
    np.testing.assert_allclose(np.concatenate([first, second], axis=1), full, atol=ATOL, rtol=0)


@given(st.sampled_from(["gemma2", "gemma3"]), st.integers(0, 10_000))
def test_window_at_least_length_equals_global_attention(family, seed):
    T = 11
    local = tiny_config(family, window=T)
    params = tiny_params(local, seed)
    glob = local.replace(layer_types=("global",) * local.num_layers,
                         rope_base_local=local.rope_base_global)
    ids = ids_for(local, T, seed)
    # give local layers the global base so only the mask could differ
    local = local.replace(rope_base_local=local.rope_base_global)
    np.testing.assert_allclose(build(local, params).forward(ids)[0],
                               build(glob, params).forward(ids)[0], atol=ATOL, rtol=0)


@given(families, st.integers(0, 10_000))
def test_gqa_with_repeated_kv_weights_equals_mha(family, seed):
    gqa = tiny_config(family, num_heads=6, num_kv_heads=2)
    mha = gqa.replace(num_kv_heads=6)
    params = tiny_params(gqa, seed)
    mha_params = dict(params)
    H = gqa.head_dim
    for i in range(gqa.num_layers):
        for proj in ("k_proj", "v_proj"):
            w = params[f"layers.{i}.{proj}"].reshape(2, H, -1)  # [K, H, D]
            mha_params[f"layers.{i}.{proj}"] = np.repeat(w, 3, axis=0).reshape(6 * H, -1)
    ids = ids_for(gqa, 9, seed)
    np.testing.assert_allclose(build(gqa, params).forward(ids)[0],
                               build(mha, mha_params).forward(ids)[0], atol=ATOL, rtol=0)


def test_ring_buffer_keeps_only_the_window():
    config = tiny_config("gemma3", window=4)
    model = build(config, tiny_params(config))
    cache = model.new_cache(max_len=64)
    model.forward(ids_for(config, 30, 0), cache=cache)
    for i, layer in enumerate(cache.layers):
        slots = layer.positions.shape[1]
        assert slots == (4 if config.is_local(i) else 64)
        if config.is_local(i):
            assert sorted(layer.positions[0].tolist()) == [26, 27, 28, 29]


def test_last_only_equals_last_row():
    config = tiny_config("gemma2")
    model = build(config, tiny_params(config))
    ids = ids_for(config, 8, 3)
    np.testing.assert_allclose(model.forward(ids, last_only=True)[0][:, 0],
                               model.forward(ids)[0][:, -1], atol=ATOL, rtol=0)


def test_cache_overflow_and_context_errors():
    config = tiny_config("gemma")
    model = build(config, tiny_params(config))
    cache = model.new_cache(max_len=4)
    with pytest.raises(ValueError, match="larger max_len"):
        model.forward(ids_for(config, 6, 0), cache=cache)
    with pytest.raises(ValueError, match="context"):
        model.new_cache(max_len=config.max_position + 1)
    with pytest.raises(ValueError, match="context"):
        model.forward(ids_for(config, 2, 0), positions=np.array([[0, config.max_position]]))


@pytest.mark.parametrize("bad, match", [
    (dict(num_heads=5, num_kv_heads=2), "multiple"),
    (dict(layer_types=("global",)), "layer_types"),
    (dict(family="gemma4"), "family"),
    (dict(head_dim=7), "even"),
    (dict(d_model=0), "positive"),
])
def test_config_validation(bad, match):
    fields = tiny_config("gemma2").to_dict()
    fields.update(bad)
    with pytest.raises(ValueError, match=match):
        GemmaConfig.from_dict(fields)
