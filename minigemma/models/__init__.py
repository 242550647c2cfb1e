"""The networks, built from the ops through a backend.

    config           frozen, validated configs of both families and a preset per released size
    gemma            Gemma 1 / 2 / 3 decoder: parameter shapes and the forward pass
    griffin          RecurrentGemma (Griffin): recurrent and local-attention blocks
    kv_cache         ring-buffer (local) and flat (global) key/value caches; positions
    recurrent_state  Griffin's fixed-size decoding state
    random_weights   random parameters of any network shape, for study and tests
"""
