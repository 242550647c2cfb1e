"""The Gemma 1 / 2 / 3 decoder, driven by a GemmaConfig (docs/architecture.md#gemma-decoder).

    h = E[ids] · sqrt(D)
    for each layer:
        a = Attention(RMSNorm_pre_attn(h))          local (windowed) or global per config
        h = h + (RMSNorm_post_attn(a) if post_norms else a)
        m = MLP(RMSNorm_pre_mlp(h))
        h = h + (RMSNorm_post_mlp(m) if post_norms else m)
    logits = softcap(RMSNorm_final(h) @ Eᵀ)         cap only when the config sets one

Gemma 1 has pre-norms only; Gemma 2 adds the post-norms ("sandwich") and the soft-caps; Gemma 3
keeps the post-norms, drops the caps and normalises q and k per head (QK-norm) before RoPE.
Parameters use minigemma's names (`parameter_shapes`); checkpoint names stay in the converters.
"""
from minigemma.models.kv_cache import new_kv_cache, token_positions
from minigemma.ops.embedding import embedding_scale, tied_head


def parameter_shapes(config):
    """{name: shape} of every parameter a GemmaConfig model has, in load order."""
    c = config
    D, N, K, H, F = c.d_model, c.num_heads, c.num_kv_heads, c.head_dim, c.ffn_dim
    shapes = {"embedding": (c.vocab_size, D)}
    for i in range(c.num_layers):
        p = f"layers.{i}."
        shapes[p + "pre_attn_norm"] = (D,)
        shapes[p + "q_proj"] = (N * H, D)
        shapes[p + "k_proj"] = (K * H, D)
        shapes[p + "v_proj"] = (K * H, D)
        shapes[p + "o_proj"] = (D, N * H)
        if c.qk_norm:
            shapes[p + "q_norm"] = (H,)
            shapes[p + "k_norm"] = (H,)
        if c.post_norms:
            shapes[p + "post_attn_norm"] = (D,)
        shapes[p + "pre_mlp_norm"] = (D,)
        if c.post_norms:
            shapes[p + "post_mlp_norm"] = (D,)
        shapes[p + "gate_proj"] = (F, D)
        shapes[p + "up_proj"] = (F, D)
        shapes[p + "down_proj"] = (D, F)
    shapes["final_norm"] = (D,)
    return shapes


def is_norm(name):
    return name.endswith("_norm")


class Transformer:
    """Gemma 1/2/3 forward pass over backend-resident parameters."""
    parameter_shapes = staticmethod(parameter_shapes)

    def __init__(self, config, params, backend, embedding_dtype="float32"):
        self.config = config
        self.params = params  # {name: backend weight}
        self.backend = backend
        self.embed_scale = embedding_scale(config.d_model, embedding_dtype)

    def new_cache(self, batch=1, max_len=None):
        """An empty KV cache for `batch` sequences of up to `max_len` positions."""
        max_len = self.config.max_position if max_len is None else max_len
        return new_kv_cache(self.config, batch, max_len, self.backend.xp)

    def forward(self, ids, positions=None, cache=None, last_only=False):
        """ids [B, T] int -> (logits [B, T, V] or [B, 1, V] if last_only, cache).

        Without a cache the T tokens attend to each other only (positions default to 0…T−1).
        With a cache they also attend to what it holds, and are added to it; positions default
        to continuing where the cache stopped.
        """
        be, c, p = self.backend, self.config, self.params
        ids, positions = token_positions(ids, positions, cache, c.max_position, be.xp)
        h = be.embed(p["embedding"], ids, self.embed_scale)  # [B, T, D]
        for i in range(c.num_layers):
            layer_cache = cache.layers[i] if cache is not None else None
            h = self.layer(i, h, positions, layer_cache)
        if last_only:
            h = h[:, -1:]
        logits = tied_head(be, h, p["embedding"], p["final_norm"], c.rms_eps, c.final_softcap)
        if cache is not None:
            cache.next_position = int(positions.max()) + 1
        return logits, cache

    def layer(self, i, h, positions, layer_cache=None):
        """One decoder layer: h [B, T, D] -> [B, T, D]."""
        be, c, p = self.backend, self.config, self.params
        w = f"layers.{i}."
        a = self.attention_block(i, be.rms_norm(h, p[w + "pre_attn_norm"], c.rms_eps), positions,
                            layer_cache)
        if c.post_norms:
            a = be.rms_norm(a, p[w + "post_attn_norm"], c.rms_eps)
        h = h + a
        x = be.rms_norm(h, p[w + "pre_mlp_norm"], c.rms_eps)
        m = be.linear(be.geglu(be.linear(x, p[w + "gate_proj"]), be.linear(x, p[w + "up_proj"])),
                      p[w + "down_proj"])
        if c.post_norms:
            m = be.rms_norm(m, p[w + "post_mlp_norm"], c.rms_eps)
        return h + m

    def attention_block(self, i, x, positions, layer_cache=None):
        """Attention of layer i on normed input x [B, T, D] -> [B, T, D]."""
        be, c, p = self.backend, self.config, self.params
        w = f"layers.{i}."
        B, T, _ = x.shape
        q = be.linear(x, p[w + "q_proj"]).reshape(B, T, c.num_heads, c.head_dim)
        k = be.linear(x, p[w + "k_proj"]).reshape(B, T, c.num_kv_heads, c.head_dim)
        v = be.linear(x, p[w + "v_proj"]).reshape(B, T, c.num_kv_heads, c.head_dim)
        if c.qk_norm:
            q = be.rms_norm(q, p[w + "q_norm"], c.rms_eps)
            k = be.rms_norm(k, p[w + "k_norm"], c.rms_eps)
        base, scale = c.rope_for(i)
        q = be.rope(q, positions, base, c.head_dim, scale)
        k = be.rope(k, positions, base, c.head_dim, scale)
        k_pos = positions
        if layer_cache is not None:
            k, v, k_pos = layer_cache.update(k, v, positions, be.xp)  # [B, S, K, H]
        out = be.attention(q, k, v, positions, k_pos, scale=c.query_scale,
                           window=c.sliding_window if c.is_local(i) else None,
                           softcap=c.attn_softcap)  # [B, T, N, H]
        return be.linear(out.reshape(B, T, c.num_heads * c.head_dim), p[w + "o_proj"])
