"""Decoding state of a Griffin (RecurrentGemma) model: its size does not grow with the tokens.

What each layer keeps (docs/architecture.md#griffin-decoding-state):

| layer     | what is kept                                          | shape                   |
|-----------|-------------------------------------------------------|-------------------------|
| recurrent | `conv`: the last W_conv − 1 inputs of the Conv1D      | [B, W_conv − 1, L] f32  |
|           | `rglru`: the RG-LRU state h                           | [B, L] float32          |
| attention | ring buffer of keys (post-RoPE), values and positions | [B, W, K, H] (+ [B, W]) |

The attention layers reuse the Gemma ring buffer (`minigemma.models.kv_cache.LayerKV`,
ring=True) with W = `attention_window` slots: a query sees at most W − 1 (HF convention) or W
(official convention) earlier keys, and both fit. The container is passed into `forward` and
returned by it; the model replaces the recurrent arrays and writes the ring buffers in place.
`minigemma.models.decode_state.decode_state_bytes` says how many bytes it takes.
"""
from dataclasses import dataclass, field

from minigemma.models.kv_cache import new_layer_kv


@dataclass
class RecurrentState:
    conv: object  # [B, W_conv − 1, L] float32: the last inputs of the Conv1D
    rglru: object  # [B, L] float32: h_t of the RG-LRU


@dataclass
class GriffinCache:
    layers: list  # RecurrentState or LayerKV, one per layer
    batch: int
    next_position: int = 0  # where the next token goes when positions are not given
    meta: dict = field(default_factory=dict)

    def arrays(self):
        for layer in self.layers:
            if isinstance(layer, RecurrentState):
                yield from (layer.conv, layer.rglru)
            else:
                yield from (layer.keys, layer.values, layer.positions)

    def nbytes(self):
        return sum(int(a.nbytes) for a in self.arrays())


def new_recurrent_state(config, batch, xp):
    """The state of one recurrent layer before any token: zero conv inputs, h_0 = 0."""
    return RecurrentState(
        conv=xp.zeros((batch, config.conv_width - 1, config.lru_width), dtype=xp.float32),
        rglru=xp.zeros((batch, config.lru_width), dtype=xp.float32))


def new_griffin_cache(config, batch, xp):
    """An empty (all-zero, no keys) decoding state for a GriffinConfig and `batch` sequences."""
    layers = []
    for i in range(config.num_layers):
        if config.is_attention(i):
            layers.append(new_layer_kv(batch, config.attention_window, config.num_kv_heads,
                                       config.head_dim, True, xp,  # ring of the window
                                       window=config.attention_span))
        else:
            layers.append(new_recurrent_state(config, batch, xp))
    return GriffinCache(layers=layers, batch=batch)
