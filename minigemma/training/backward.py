"""The backward pass of both networks: a forward that keeps what the chain rule needs, then the
chain rule layer by layer, in reverse (docs/training.md#the-backward-pass).

    forward_trunk(network, ids)          -> h_n [B, T, D] (before the final norm), tape
    backward_trunk(network, tape, dh_n)  -> {parameter name: gradient}

A Gemma layer (`minigemma.models.gemma.Transformer.layer`) and a Griffin layer with its
recurrent block (`minigemma.models.griffin.Griffin`) are written here from the shared blocks'
backward passes (`minigemma.training.blocks_backward`); every op's own backward lives beside
its forward in `minigemma.ops`, and `minigemma.training.kernels` picks a compiled kernel for the
costly ones on backends that have one. The output head and the loss are
`minigemma.training.objective`'s.

Only full sequences from position 0 are trained (no cache): positions are 0…T−1 in every
row, so the RG-LRU starts from a zero state and resets at position 0, and Conv1D starts from
zeros. Weights must be float32 arrays (a quantized checkpoint is for inference).
"""
from dataclasses import dataclass, field

from minigemma.models.kv_cache import token_positions
from minigemma.ops.conv1d import conv1d_backward
from minigemma.ops.embedding import embed_backward
from minigemma.ops.mlp import geglu_backward
from minigemma.ops.rglru import rglru_gates_backward
from minigemma.training import kernels
from minigemma.training.blocks_backward import (
    add_grad,
    attention_backward_block,
    attention_forward,
    dense_backward,
    dense_forward,
    mlp_backward,
    mlp_forward,
    norm_backward,
)

# Gemma 1 / 2 / 3 (minigemma.models.gemma.Transformer.layer)

def gemma_attention_args(config, i):
    """The keyword arguments Transformer.attention_block gives layer i's attention."""
    c = config
    base, scale = c.rope_for(i)
    return dict(num_heads=c.num_heads, num_kv_heads=c.num_kv_heads, head_dim=c.head_dim,
                rope_base=base, rot_dim=c.head_dim, rope_scale=scale, query_scale=c.query_scale,
                window=c.sliding_window if c.is_local(i) else None, softcap=c.attn_softcap,
                qk_norm=c.qk_norm, rms_eps=c.rms_eps)


def gemma_layer_forward(network, i, h, positions):
    """Transformer.layer i keeping its tape: h [B, T, D] -> (h', tape)."""
    be, c, p = network.backend, network.config, network.params
    w = f"layers.{i}."
    approximate = getattr(c, "gelu_approximate", "tanh")
    a, att = attention_forward(be, p, w, be.rms_norm(h, p[w + "pre_attn_norm"], c.rms_eps),
                               positions, **gemma_attention_args(c, i))
    a_out = be.rms_norm(a, p[w + "post_attn_norm"], c.rms_eps) if c.post_norms else a
    h1 = h + a_out
    m, mlp = mlp_forward(be, p, w, be.rms_norm(h1, p[w + "pre_mlp_norm"], c.rms_eps),
                         approximate=approximate)
    m_out = be.rms_norm(m, p[w + "post_mlp_norm"], c.rms_eps) if c.post_norms else m
    return h1 + m_out, {"h": h, "a": a, "h1": h1, "m": m, "attention": att, "mlp": mlp}


def gemma_layer_backward(network, i, tape, dh_out, positions, grads):
    """dh_out [B, T, D] -> ∂L/∂h of layer i's input. Residual stream, read backwards:

        h1 = h + post(attention(pre_attn(h)));   h' = h1 + post(mlp(pre_mlp(h1)))
        ∂L/∂h1 = ∂L/∂h' + pre_mlp backward(mlp backward(post backward(∂L/∂h')))
        ∂L/∂h  = ∂L/∂h1 + pre_attn backward(attention backward(post backward(∂L/∂h1)))
    """
    be, c, p = network.backend, network.config, network.params
    w, eps = f"layers.{i}.", c.rms_eps
    approximate = getattr(c, "gelu_approximate", "tanh")
    t = tape
    dm = norm_backward(be, p, w + "post_mlp_norm", t["m"], dh_out, grads, eps) \
        if c.post_norms else dh_out
    dx = mlp_backward(be, p, w, t["mlp"], dm, grads, approximate=approximate)
    dh1 = dh_out + norm_backward(be, p, w + "pre_mlp_norm", t["h1"], dx, grads, eps)
    da = norm_backward(be, p, w + "post_attn_norm", t["a"], dh1, grads, eps) \
        if c.post_norms else dh1
    dx = attention_backward_block(be, p, w, t["attention"], da, positions, grads,
                                  **gemma_attention_args(c, i))
    return dh1 + norm_backward(be, p, w + "pre_attn_norm", t["h"], dx, grads, eps)


# RecurrentGemma (minigemma.models.griffin.Griffin.layer)

def griffin_attention_args(config):
    c = config
    return dict(num_heads=c.num_heads, num_kv_heads=c.num_kv_heads, head_dim=c.head_dim,
                rope_base=c.rope_base, rot_dim=c.rot_dim, query_scale=c.query_scale,
                window=c.attention_span, out_bias=True)


@dataclass
class RecurrentTape:
    x: object  # [B, T, D] the normed input
    y: object  # [B, T, L] gate branch before the GELU
    u: object  # x_proj output, the conv's input
    conv: object  # the conv's output, the RG-LRU's input
    a: object  # the decay a_t
    gate_x: object  # the input gate
    scan: object  # the RG-LRU's output h_t
    hidden: object  # gelu(y) ⊙ h
    reset: object  # [B, T] bool
    zeros: dict = field(default_factory=dict)  # the zero conv state and RG-LRU state


def recurrent_forward(network, i, x, positions):
    """Griffin.recurrent_block i from a zero state, keeping its tape: -> ([B, T, D], tape)."""
    be, c, p = network.backend, network.config, network.params
    xp, w = be.xp, f"layers.{i}."
    B = x.shape[0]
    conv_state = xp.zeros((B, c.conv_width - 1, c.lru_width), dtype=xp.float32)
    h0 = xp.zeros((B, c.lru_width), dtype=xp.float32)
    y = dense_forward(be, p, w + "y_proj", x, bias=True)  # [B, T, L]
    u = dense_forward(be, p, w + "x_proj", x, bias=True)
    conv, _ = be.conv1d(u, p[w + "conv_weight"], p[w + "conv_bias"], conv_state)
    a, gate_x = be.rglru_gates(conv, *_gate_params(p, w))
    reset = positions == 0
    scan, _ = be.rglru_scan(conv, a, gate_x, h0, reset)
    hidden = be.geglu(y, scan)
    out = dense_forward(be, p, w + "out_proj", hidden, bias=True)  # [B, T, D]
    return out, RecurrentTape(x, y, u, conv, a, gate_x, scan, hidden, reset,
                              {"conv": conv_state, "h0": h0})


def _gate_params(p, w):
    return (p[w + "rglru_a_param"], p[w + "input_gate_weight"], p[w + "input_gate_bias"],
            p[w + "recurrence_gate_weight"], p[w + "recurrence_gate_bias"])


GATE_NAMES = ("rglru_a_param", "input_gate_weight", "input_gate_bias", "recurrence_gate_weight",
              "recurrence_gate_bias")


def recurrent_backward(network, i, tape, d_out, grads):
    """d_out [B, T, D] -> ∂L/∂x; adds the gradients of every recurrent-block parameter.

        hidden = gelu(y) ⊙ h      ops.mlp.geglu_backward
        h = RG-LRU scan           ops.rglru.rglru_scan_backward (a Numba kernel where there is one)
        a, gate_x = gates(conv)   ops.rglru.rglru_gates_backward; ∂L/∂conv from both paths, added
        conv = Conv1D(u)          ops.conv1d.conv1d_backward
        y, u = x W_yᵀ, x W_xᵀ     dense backwards, added
    """
    be, p = network.backend, network.params
    xp, w, t = be.xp, f"layers.{i}.", tape
    d_hidden = dense_backward(be, p, w + "out_proj", t.hidden, d_out, grads, bias=True)
    d_y, d_scan = geglu_backward(d_hidden, t.y, t.scan, xp=xp)
    d_conv, d_a, d_gate_x, _ = kernels.rglru_scan_backward(be, d_scan, t.conv, t.a, t.gate_x,
                                                           t.zeros["h0"], t.reset)
    d_conv_gates, *d_gates = rglru_gates_backward(d_a, d_gate_x, t.conv, *_gate_params(p, w),
                                                  xp=xp)
    for name, g in zip(GATE_NAMES, d_gates):
        add_grad(grads, w + name, g)
    d_u, d_w, d_b, _ = conv1d_backward(d_conv + d_conv_gates, t.u, p[w + "conv_weight"],
                                       p[w + "conv_bias"], t.zeros["conv"], xp=xp)
    add_grad(grads, w + "conv_weight", d_w)
    add_grad(grads, w + "conv_bias", d_b)
    dx = dense_backward(be, p, w + "x_proj", t.x, d_u, grads, bias=True)
    dx += dense_backward(be, p, w + "y_proj", t.x, d_y, grads, bias=True)
    return dx


def griffin_layer_forward(network, i, h, positions):
    """Griffin.layer i keeping its tape: h [B, T, D] -> (h', tape)."""
    be, c, p = network.backend, network.config, network.params
    w = f"layers.{i}."
    x = be.rms_norm(h, p[w + "temporal_norm"], c.rms_eps)
    if c.is_attention(i):
        temporal, block = attention_forward(be, p, w, x, positions, **griffin_attention_args(c))
    else:
        temporal, block = recurrent_forward(network, i, x, positions)
    r = h + temporal
    m, mlp = mlp_forward(be, p, w, be.rms_norm(r, p[w + "mlp_norm"], c.rms_eps), bias=True)
    return r + m, {"h": h, "r": r, "temporal": block, "mlp": mlp}


def griffin_layer_backward(network, i, tape, dh_out, positions, grads):
    """dh_out -> ∂L/∂h. r = h + temporal(norm(h)); h' = r + mlp(norm(r)), read backwards."""
    be, c, p = network.backend, network.config, network.params
    w, eps, t = f"layers.{i}.", c.rms_eps, tape
    dx = mlp_backward(be, p, w, t["mlp"], dh_out, grads, bias=True)
    dr = dh_out + norm_backward(be, p, w + "mlp_norm", t["r"], dx, grads, eps)
    if c.is_attention(i):
        dx = attention_backward_block(be, p, w, t["temporal"], dr, positions, grads,
                                      **griffin_attention_args(c))
    else:
        dx = recurrent_backward(network, i, t["temporal"], dr, grads)
    return dr + norm_backward(be, p, w + "temporal_norm", t["h"], dx, grads, eps)


# the whole trunk: embedding and layers

LAYERS = {"Transformer": (gemma_layer_forward, gemma_layer_backward),
          "Griffin": (griffin_layer_forward, griffin_layer_backward)}


def _layer_functions(network):
    name = type(network).__name__
    if name not in LAYERS:
        raise ValueError(f"no backward pass for a {name} network; known: {', '.join(LAYERS)}")
    return LAYERS[name]


def check_trainable(network):
    """ValueError unless every parameter is a float32 array of the backend (not GGML blocks)."""
    xp = network.backend.xp
    for name, w in network.params.items():
        if not isinstance(w, xp.ndarray) or w.dtype != xp.float32:
            raise ValueError(f"parameter {name} is stored as {type(w).__name__} "
                             f"{getattr(w, 'kind', getattr(w, 'dtype', ''))}; training needs "
                             f"float32 weights (convert the checkpoint with --dtype f32)")


@dataclass
class Tape:
    ids: object  # [B, T]
    positions: object  # [B, T]
    layers: list  # one tape per layer


def forward_trunk(network, ids, trainable=True):
    """ids [B, T] -> (h_n [B, T, D], Tape): the network's forward up to its final norm, from
    position 0 in every row, keeping what backward_trunk needs. trainable=False skips the
    check that the weights are float32 (evaluating a quantized teacher, say)."""
    be, c = network.backend, network.config
    if trainable:
        check_trainable(network)
    ids, positions = token_positions(ids, None, None, c.max_position, be.xp)
    layer_forward, _ = _layer_functions(network)
    h = be.embed(network.params["embedding"], ids, network.embed_scale)  # [B, T, D]
    tapes = []
    for i in range(c.num_layers):
        h, tape = layer_forward(network, i, h, positions)
        tapes.append(tape)
    return h, Tape(ids, positions, tapes)


def backward_trunk(network, tape, dh, grads=None):
    """dh = ∂L/∂h_n [B, T, D] -> {parameter name: gradient}, adding into `grads` when given
    (the output head's embedding gradient, say). The embedding's gradient is the lookup's
    scatter-add of ∂L/∂h_0 · scale plus whatever `grads` held for it."""
    be, c = network.backend, network.config
    _, layer_backward = _layer_functions(network)
    grads = {} if grads is None else grads
    for i in reversed(range(c.num_layers)):
        dh = layer_backward(network, i, tape.layers[i], dh, tape.positions, grads)
    table = network.params["embedding"]
    if "embedding" not in grads:
        grads["embedding"] = be.xp.zeros(table.shape, dtype=be.xp.float32)
    embed_backward(dh, tape.ids, network.embed_scale, table.shape[0], out=grads["embedding"],
                   xp=be.xp)
    return grads
