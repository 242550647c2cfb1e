"""The NumPy reference backend: every op is the readable component function.

The ops are written against `self.xp`, so a subclass that sets `xp = cupy` runs them unchanged on
GPU arrays. Weights are upcast or dequantized to float32 once, at load.
"""
import numpy as np

from minigemma.backends.base import Backend
from minigemma.formats.gguf.blocks import QuantizedWeight, dequantize
from minigemma.ops import attention, embedding, mlp, norms, rope, softcap


class NumpyBackend(Backend):
    name = "numpy"
    xp = np

    def asarray(self, x, dtype=None):
        if not isinstance(x, (np.ndarray, np.generic, list, tuple, int, float)):
            raise TypeError(f"the {self.name} backend got a {type(x).__module__}."
                            f"{type(x).__name__}; move arrays between backends with to_numpy")
        return np.asarray(x, dtype=dtype)

    def to_numpy(self, x):
        return np.asarray(x)

    def prepare_weight(self, w):
        """Host weight -> float32 array (quantized kinds are dequantized here, once)."""
        if isinstance(w, QuantizedWeight):
            w = dequantize(w)
        return self.asarray(np.ascontiguousarray(w, dtype=np.float32))

    def linear(self, x, w):
        # Flatten to one 2-D GEMM: NumPy's stacked matmul does not call BLAS for a transposed
        # weight, which made a decode step ~100x slower.
        rows = x.reshape(-1, x.shape[-1])  # [B·T, I]
        return (rows @ w.T).reshape(*x.shape[:-1], w.shape[0])  # [..., O]

    def embed(self, table, ids, scale):
        return embedding.embed(table, ids, scale, xp=self.xp)

    def rms_norm(self, x, gain, eps):
        return norms.rms_norm(x, gain, eps, xp=self.xp)

    def rope(self, x, positions, base, rot_dim=None, scale=1.0):
        return rope.rope(x, positions, base, rot_dim, scale, xp=self.xp)

    def attention(self, q, k, v, q_pos, k_pos, *, scale, window=None, softcap=None):
        return attention.attention(q, k, v, q_pos, k_pos, scale=scale, window=window,
                                   softcap=softcap, xp=self.xp)

    def geglu(self, gate, up):
        return mlp.geglu(gate, up, xp=self.xp)

    def softcap(self, x, cap):
        return softcap.softcap(x, cap, xp=self.xp)

    def log_softmax(self, x):
        xp = self.xp
        shifted = x - x.max(axis=-1, keepdims=True)
        return shifted - xp.log(xp.exp(shifted).sum(axis=-1, keepdims=True))

    # Ops of the later components; imported on use so each lives in its own module.
    def conv1d(self, x, w, b, state):
        from minigemma.ops.conv1d import conv1d
        return conv1d(x, w, b, state, xp=self.xp)

    def rglru_scan(self, x, a, gate_x, h0, reset):
        from minigemma.ops.rglru import rglru_scan
        return rglru_scan(x, a, gate_x, h0, reset, xp=self.xp)

    def distill_loss_and_grad(self, student_logits, teacher_logits, temperature=1.0):
        from minigemma.training.losses import distillation_loss_and_grad
        return distillation_loss_and_grad(student_logits, teacher_logits, temperature, xp=self.xp)
