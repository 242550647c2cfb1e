"""RecurrentGemma: the Griffin network (De et al. 2024; Botev et al. 2024; docs/architecture.md#recurrentgemma).

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

Only pre-norms, no attention soft-cap. A token at position 0 resets the RG-LRU, so
positions must start at 0 on BOS (docs/numerics.md#positions-start-at-0). Packed documents (a position 0 after the start)
reset the RG-LRU but not the Conv1D, as in HF; the official code also masks the conv
(docs/numerics.md#conv-across-documents). The decoding cache (`recurrent_cache`) holds conv inputs, RG-LRU states and a window-sized
ring buffer per attention layer: constant memory however many tokens are generated.
Parameters use minigemma's names (`parameter_shapes`); checkpoint names stay in the converters.
"""
from minigemma.models.kv_cache import token_positions
from minigemma.models.recurrent_state import new_griffin_cache
from minigemma.ops.embedding import embedding_scale, tied_head
from minigemma.ops.rglru import rglru_gates


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


class Griffin:
    """RecurrentGemma forward pass over backend-resident parameters (same contract as
    `minigemma.models.gemma.Transformer`)."""
    parameter_shapes = staticmethod(parameter_shapes)

    def __init__(self, config, params, backend, embedding_dtype="bfloat16"):
        self.config = config
        self.params = params  # {name: backend weight}
        self.backend = backend
        # RecurrentGemma rounds sqrt(D) to bf16 whatever the weights' dtype ("to match
        # training", docs/architecture.md#embedding-scale), so `embedding_dtype` does not change the scale.
        self.embed_scale = embedding_scale(config.d_model, "bfloat16")

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
        be, c, p = self.backend, self.config, self.params
        xp = be.xp
        ids, positions = token_positions(ids, positions, cache, c.max_position, xp)
        if cache is not None and cache.batch != ids.shape[0]:
            raise ValueError(f"the cache holds {cache.batch} sequences but ids has "
                             f"{ids.shape[0]} rows")
        if cache is None:
            cache_layers = [None] * c.num_layers
        else:
            cache_layers = cache.layers
        h = be.embed(p["embedding"], ids, self.embed_scale)  # [B, T, D]
        for i in range(c.num_layers):
            h = self._layer(i, h, positions, cache_layers[i])
        if last_only:
            h = h[:, -1:]
        logits = tied_head(be, h, p["embedding"], p["final_norm"], c.rms_eps, c.final_softcap)
        if cache is not None:
            cache.next_position = int(positions.max()) + 1
        return logits, cache

    def _layer(self, i, h, positions, state):
        be, c, p = self.backend, self.config, self.params
        w = f"layers.{i}."
        x = be.rms_norm(h, p[w + "temporal_norm"], c.rms_eps)
        if c.is_attention(i):
            r = h + self._attention(i, x, positions, state)
        else:
            r = h + self._recurrent(i, x, positions, state)
        x = be.rms_norm(r, p[w + "mlp_norm"], c.rms_eps)
        gate = be.linear(x, p[w + "gate_proj"]) + p[w + "gate_proj_bias"]
        up = be.linear(x, p[w + "up_proj"]) + p[w + "up_proj_bias"]
        return r + (be.linear(be.geglu(gate, up), p[w + "down_proj"]) + p[w + "down_proj_bias"])

    def _recurrent(self, i, x, positions, state):
        """x [B, T, D] -> [B, T, D]; `state` (RecurrentState or None) is advanced in place."""
        be, c, p = self.backend, self.config, self.params
        xp = be.xp
        w = f"layers.{i}."
        B = x.shape[0]
        y = be.linear(x, p[w + "y_proj"]) + p[w + "y_proj_bias"]  # [B, T, L], before the GELU
        u = be.linear(x, p[w + "x_proj"]) + p[w + "x_proj_bias"]  # [B, T, L]
        if state is None:
            conv_state = xp.zeros((B, c.conv_width - 1, c.lru_width), dtype=xp.float32)
            h0 = xp.zeros((B, c.lru_width), dtype=xp.float32)
        else:
            conv_state, h0 = state.conv, state.rglru
        u, conv_state = be.conv1d(u, p[w + "conv_weight"], p[w + "conv_bias"], conv_state)
        a, gate_x = rglru_gates(u, p[w + "rglru_a_param"], p[w + "input_gate_weight"],
                                p[w + "input_gate_bias"], p[w + "recurrence_gate_weight"],
                                p[w + "recurrence_gate_bias"], xp)
        u, h_last = be.rglru_scan(u, a, gate_x, h0, positions == 0)  # reset at position 0
        if state is not None:
            state.conv, state.rglru = conv_state, h_last
        merged = be.geglu(y, u)  # gelu_tanh(y) ⊙ u
        return be.linear(merged, p[w + "out_proj"]) + p[w + "out_proj_bias"]

    def _attention(self, i, x, positions, layer_cache):
        """x [B, T, D] -> [B, T, D]; local MQA, `layer_cache` (LayerKV ring or None)."""
        be, c, p = self.backend, self.config, self.params
        w = f"layers.{i}."
        B, T, _ = x.shape
        N, K, H = c.num_heads, c.num_kv_heads, c.head_dim
        q = be.linear(x, p[w + "q_proj"]).reshape(B, T, N, H)
        k = be.linear(x, p[w + "k_proj"]).reshape(B, T, K, H)
        v = be.linear(x, p[w + "v_proj"]).reshape(B, T, K, H)
        q = be.rope(q, positions, c.rope_base, c.rot_dim)  # first half of each head only
        k = be.rope(k, positions, c.rope_base, c.rot_dim)
        k_pos = positions
        if layer_cache is not None:
            k, v, k_pos = layer_cache.update(k, v, positions, be.xp)  # [B, S, K, H]
        out = be.attention(q, k, v, positions, k_pos, scale=c.query_scale,
                           window=c.attention_span)  # [B, T, N, H]
        return be.linear(out.reshape(B, T, N * H), p[w + "o_proj"]) + p[w + "o_proj_bias"]
