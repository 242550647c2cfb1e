"""The NumPy reference backend: every op is the readable component function.

The ops are written against `self.xp`, so they run unchanged on any backend whose arrays follow
NumPy's API (CuPy's). A backend that reuses one of them says so in its class body with
`delegate_to_reference` (never by subclassing NumpyBackend). Weights are upcast or dequantized to
float32 once, at load.
"""
import functools

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

    def linear_many(self, x, weights):
        return tuple(self.linear(x, w) for w in weights)

    def geglu_linear(self, x, w_gate, w_up, approximate="tanh"):
        if tuple(w_gate.shape) != tuple(w_up.shape):
            raise ValueError(f"geglu_linear: the gate weight {tuple(w_gate.shape)} and the up "
                             f"weight {tuple(w_up.shape)} differ in shape")
        return self.geglu(*self.linear_many(x, (w_gate, w_up)), approximate)

    def embed(self, table, ids, scale):
        return embedding.embed(table, ids, scale, xp=self.xp)

    def rms_norm(self, x, gain, eps):
        return norms.rms_norm(x, gain, eps, xp=self.xp)

    def rope(self, x, positions, base, rot_dim=None, scale=1.0):
        return rope.rope(x, positions, base, rot_dim, scale, xp=self.xp)

    def attention(self, q, k, v, q_pos, k_pos, *, scale, window=None, softcap=None):
        return attention.attention(q, k, v, q_pos, k_pos, scale=scale, window=window,
                                   softcap=softcap, xp=self.xp)

    def geglu(self, gate, up, approximate="tanh"):
        return mlp.geglu(gate, up, approximate, xp=self.xp)

    def softcap(self, x, cap):
        return softcap.softcap(x, cap, xp=self.xp)

    # Ops of the later components; imported on use so each lives in its own module.
    def conv1d(self, x, w, b, state):
        from minigemma.ops.conv1d import conv1d
        return conv1d(x, w, b, state, xp=self.xp)

    def rglru_gates(self, x, a_param, input_gate_w, input_gate_b, recurrence_gate_w,
                    recurrence_gate_b):
        from minigemma.ops.rglru import rglru_gates
        return rglru_gates(x, a_param, input_gate_w, input_gate_b, recurrence_gate_w,
                           recurrence_gate_b, xp=self.xp)

    def rglru_scan(self, x, a, gate_x, h0, reset):
        from minigemma.ops.rglru import rglru_scan
        return rglru_scan(x, a, gate_x, h0, reset, xp=self.xp)

    def distill_loss_and_grad(self, student_logits, teacher_logits, temperature=1.0):
        from minigemma.training.losses import distillation_loss_and_grad
        return distillation_loss_and_grad(student_logits, teacher_logits, temperature, xp=self.xp)


def delegate_to_reference(op, why):
    """The reference's op `op` as a method of another backend class, run on that backend's `xp`.

    For a class body: `asarray = delegate_to_reference("asarray", "the kernels take NumPy
    arrays")`. `why` says why the reference serves there; it becomes the method's docstring.
    """
    if op not in Backend.__abstractmethods__:
        raise ValueError(f"{op!r} is not an op of the backend contract; the ops are "
                         f"{', '.join(sorted(Backend.__abstractmethods__))}")
    reference_op = getattr(NumpyBackend, op)

    @functools.wraps(reference_op)
    def delegated(self, *args, **kwargs):
        return reference_op(self, *args, **kwargs)
    delegated.__doc__ = f"The NumPy reference's {op}, on this backend's arrays: {why}."
    delegated.delegated_because = why
    return delegated
