"""Bytes a decoder keeps between steps for a context of n tokens, for either family.

    attention layer (both)   S · B · (2·K·H·b + 8)         keys, values, the int64 position of
                                                           each slot; S slots, see below
    recurrent layer          B · (W_conv − 1) · L · b      the last conv inputs
                             + B · L · 4                   the RG-LRU state h, always float32

    Gemma global layer       S = n
    Gemma local layer        S = min(n, sliding_window)    a ring buffer of the window
    Griffin attention layer  S = min(n, attention_window)  a ring buffer of the window

b = `dtype_bytes` (4: minigemma keeps keys, values and conv inputs in float32). The RG-LRU
state stays float32 at any activation dtype, because the scan accumulates in float32
(docs/architecture.md#rg-lru). A query sees W keys, its own included (HF convention), or
W + 1 (official): either way the W slots of the ring hold every earlier key it reads, since the
new keys are attended to before they are stored.

The counts are those of the caches minigemma builds (`new_kv_cache(config, B, max_len=n)`,
`new_griffin_cache`), which a test checks. Griffin's cache allocates its whole window up front,
so below `attention_window` tokens it holds more than this needed amount.
"""
from minigemma.models.config import GriffinConfig

POSITION_BYTES = 8  # every cache slot remembers the int64 position of its key


def decode_state_bytes(config, context, batch=1, dtype_bytes=4):
    """Bytes of decoding state (KV caches, conv and RG-LRU states) for `context` tokens.

    recurrentgemma-2b at 8192 tokens: 32.8 MiB (8 ring buffers of 2048 slots + 18 small
    recurrent states), where counting every layer as global attention would give 416 MiB.
    """
    per_slot = 2 * config.num_kv_heads * config.head_dim * dtype_bytes + POSITION_BYTES
    total = 0
    for i in range(config.num_layers):
        if isinstance(config, GriffinConfig):
            if not config.is_attention(i):
                conv = (config.conv_width - 1) * config.lru_width * dtype_bytes
                rglru = config.lru_width * 4  # float32 whatever dtype_bytes says
                total += batch * (conv + rglru)
                continue
            slots = min(context, config.attention_window)
        else:
            slots = min(context, config.sliding_window) if config.is_local(i) else context
        total += batch * slots * per_slot
    return total
