"""Token embedding with Gemma's sqrt(D) scale (Gemma report §2;
docs/architecture.md#embedding-scale).

    h_0 = E[ids] · round_dtype(sqrt(D))

The normaliser is rounded to the dtype the embedding weights were released in (bf16 weights:
sqrt(640) = 25.298… becomes 25.25), as HF, JAX and gemma_pytorch do. RecurrentGemma always uses
the bf16 value. The same matrix E (unscaled) is the output head, logits = h @ Eᵀ: a model block,
`minigemma.models.blocks.tied_head`.
"""
import math

import numpy as np

from minigemma.ops.bfloat16 import round_to_dtype


def embedding_scale(d_model, dtype_name="float32"):
    """sqrt(d_model) rounded to `dtype_name` ("float32", "bfloat16", "float16"), as float32."""
    return round_to_dtype(math.sqrt(d_model), dtype_name)


def check_ids(ids, vocab):
    """ids (any int array) -> ids, or a ValueError if one lies outside [0, vocab)."""
    if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= vocab):
        raise ValueError(f"token ids must lie in [0, {vocab}); got min {int(ids.min())}, "
                         f"max {int(ids.max())}")
    return ids


def embed(table, ids, scale, xp=np):
    """table [V, D] float32, ids [B, T] int -> [B, T, D] float32 (rows of the table times scale)."""
    ids = check_ids(xp.asarray(ids), table.shape[0])
    return table[ids] * xp.float32(scale)  # [B, T, D]


def embed_backward(dy, ids, scale, vocab, out=None, xp=np):
    """The gradient of embed with respect to the table: dy [B, T, D], ids [B, T] -> [V, D].

        ∂L/∂E[v] = scale · Σ_{(b, t): ids[b, t] = v} dy[b, t]

    Rows of ids that repeat add up; rows of the table no id reads get 0. With `out` [V, D] the
    rows are added into it (the tied head's gradient, say) and `out` is returned.
    """
    D = dy.shape[-1]
    grad = xp.zeros((vocab, D), dtype=dy.dtype) if out is None else out
    xp.add.at(grad, xp.asarray(ids).reshape(-1), dy.reshape(-1, D) * xp.float32(scale))
    return grad


def tied_head_backward(dlogits, h, table, xp=np):
    """The gradients of the tied head logits = h @ Eᵀ: dlogits [..., V], h [..., D], E [V, D]
    -> (dh [..., D], dE [V, D]).

        ∂L/∂h = dlogits @ E          ∂L/∂E = Σ_rows dlogitsᵀ h

    The embedding E is read twice, by the lookup (embed_backward) and by this head: its
    gradient is the sum of both.
    """
    D, V = h.shape[-1], table.shape[0]
    rows, g = h.reshape(-1, D), dlogits.reshape(-1, V)  # [R, D], [R, V]
    return (g @ table).reshape(h.shape), g.T @ rows
