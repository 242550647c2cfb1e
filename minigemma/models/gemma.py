"""The Gemma 1 / 2 / 3 decoder, driven by a GemmaConfig (docs/architecture.md#gemma-decoder).

    h = E[ids] · sqrt(D)                            sqrt(D) rounded to the embedding's dtype
    for each layer:
        a = Attention(RMSNorm_pre_attn(h))          local (windowed) or global per config
        h = h + (RMSNorm_post_attn(a) if post_norms else a)
        m = MLP(RMSNorm_pre_mlp(h))
        h = h + (RMSNorm_post_mlp(m) if post_norms else m)
    logits = softcap(RMSNorm_final(h) @ Eᵀ)         cap only when the config sets one

Gemma 1 has pre-norms only; Gemma 2 adds the post-norms ("sandwich") and the soft-caps; Gemma 3
keeps the post-norms, drops the caps and normalises q and k per head (QK-norm) before RoPE.
The attention block, the MLP, the tied head and the layer loop are the shared blocks
(`minigemma.models.blocks`); this file says how a Gemma layer puts them together. Parameters
use minigemma's names (`parameter_shapes`); checkpoint names stay in the converters.
"""
from minigemma.models import blocks
from minigemma.models.kv_cache import new_kv_cache
from minigemma.ops.embedding import embedding_scale


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


def embedding_scale_for(config, embedding_dtype):
    """sqrt(D) rounded to the dtype the embedding was released in, as HF, JAX and gemma_pytorch
    do (bf16 weights: sqrt(640) = 25.298… becomes 25.25; docs/architecture.md#embedding-scale)."""
    return embedding_scale(config.d_model, embedding_dtype)


class Transformer:
    """Gemma 1/2/3 forward pass over backend-resident parameters.

    `embedding_dtype` is the dtype the checkpoint's embedding was released in ("float32",
    "bfloat16", "float16"); it fixes the rounding of the embedding scale.
    """
    parameter_shapes = staticmethod(parameter_shapes)
    embedding_scale_for = staticmethod(embedding_scale_for)

    def __init__(self, config, params, backend, embedding_dtype="float32"):
        self.config = config
        self.params = params  # {name: backend weight}
        self.backend = backend
        self.embed_scale = embedding_scale_for(config, embedding_dtype)

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
        return blocks.forward(self.backend, self.params, self.config, self.layer,
                              self.embed_scale, ids, positions, cache, last_only)

    def layer(self, i, h, positions, layer_cache=None):
        """Decoder layer i: h [B, T, D] -> [B, T, D]; `layer_cache` (LayerKV or None)."""
        be, c, p = self.backend, self.config, self.params
        w = f"layers.{i}."
        a = self.attention_block(i, be.rms_norm(h, p[w + "pre_attn_norm"], c.rms_eps),
                                 positions, layer_cache)
        if c.post_norms:
            a = be.rms_norm(a, p[w + "post_attn_norm"], c.rms_eps)
        h = h + a
        m = self.mlp_block(i, be.rms_norm(h, p[w + "pre_mlp_norm"], c.rms_eps))
        if c.post_norms:
            m = be.rms_norm(m, p[w + "post_mlp_norm"], c.rms_eps)
        return h + m

    def attention_block(self, i, x, positions, layer_cache=None):
        """Attention of layer i on its normed input x [B, T, D] -> [B, T, D]: windowed on local
        layers, with QK-norm (Gemma 3) or a score soft-cap (Gemma 2) as the config says."""
        c = self.config
        base, scale = c.rope_for(i)
        return blocks.attention_block(
            self.backend, self.params, f"layers.{i}.", x, positions, layer_cache,
            num_heads=c.num_heads, num_kv_heads=c.num_kv_heads, head_dim=c.head_dim,
            rope_base=base, rot_dim=c.head_dim, rope_scale=scale, query_scale=c.query_scale,
            window=c.sliding_window if c.is_local(i) else None, softcap=c.attn_softcap,
            qk_norm=c.qk_norm, rms_eps=c.rms_eps)

    def mlp_block(self, i, x):
        """GeGLU MLP of layer i (no biases): x [B, T, D] -> [B, T, D], with the tanh GELU or,
        when the config asks for it, the exact one."""
        return blocks.gated_mlp(self.backend, self.params, f"layers.{i}.", x,
                                approximate=self.config.gelu_approximate)
