"""The one tolerance table of the test suite, keyed by the dtype of the computation compared."""

# Max absolute logit error against an independent float32 implementation (HF transformers).
ORACLE_ATOL = {"float32": 1e-4}
# Same computation, different order of float32 operations (cache vs full forward, chunking).
CONSISTENCY_ATOL = {"float32": 2e-5}
# Elementwise component identities in float32.
COMPONENT_ATOL = {"float32": 1e-5}
