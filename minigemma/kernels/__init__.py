"""Numba kernels behind `minigemma.backends.numba_backend` (imported only by that backend).

Each file holds the kernels of one family of ops, llama2.c style: labelled passes, `prange` on
the independent outer loop (rows, heads, tokens), each iteration writing its own slice of the
output. Every kernel takes contiguous arrays of one fixed dtype, so each compiles once
(`cache=True` keeps the machine code between runs); the backend's `warmup()` compiles them all.

    blocks_numba       GGML block decoding (exact, as minigemma.quant) and row gathers
    linear_numba       x @ Wᵀ for float32 and every block kind, without dequantizing W
    attention_numba    causal / windowed / soft-capped GQA attention from positions
    elementwise_numba  rms_norm, rope, geglu, softcap, log_softmax
"""
