"""The blocks both networks are built from: attention, gated MLP, tied output head, layer loop.

Gemma (`gemma.Transformer`) and RecurrentGemma (`griffin.Griffin`) differ in their layers and
their temporal block; the rest is one piece of code, here. Each block is a plain function of
the backend `be`, the parameter dict `p` (minigemma's names), the name prefix of its layer
(e.g. "layers.3.") and the config values it needs, so the equation is read once and both
families run it (docs/architecture.md#gemma-decoder, docs/architecture.md#recurrentgemma).

    forward      h = E[ids] · s;  h = layer_i(h) for i = 0…n−1;  logits = tied_head(h)
    attention    o = softmax(softcap(q kᵀ · scale) + mask) v over RoPE'd q, k;  out = o W_oᵀ
    gated MLP    (gelu_tanh(x W_gateᵀ + b_gate) ⊙ (x W_upᵀ + b_up)) W_downᵀ + b_down
    tied head    logits = softcap(RMSNorm_final(h) @ Eᵀ)

Every kernel-worthy computation goes through `be`; what stays here is reshapes and sums.
"""
from minigemma.models.kv_cache import token_positions


def dense(be, p, name, x, bias=False):
    """x [..., I] -> x Wᵀ + b [..., O], with W = p[name] [O, I] and b = p[name + "_bias"] [O]
    (no b unless `bias`)."""
    y = be.linear(x, p[name])  # [..., O]
    return y + p[name + "_bias"] if bias else y


def attention_block(be, p, prefix, x, positions, layer_cache=None, *, num_heads, num_kv_heads,
                    head_dim, rope_base, rot_dim, rope_scale=1.0, query_scale, window=None,
                    softcap=None, qk_norm=False, rms_eps=1e-6, out_bias=False):
    """Self-attention of one layer on its normed input: x [B, T, D] -> [B, T, D].

        q = x W_qᵀ,  k = x W_kᵀ,  v = x W_vᵀ               N query heads, K kv heads of width H
        q, k = RMSNorm(q), RMSNorm(k)                      per head, only if `qk_norm` (Gemma 3)
        q, k = RoPE(q, pos), RoPE(k, pos)                  first rot_dim dims; positions / scale
        k, v = cached keys and values, then these          only if `layer_cache` is given
        o = softmax(softcap(q kᵀ · query_scale) + mask) v  causal; `window` keys, own included
        out = o W_oᵀ (+ b_o if `out_bias`)

    Query head n reads kv head n // (N/K) (GQA; K = 1 is MQA). The cache (`LayerKV`) is
    written in place: a ring buffer on windowed layers, a flat buffer on global ones.
    """
    B, T, _ = x.shape
    N, K, H = num_heads, num_kv_heads, head_dim
    q, k, v = be.linear_many(x, [p[prefix + n] for n in ("q_proj", "k_proj", "v_proj")])
    q = q.reshape(B, T, N, H)  # [B, T, N, H]
    k, v = k.reshape(B, T, K, H), v.reshape(B, T, K, H)  # [B, T, K, H]
    if qk_norm:
        q = be.rms_norm(q, p[prefix + "q_norm"], rms_eps)
        k = be.rms_norm(k, p[prefix + "k_norm"], rms_eps)
    q = be.rope(q, positions, rope_base, rot_dim, rope_scale)
    k = be.rope(k, positions, rope_base, rot_dim, rope_scale)
    k_pos = positions
    if layer_cache is not None:
        k, v, k_pos = layer_cache.update(k, v, positions, be.xp)  # [B, S, K, H]
    o = be.attention(q, k, v, positions, k_pos, scale=query_scale, window=window,
                     softcap=softcap)  # [B, T, N, H]
    return dense(be, p, prefix + "o_proj", o.reshape(B, T, N * H), out_bias)  # [B, T, D]


def gated_mlp(be, p, prefix, x, bias=False, approximate="tanh"):
    """The GeGLU feed-forward block: x [B, T, D] -> [B, T, D], hidden width F.

        out = (gelu_tanh(x W_gateᵀ + b_gate) ⊙ (x W_upᵀ + b_up)) W_downᵀ + b_down

    Gemma has no biases; RecurrentGemma has all three (`bias`). approximate="none" takes the
    exact GELU instead of the tanh one (a Gemma 2 / 3 config may ask for it).
    """
    w_gate, w_up = p[prefix + "gate_proj"], p[prefix + "up_proj"]
    if bias:
        gate, up = be.linear_many(x, [w_gate, w_up])  # [B, T, F] each
        hidden = be.geglu(gate + p[prefix + "gate_proj_bias"], up + p[prefix + "up_proj_bias"],
                          approximate)
    else:
        hidden = be.geglu_linear(x, w_gate, w_up, approximate)  # [B, T, F]
    return dense(be, p, prefix + "down_proj", hidden, bias)  # [B, T, D]


def tied_head(be, h, table, final_norm, eps, cap=None):
    """The output head, which shares the embedding matrix E: h [B, T, D] -> logits [B, T, V].

        logits = cap · tanh((RMSNorm(h) @ Eᵀ) / cap)      no soft-cap when `cap` is None
    """
    logits = be.linear(be.rms_norm(h, final_norm, eps), table)  # [B, T, V]
    return logits if cap is None else be.softcap(logits, cap)


def forward(be, p, config, layer, embed_scale, ids, positions=None, cache=None,
            last_only=False):
    """ids [B, T] int -> (logits [B, T, V], or [B, 1, V] if `last_only`, cache).

        h_0 = E[ids] · embed_scale
        h_{i+1} = layer(i, h_i, positions, cache.layers[i])       i = 0 … num_layers − 1
        logits = tied_head(h_n)                                   last position only if asked

    `layer(i, h, positions, layer_cache)` is the network's layer; `config` gives num_layers,
    max_position, rms_eps and final_softcap (fields of both families' configs). Without a
    cache the T tokens see each other only, at positions 0…T−1 unless given. With one they
    also see what it holds, are added to it, and by default continue where it stopped.
    """
    ids, positions = token_positions(ids, positions, cache, config.max_position, be.xp)
    if cache is not None and cache.batch != ids.shape[0]:
        raise ValueError(f"the cache holds {cache.batch} sequences but ids has "
                         f"{ids.shape[0]} rows")
    h = be.embed(p["embedding"], ids, embed_scale)  # [B, T, D]
    for i in range(config.num_layers):
        h = layer(i, h, positions, None if cache is None else cache.layers[i])
    if last_only:
        h = h[:, -1:]  # [B, 1, D]: the head (the largest matmul) on one position per row
    logits = tied_head(be, h, p["embedding"], p["final_norm"], config.rms_eps,
                       config.final_softcap)  # [B, T, V]
    if cache is not None:
        cache.next_position = int(positions.max()) + 1
    return logits, cache
