"""Random-weight minigemma models for consistency tests (no checkpoint, no oracle needed)."""
from minigemma.backends import get_backend
from minigemma.models.config import GemmaConfig
from minigemma.models.gemma import Transformer, parameter_shapes
from minigemma.models.random_weights import random_params


def tiny_config(family="gemma3", num_heads=4, num_kv_heads=2, head_dim=12, d_model=32,
                num_layers=3, window=5, vocab=97, **overrides):
    kinds = {"gemma": ("global",) * num_layers,
             "gemma2": tuple("local" if i % 2 == 0 else "global" for i in range(num_layers)),
             "gemma3": tuple("global" if (i + 1) % 3 == 0 else "local" for i in range(num_layers))}
    fields = dict(family=family, vocab_size=vocab, d_model=d_model, num_layers=num_layers,
                  num_heads=num_heads, num_kv_heads=num_kv_heads, head_dim=head_dim, ffn_dim=40,
                  layer_types=kinds[family], sliding_window=None if family == "gemma" else window,
                  max_position=256, qk_norm=family == "gemma3", post_norms=family != "gemma",
                  attn_softcap=20.0 if family == "gemma2" else None,
                  final_softcap=15.0 if family == "gemma2" else None,
                  rope_base_global=1e4 if family != "gemma3" else 1e6)
    fields.update(overrides)
    return GemmaConfig(**fields)


def tiny_params(config, seed=0, std=0.2):
    """Random weights for a tiny Gemma config (minigemma.models.random_weights on its shapes)."""
    return random_params(parameter_shapes(config), seed, std)


def build(config, params, backend="numpy"):
    be = get_backend(backend)
    return Transformer(config, {k: be.prepare_weight(v) for k, v in params.items()}, be)
