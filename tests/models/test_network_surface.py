"""Both networks have one public surface, and its pieces compose into `forward`."""
import inspect

import numpy as np
import pytest

from minigemma.backends import get_backend
from minigemma.models.blocks import tied_head
from minigemma.models.config import GriffinConfig, preset
from minigemma.models.gemma import Transformer
from minigemma.models.griffin import Griffin, parameter_shapes
from minigemma.models.random_weights import random_params as random_weights

from helpers.random_models import build, tiny_config, tiny_params

BE = get_backend("numpy")


def tiny_griffin():
    config = GriffinConfig(vocab_size=61, d_model=24, num_layers=4, num_heads=2, lru_width=20,
                           ffn_dim=28, attention_window=3, conv_width=3, final_softcap=12.0,
                           block_pattern=("recurrent", "attention"), max_position=256)
    params = random_weights(parameter_shapes(config), seed=3)
    return Griffin(config, {k: BE.prepare_weight(v) for k, v in params.items()}, BE)


def tiny_transformer(family):
    config = tiny_config(family, window=3)
    return build(config, tiny_params(config, 3))


NETWORKS = [lambda: tiny_transformer("gemma"), lambda: tiny_transformer("gemma2"),
            lambda: tiny_transformer("gemma3"), tiny_griffin]


def public(cls):
    return {name for name in dir(cls) if not name.startswith("_")}


def test_the_two_networks_have_one_surface():
    assert public(Griffin) == public(Transformer) | {"recurrent_block"}
    for cls in (Transformer, Griffin):
        assert str(inspect.signature(cls.__init__)) == (
            "(self, config, params, backend, embedding_dtype='float32')")
        for name in ("new_cache", "forward", "layer", "attention_block", "mlp_block"):
            assert inspect.signature(getattr(cls, name)) == inspect.signature(
                getattr(Transformer, name)), (cls.__name__, name)
    for net in (NETWORKS[0](), NETWORKS[-1]()):
        assert {"config", "params", "backend", "embed_scale"} <= set(vars(net))


@pytest.mark.parametrize("make", NETWORKS)
def test_embedding_layers_and_head_compose_into_forward(make):
    net = make()
    c = net.config
    ids = np.random.default_rng(0).integers(0, c.vocab_size, (2, 9))
    ids[:, 0] = c.bos_id
    positions = np.broadcast_to(np.arange(9), ids.shape)
    h = BE.embed(net.params["embedding"], ids, net.embed_scale)
    for i in range(c.num_layers):
        h = net.layer(i, h, positions)
    logits = tied_head(BE, h, net.params["embedding"], net.params["final_norm"], c.rms_eps,
                       c.final_softcap)
    np.testing.assert_array_equal(logits, net.forward(ids)[0])


def test_each_family_decides_its_embedding_scale():
    gemma3, rg = preset("gemma3-270m"), preset("recurrentgemma-2b")
    assert Transformer(gemma3, {}, BE, "bfloat16").embed_scale == np.float32(25.25)
    assert Transformer(gemma3, {}, BE, "float32").embed_scale == np.float32(np.sqrt(640))
    for dtype in ("float32", "bfloat16"):  # RecurrentGemma: bf16 whatever the weights' dtype
        assert Griffin(rg, {}, BE, dtype).embed_scale == np.float32(50.5)


@pytest.mark.parametrize("make", NETWORKS)
def test_a_cache_of_another_batch_is_refused(make):
    net = make()
    with pytest.raises(ValueError, match="holds 1 sequences"):
        net.forward(np.array([[net.config.bos_id], [net.config.bos_id]]),
                    cache=net.new_cache(batch=1, max_len=8))
