"""The one kernel interface every backend implements.

A backend owns an array module `xp` (numpy, cupy) and the kernel-worthy operations of the
models. Model code calls only these ops and `xp`; it never branches on which backend it has.

| op                                   | inputs -> output                                             |
|--------------------------------------|--------------------------------------------------------------|
| prepare_weight(w)                    | host weight (f32 array or QuantizedWeight) -> backend weight |
| linear(x, w)                         | x [..., I] f32, w logical [O, I] -> [..., O] f32 = x @ Wᵀ    |
| embed(table, ids, scale)             | table [V, D], ids [B, T] -> [B, T, D] f32                    |
| rms_norm(x, gain, eps)               | [..., D] -> [..., D] f32, gain = 1 + w                       |
| rope(x, positions, base, rot_dim, s) | x [B, T, N, H], positions [B, T] -> same                     |
| attention(q, k, v, q_pos, k_pos, …)  | q [B, T, N, H], k/v [B, S, K, H] -> [B, T, N, H]             |
| geglu(gate, up), softcap(x, cap)     | elementwise                                                  |
| log_softmax(x)                       | [..., V] -> [..., V] f32                                     |
| conv1d(x, w, b, state)               | x [B, T, L], w [W, L], b [L], state [B, W−1, L] -> y, state  |
| rglru_scan(x, a, gate_x, h0, reset)  | [B, T, L] each, h0 [B, L] f32, reset [B, T] -> y, h_T        |
| distill_loss_and_grad(s, t, tau)     | student, teacher logits [T, V] -> (loss, dloss/dstudent)     |

Arrays cross between host and device only through `asarray` and `to_numpy`; weights are moved
once, at load, by `prepare_weight`.
"""


class Backend:
    """Interface; see the table above. `NumpyBackend` is the reference implementation."""
    name = "abstract"
    xp = None

    def asarray(self, x, dtype=None):
        raise NotImplementedError

    def to_numpy(self, x):
        raise NotImplementedError

    def prepare_weight(self, w):
        raise NotImplementedError

    def linear(self, x, w):
        raise NotImplementedError

    def embed(self, table, ids, scale):
        raise NotImplementedError

    def rms_norm(self, x, gain, eps):
        raise NotImplementedError

    def rope(self, x, positions, base, rot_dim=None, scale=1.0):
        raise NotImplementedError

    def attention(self, q, k, v, q_pos, k_pos, *, scale, window=None, softcap=None):
        raise NotImplementedError

    def geglu(self, gate, up):
        raise NotImplementedError

    def softcap(self, x, cap):
        raise NotImplementedError

    def log_softmax(self, x):
        raise NotImplementedError

    def conv1d(self, x, w, b, state):
        raise NotImplementedError

    def rglru_scan(self, x, a, gate_x, h0, reset):
        raise NotImplementedError

    def distill_loss_and_grad(self, student_logits, teacher_logits, temperature=1.0):
        raise NotImplementedError

    def __repr__(self):
        return f"<{type(self).__name__} {self.name!r}>"
