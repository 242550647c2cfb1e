"""The backward pass of the shared blocks (minigemma.models.blocks): dense layers, norms,
attention and the gated MLP (docs/training.md#the-backward-pass).

Each `*_forward` runs the same backend ops in the same order as the block it mirrors, and
returns the block's output with a tape: the arrays its backward reads. Each `*_backward` takes
the gradient of the block's output, adds the gradients of the block's parameters into `grads`
({minigemma parameter name: float32 array}) and returns the gradient of the block's input.
"""
from dataclasses import dataclass

from minigemma.ops.mlp import geglu_backward
from minigemma.ops.norms import rms_norm_backward
from minigemma.ops.rope import rope_backward
from minigemma.training import kernels


def add_grad(grads, name, g):
    """grads[name] += g (created on first use)."""
    if name in grads:
        grads[name] += g
    else:
        grads[name] = g


# dense layers and norms

def dense_forward(be, p, name, x, bias=False):
    """y = x Wᵀ (+ b): blocks.dense, through the backend."""
    y = be.linear(x, p[name])  # [..., O]
    return y + p[name + "_bias"] if bias else y


def dense_backward(be, p, name, x, dy, grads, bias=False):
    """dy [..., O], x [..., I] -> dx [..., I]; adds ∂L/∂W = Σ_rows dyᵀ x (and ∂L/∂b = Σ dy).

        ∂L/∂x = dy W
    """
    w = p[name]
    rows, d_rows = x.reshape(-1, x.shape[-1]), dy.reshape(-1, dy.shape[-1])  # [R, I], [R, O]
    add_grad(grads, name, d_rows.T @ rows)  # [O, I]
    if bias:
        add_grad(grads, name + "_bias", d_rows.sum(axis=0))
    return (d_rows @ w).reshape(x.shape)


def norm_backward(be, p, name, x, dy, grads, eps):
    """The backward of be.rms_norm(x, p[name], eps): adds ∂L/∂g and returns ∂L/∂x."""
    dx, dgain = rms_norm_backward(dy, x, p[name], eps, xp=be.xp)
    add_grad(grads, name, dgain)
    return dx


# the shared blocks (minigemma.models.blocks)

@dataclass
class AttentionTape:
    x: object  # [B, T, D] the normed input
    q_raw: object  # [B, T, N, H] before QK-norm (= q_normed without it)
    k_raw: object
    q_normed: object  # before RoPE
    k_normed: object
    q: object  # after RoPE: what attention read
    k: object
    v: object
    o: object  # [B, T, N, H] attention's output


def attention_forward(be, p, prefix, x, positions, *, num_heads, num_kv_heads, head_dim,
                      rope_base, rot_dim, rope_scale=1.0, query_scale, window=None, softcap=None,
                      qk_norm=False, rms_eps=1e-6, out_bias=False):
    """blocks.attention_block without a cache, keeping its tape: -> ([B, T, D], AttentionTape)."""
    B, T, _ = x.shape
    N, K, H = num_heads, num_kv_heads, head_dim
    q_raw = be.linear(x, p[prefix + "q_proj"]).reshape(B, T, N, H)
    k_raw = be.linear(x, p[prefix + "k_proj"]).reshape(B, T, K, H)
    v = be.linear(x, p[prefix + "v_proj"]).reshape(B, T, K, H)
    q_normed, k_normed = q_raw, k_raw
    if qk_norm:
        q_normed = be.rms_norm(q_raw, p[prefix + "q_norm"], rms_eps)
        k_normed = be.rms_norm(k_raw, p[prefix + "k_norm"], rms_eps)
    q = be.rope(q_normed, positions, rope_base, rot_dim, rope_scale)
    k = be.rope(k_normed, positions, rope_base, rot_dim, rope_scale)
    o = be.attention(q, k, v, positions, positions, scale=query_scale, window=window,
                     softcap=softcap)  # [B, T, N, H]
    out = dense_forward(be, p, prefix + "o_proj", o.reshape(B, T, N * H), out_bias)
    return out, AttentionTape(x, q_raw, k_raw, q_normed, k_normed, q, k, v, o)


def attention_backward_block(be, p, prefix, tape, d_out, positions, grads, *, rope_base,
                             rot_dim, rope_scale=1.0, query_scale, window=None, softcap=None,
                             qk_norm=False, rms_eps=1e-6, out_bias=False, **_):
    """d_out [B, T, D] -> ∂L/∂x [B, T, D]; adds the gradients of q/k/v/o_proj (and the QK-norms).

        o → o_proj:   dense backward
        attention:    ops.attention.attention_backward (recomputes the weights)
        RoPE:         rotation by −θ (ops.rope.rope_backward)
        QK-norm:      ops.norms.rms_norm_backward, per head
        q/k/v_proj:   dense backward, the three ∂L/∂x added
    """
    xp = be.xp
    t = tape
    B, T, N, H = t.o.shape
    K = t.k.shape[2]
    d_o = dense_backward(be, p, prefix + "o_proj", t.o.reshape(B, T, N * H), d_out, grads,
                         out_bias).reshape(B, T, N, H)
    dq, dk, dv = kernels.attention_backward(be, d_o, t.q, t.k, t.v, positions, positions,
                                            scale=query_scale, window=window, softcap=softcap)
    dq = rope_backward(dq, positions, rope_base, rot_dim, rope_scale, xp=xp)
    dk = rope_backward(dk, positions, rope_base, rot_dim, rope_scale, xp=xp)
    if qk_norm:
        dq = norm_backward(be, p, prefix + "q_norm", t.q_raw, dq, grads, rms_eps)
        dk = norm_backward(be, p, prefix + "k_norm", t.k_raw, dk, grads, rms_eps)
    dx = dense_backward(be, p, prefix + "q_proj", t.x, dq.reshape(B, T, N * H), grads)
    dx += dense_backward(be, p, prefix + "k_proj", t.x, dk.reshape(B, T, K * H), grads)
    dx += dense_backward(be, p, prefix + "v_proj", t.x, dv.reshape(B, T, K * H), grads)
    return dx


@dataclass
class MlpTape:
    x: object  # [B, T, D]
    gate: object  # [B, T, F] before the GELU
    up: object
    hidden: object  # gelu(gate) ⊙ up


def mlp_forward(be, p, prefix, x, bias=False, approximate="tanh"):
    """blocks.gated_mlp keeping its tape: -> ([B, T, D], MlpTape)."""
    gate = dense_forward(be, p, prefix + "gate_proj", x, bias)  # [B, T, F]
    up = dense_forward(be, p, prefix + "up_proj", x, bias)
    hidden = _geglu(be, gate, up, approximate)
    return dense_forward(be, p, prefix + "down_proj", hidden, bias), MlpTape(x, gate, up, hidden)


def mlp_backward(be, p, prefix, tape, d_out, grads, bias=False, approximate="tanh"):
    """d_out [B, T, D] -> ∂L/∂x; adds the gradients of gate/up/down_proj (and biases).

        ∂L/∂hidden = dense backward of down_proj
        ∂L/∂gate, ∂L/∂up = ops.mlp.geglu_backward
        ∂L/∂x = the dense backwards of gate_proj and up_proj, added
    """
    t = tape
    d_hidden = dense_backward(be, p, prefix + "down_proj", t.hidden, d_out, grads, bias)
    d_gate, d_up = geglu_backward(d_hidden, t.gate, t.up, approximate, xp=be.xp)
    dx = dense_backward(be, p, prefix + "gate_proj", t.x, d_gate, grads, bias)
    dx += dense_backward(be, p, prefix + "up_proj", t.x, d_up, grads, bias)
    return dx


def _geglu(be, gate, up, approximate):
    """be.geglu with the GELU a config asks for (backends before the exact GELU take 2 args)."""
    return be.geglu(gate, up) if approximate == "tanh" else be.geglu(gate, up, approximate)
