"""The Numba CPU backend and its kernels (imported only when the backend is created).

Each file holds the kernels of one family of ops, llama2.c style: labelled passes, `prange` on
the independent outer loop (rows, heads, tokens), each iteration writing its own slice of the
output. Every kernel takes contiguous arrays of one fixed dtype (the distillation kernel: one
version each for float32 and float64), so each compiles once (`cache=True` keeps the machine
code between runs); the backend's `warmup()` compiles them all.

    backend      NumbaBackend: the contract's ops on these kernels (three on the reference)
    jit          how the kernels are compiled (cached, fastmath flags, serial and parallel)
    blocks       GGML block decoding (exact, as minigemma.formats.gguf.blocks), row gathers,
                 q5_0 widened to q8_0
    linear       x @ Wᵀ for every block kind, without a dequantized copy of W
    attention    causal / windowed / soft-capped GQA attention from positions (decode loop,
                 masked softmax between the prefill's BLAS products)
    elementwise  rms_norm, rope, geglu, softcap
    recurrent    RecurrentGemma's Conv1D and RG-LRU scan
    distill      the fused distillation loss and its gradient
"""
