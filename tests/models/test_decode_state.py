"""decode_state_bytes against the caches minigemma actually builds, for both families."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minigemma.backends import get_backend
from minigemma.models.config import GriffinConfig, preset
from minigemma.models.decode_state import decode_state_bytes
from minigemma.models.griffin import Griffin, parameter_shapes
from minigemma.models.kv_cache import LayerKV, new_kv_cache
from minigemma.models.random_weights import random_params as random_weights
from minigemma.models.recurrent_state import new_griffin_cache
from minigemma.ops.attention import EMPTY_SLOT

from helpers.random_models import build, tiny_config, tiny_params

MiB = 2 ** 20


def tiny_griffin(window=4):
    config = GriffinConfig(vocab_size=61, d_model=24, num_layers=5, num_heads=2, lru_width=20,
                           ffn_dim=28, attention_window=window, conv_width=3, num_kv_heads=1,
                           block_pattern=("recurrent", "recurrent", "attention"),
                           max_position=256)
    be = get_backend("numpy")
    params = random_weights(parameter_shapes(config), seed=2)
    return Griffin(config, {k: be.prepare_weight(v) for k, v in params.items()}, be)


def filled(model, context, batch):
    """A fresh cache of `model` after a forward over `context` tokens."""
    ids = np.random.default_rng(context).integers(0, model.config.vocab_size, (batch, context))
    ids[:, 0] = model.config.bos_id
    cache = model.new_cache(batch=batch, max_len=context)
    model.forward(ids, cache=cache)
    return cache


def empty_slot_bytes(cache):
    """Bytes of the cache's slots that hold no key (EMPTY_SLOT)."""
    total = 0
    for layer in cache.layers:
        if isinstance(layer, LayerKV):
            per_slot = (layer.keys.nbytes + layer.values.nbytes
                        + layer.positions.nbytes) // layer.positions.size
            total += int((layer.positions == EMPTY_SLOT).sum()) * per_slot
    return total


@given(st.sampled_from(["gemma", "gemma2", "gemma3"]), st.integers(1, 6), st.integers(1, 20),
       st.integers(1, 3))
def test_gemma_count_equals_a_filled_cache(family, window, context, batch):
    config = tiny_config(family, window=window, num_layers=4)  # local and global layers
    cache = filled(build(config, tiny_params(config)), context, batch)
    assert all(int((layer.positions == EMPTY_SLOT).sum()) == 0 for layer in cache.layers)
    assert decode_state_bytes(config, context, batch) == cache.nbytes()


@given(st.integers(1, 6), st.integers(1, 20), st.integers(1, 3))
def test_griffin_count_equals_a_filled_cache(window, context, batch):
    model = tiny_griffin(window)
    cache = filled(model, context, batch)
    if context >= window:
        assert decode_state_bytes(model.config, context, batch) == cache.nbytes()
    # below the window the cache is allocated whole; what it holds is the count
    assert decode_state_bytes(model.config, context, batch) == (
        cache.nbytes() - empty_slot_bytes(cache))


def test_griffin_layers_are_not_counted_as_global_attention():
    rg = preset("recurrentgemma-2b")
    assert decode_state_bytes(rg, 8192) == new_griffin_cache(rg, 1, np).nbytes()
    assert round(decode_state_bytes(rg, 8192) / MiB, 1) == 32.8
    assert decode_state_bytes(rg, 100_000) == decode_state_bytes(rg, 8192)  # constant memory


@pytest.mark.parametrize("name, context", [("gemma3-270m", 8192), ("gemma2-2b", 5000),
                                           ("gemma-2b", 300)])
def test_presets_with_local_and_global_layers_equal_their_cache(name, context):
    config = preset(name)
    assert decode_state_bytes(config, context) == new_kv_cache(config, 1, context, np).nbytes()
    assert decode_state_bytes(config, context, batch=3) == 3 * decode_state_bytes(config, context)


def test_recurrent_state_stays_float32_at_other_dtypes():
    config = tiny_griffin().config.replace(block_pattern=("recurrent",))
    L, W = config.lru_width, config.conv_width
    per_layer = {b: decode_state_bytes(config, 10, dtype_bytes=b) // config.num_layers
                 for b in (2, 4)}
    assert per_layer == {2: (W - 1) * L * 2 + L * 4, 4: (W - 1) * L * 4 + L * 4}
