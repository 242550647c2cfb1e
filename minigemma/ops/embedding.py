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
