"""The one tolerance table of the test suite, keyed by the dtype of the computation compared."""

# Max absolute logit error against an independent float32 implementation (HF transformers).
ORACLE_ATOL = {"float32": 1e-4}
# Same computation, different order of float32 operations (cache vs full forward, chunking).
CONSISTENCY_ATOL = {"float32": 2e-5}
# Elementwise component identities in float32.
COMPONENT_ATOL = {"float32": 1e-5}
# A backend's op against the NumPy reference op on the same inputs, float32: max abs error
# relative to max(1, max |reference|) (kernels sum in another order, approximate tanh in GeGLU).
# "quantized": x @ Wᵀ decoded inside the dot product vs the reference's dequantize-then-matmul.
BACKEND_OP_ATOL = {"float32": 2e-6, "quantized": 5e-6}
# Whole-model logits of a backend against the NumPy backend: tiny random models (float32 and
# block-quantized weights alike) and the real Gemma 3 270M (Q4_K_M, logits up to ~30).
BACKEND_MODEL_ATOL = {"float32": 1e-4, "real-q4_k_m": 1e-3}
