"""The components, one equation per file: pure functions of arrays and an array module `xp`.

Read in this order; each file opens with its paper, its equation and which symbol is which
argument:

    norms       RMSNorm with Gemma's (1 + w) gain
    embedding   token lookup scaled by √D, rounded to the weight dtype; the tied output head
    rope        rotary position embedding, half-split layout; linear and YaRN scaling
    attention   grouped-query attention from positions: causal, sliding window, soft-cap
    softcap     cap · tanh(x / cap)
    mlp         GeGLU with the tanh GELU (or the exact GELU a config asks for)
    conv1d      RecurrentGemma's causal depthwise temporal convolution
    rglru       RecurrentGemma's Real-Gated Linear Recurrent Unit: gates and scan
    bfloat16    bf16 rounding without a bf16 dtype (for the embedding scale)

The NumPy backend (`minigemma.backends.reference`) calls these functions; faster backends are
checked against them.
"""
