"""RecurrentGemma: the Griffin network (De et al. 2024; Botev et al. 2024;
docs/architecture.md#recurrentgemma).

    h = E[ids] · bf16(sqrt(D))                       the scale is rounded to bf16, always
    for each layer (pattern recurrent, recurrent, attention, repeated):
        r = h + Temporal(RMSNorm_temporal(h))        recurrent block or local MQA block
        h = r + MLP(RMSNorm_mlp(r))
    logits = 30 · tanh(RMSNorm_final(h) @ Eᵀ / 30)

    Recurrent block (width L):   y = gelu_tanh(x W_yᵀ + b_y)
                                 u = RG-LRU(Conv1D(x W_xᵀ + b_x))
                                 out = (u ⊙ y) W_outᵀ + b_out
    Local attention block:       MQA over the last W keys (HF) or W + 1 (official, see
                                 GriffinConfig), RoPE on the first half of each head,
                                 scale H^(−½), output projection with bias
    MLP (with biases):           (gelu_tanh(x W_gateᵀ + b_gate) ⊙ (x W_upᵀ + b_up)) W_downᵀ + b_down

Only pre-norms, no attention soft-cap. The attention block, the MLP, the tied head and the
layer loop are the shared blocks (`minigemma.models.blocks`); the recurrent block is Griffin's
own. A token at position 0 resets the RG-LRU, so positions must start at 0 on BOS
(docs/numerics.md#positions-start-at-0). Packed documents (a position 0 after the start)
reset the RG-LRU but not the Conv1D, as in HF; the official code also masks the conv
(docs/numerics.md#conv-across-documents). The decoding cache (`recurrent_state`) holds conv
inputs, RG-LRU states and a window-sized ring buffer per attention layer: constant memory
however many tokens are generated. Parameters use minigemma's names (`parameter_shapes`);
checkpoint names stay in the converters.
"""
from minigemma.models import blocks
from minigemma.models.recurrent_state import new_griffin_cache, new_recurrent_state
from minigemma.ops.embedding import embedding_scale


def parameter_shapes(config):
    """{name: shape} of every parameter a GriffinConfig model has, in load order."""
    c = config
    D, L, F, Wc = c.d_model, c.lru_width, c.ffn_dim, c.conv_width
    N, K, H = c.num_heads, c.num_kv_heads, c.head_dim
    nb, bs = c.num_heads, c.lru_width // c.num_heads  # RG-LRU gate blocks
    shapes = {"embedding": (c.vocab_size, D)}
    for i in range(c.num_layers):
        p = f"layers.{i}."
        shapes[p + "temporal_norm"] = (D,)
        if c.is_attention(i):
            shapes[p + "q_proj"] = (N * H, D)
            shapes[p + "k_proj"] = (K * H, D)
            shapes[p + "v_proj"] = (K * H, D)
            shapes[p + "o_proj"] = (D, N * H)
            shapes[p + "o_proj_bias"] = (D,)
        else:
            shapes[p + "y_proj"] = (L, D)
            shapes[p + "y_proj_bias"] = (L,)
            shapes[p + "x_proj"] = (L, D)
            shapes[p + "x_proj_bias"] = (L,)
            shapes[p + "conv_weight"] = (Wc, L)
            shapes[p + "conv_bias"] = (L,)
            shapes[p + "rglru_a_param"] = (L,)
            shapes[p + "input_gate_weight"] = (nb, bs, bs)
            shapes[p + "input_gate_bias"] = (nb, bs)
            shapes[p + "recurrence_gate_weight"] = (nb, bs, bs)
            shapes[p + "recurrence_gate_bias"] = (nb, bs)
            shapes[p + "out_proj"] = (D, L)
            shapes[p + "out_proj_bias"] = (D,)
        shapes[p + "mlp_norm"] = (D,)
        shapes[p + "gate_proj"] = (F, D)
        shapes[p + "gate_proj_bias"] = (F,)
        shapes[p + "up_proj"] = (F, D)
        shapes[p + "up_proj_bias"] = (F,)
        shapes[p + "down_proj"] = (D, F)
        shapes[p + "down_proj_bias"] = (D,)
    shapes["final_norm"] = (D,)
    return shapes


def embedding_scale_for(config, embedding_dtype):
    """sqrt(D) rounded to bf16, whatever dtype the embedding was released in.

    RecurrentGemma computes the normaliser in bf16 "to match training" (official code and HF
    alike, docs/architecture.md#embedding-scale), so a float32 conversion of the weights keeps
    the bf16 value: the family decides, and for it `embedding_dtype` does not enter.
    """
    return embedding_scale(config.d_model, "bfloat16")


class Griffin:
    """RecurrentGemma forward pass over backend-resident parameters; the same public surface
    as `minigemma.models.gemma.Transformer`."""
    parameter_shapes = staticmethod(parameter_shapes)
    embedding_scale_for = staticmethod(embedding_scale_for)

    def __init__(self, config, params, backend, embedding_dtype="float32"):
        self.config = config
        self.params = params  # {name: backend weight}
        self.backend = backend
        self.embed_scale = embedding_scale_for(config, embedding_dtype)

    def new_cache(self, batch=1, max_len=None):
        """An empty decoding state for `batch` sequences; its size does not depend on max_len,
        which is only checked against the model's context."""
        if max_len is not None and max_len > self.config.max_position:
            raise ValueError(f"max_len {max_len} exceeds the model's context of "
                             f"{self.config.max_position} positions")
        return new_griffin_cache(self.config, batch, self.backend.xp)

    def forward(self, ids, positions=None, cache=None, last_only=False):
        """ids [B, T] int -> (logits [B, T, V] or [B, 1, V] if last_only, cache).

        Without a cache the T tokens start from an empty state (positions default to 0…T−1).
        With a cache they continue from its state, which is updated; positions default to
        continuing where the cache stopped.
        """
        return blocks.forward(self.backend, self.params, self.config, self.layer,
                              self.embed_scale, ids, positions, cache, last_only)

    def layer(self, i, h, positions, layer_cache=None):
        """Residual layer i: h [B, T, D] -> [B, T, D]; `layer_cache` is the layer's part of the
        cache (RecurrentState on recurrent layers, LayerKV on attention layers) or None."""
        be, c, p = self.backend, self.config, self.params
        w = f"layers.{i}."
        x = be.rms_norm(h, p[w + "temporal_norm"], c.rms_eps)
        if c.is_attention(i):
            r = h + self.attention_block(i, x, positions, layer_cache)
        else:
            r = h + self.recurrent_block(i, x, positions, layer_cache)
        return r + self.mlp_block(i, be.rms_norm(r, p[w + "mlp_norm"], c.rms_eps))

    def recurrent_block(self, i, x, positions, state=None):
        """Recurrent block of layer i on its normed input x [B, T, D] -> [B, T, D].

            y = gelu_tanh(x W_yᵀ + b_y)                   the gate branch, [B, T, L]
            u = Conv1D(x W_xᵀ + b_x)                      causal depthwise, width W_conv
            a, g = RG-LRU gates(u)                        decay a_t, input gate g_t (paper: i_t)
            h_t = a_t h_{t−1} + √(1 − a_t²) (g_t ⊙ u_t)   the RG-LRU scan, reset at position 0
            out = (y ⊙ h) W_outᵀ + b_out

        `state` (RecurrentState, or None for a fresh one) is advanced: its conv inputs and
        RG-LRU state are replaced by those after the last token.
        """
        be, c, p = self.backend, self.config, self.params
        w = f"layers.{i}."
        if state is None:
            state = new_recurrent_state(c, x.shape[0], be.xp)  # zeros, dropped after the call
        y = blocks.dense(be, p, w + "y_proj", x, bias=True)  # [B, T, L], before the GELU
        u = blocks.dense(be, p, w + "x_proj", x, bias=True)  # [B, T, L]
        u, state.conv = be.conv1d(u, p[w + "conv_weight"], p[w + "conv_bias"], state.conv)
        a, gate_x = be.rglru_gates(u, p[w + "rglru_a_param"], p[w + "input_gate_weight"],
                                   p[w + "input_gate_bias"], p[w + "recurrence_gate_weight"],
                                   p[w + "recurrence_gate_bias"])
        u, state.rglru = be.rglru_scan(u, a, gate_x, state.rglru, positions == 0)
        return blocks.dense(be, p, w + "out_proj", be.geglu(y, u), bias=True)  # [B, T, D]

    def attention_block(self, i, x, positions, layer_cache=None):
        """Local MQA of layer i on its normed input x [B, T, D] -> [B, T, D]: a window of
        `attention_span` keys, RoPE on the first rot_dim dims of each head, biased output."""
        c = self.config
        return blocks.attention_block(
            self.backend, self.params, f"layers.{i}.", x, positions, layer_cache,
            num_heads=c.num_heads, num_kv_heads=c.num_kv_heads, head_dim=c.head_dim,
            rope_base=c.rope_base, rot_dim=c.rot_dim, query_scale=c.query_scale,
            window=c.attention_span, out_bias=True)

    def mlp_block(self, i, x):
        """GeGLU MLP of layer i, with biases: x [B, T, D] -> [B, T, D]."""
        return blocks.gated_mlp(self.backend, self.params, f"layers.{i}.", x, bias=True)
