"""The one kernel interface every backend implements: `Backend`, an abstract class.

A backend owns an array module `xp` (numpy, cupy) and the kernel-worthy operations of the
models. Model code calls only these ops and `xp`; it never branches on which backend it has.
Each op is an abstract method whose docstring gives its shapes, its dtypes (input, accumulation,
output) and its equation, so a backend class that leaves one out cannot be instantiated.
`NumpyBackend` (minigemma.backends.reference) is the reference implementation. Every other
backend names every op in its own class body, and where it reuses the reference it says so and
why: `rope = delegate_to_reference("rope", "...")` (also in minigemma.backends.reference).

Notation, the package's legend: B batch, T query length, S key length, D model width, N query
heads, K kv heads, G = N/K, H head dim, F MLP width, L recurrent width, V vocab. Here also:
I, O a weight's input and output features, W the Conv1D width, "..." any leading axes.

| op                                  | inputs -> output                                          |
|-------------------------------------|-----------------------------------------------------------|
| asarray(x, dtype)                   | host array -> backend array                               |
| to_numpy(x)                         | backend array -> host array                               |
| prepare_weight(w)                   | host weight (f32 or QuantizedWeight) -> backend weight    |
| linear(x, w)                        | x [..., I] f32, w logical [O, I] -> [..., O] f32 = x @ Wᵀ |
| linear_many(x, weights)             | x [..., I], weights [O_i, I] -> tuple of [..., O_i]        |
| geglu_linear(x, w_gate, w_up, …)    | x [..., I], w_gate, w_up [F, I] -> [..., F] f32           |
| embed(table, ids, scale)            | table [V, D], ids [B, T] -> [B, T, D] f32                 |
| rms_norm(x, gain, eps)              | [..., D] -> [..., D] f32, gain = 1 + w                    |
| rope(x, pos, base, rot_dim, scale)  | x [B, T, N, H], pos [B, T] -> same                        |
| attention(q, k, v, q_pos, k_pos, …) | q [B, T, N, H], k/v [B, S, K, H] -> [B, T, N, H]          |
| geglu(gate, up, approximate)        | elementwise                                               |
| softcap(x, cap)                     | elementwise                                               |
| conv1d(x, w, b, state)              | x [B, T, L], w [W, L], state [B, W−1, L] -> y, state      |
| rglru_gates(x, a_param, W_x, …)     | x [B, T, L], a_param [L] -> a, gate_x [B, T, L]           |
| rglru_scan(x, a, gate_x, h0, reset) | [B, T, L] each, h0 [B, L] f32, reset [B, T] -> y, h_T     |
| distill_loss_and_grad(s, t, tau)    | student, teacher logits [T, V] -> (loss, dloss/dstudent)  |

Arrays cross between host and device only through `asarray` and `to_numpy`; weights are moved
once, at load, by `prepare_weight`.
"""
from abc import ABC, abstractmethod


class Backend(ABC):
    """The contract; see the table above. `NumpyBackend` is the reference implementation."""
    name = "abstract"  # the registry's name for the backend ("numpy", "numba", "cupy")
    xp = None  # the array module the backend's arrays belong to (numpy, cupy)

    @abstractmethod
    def asarray(self, x, dtype=None):
        """A host value (NumPy array or scalar, list) -> this backend's array, cast to `dtype`
        when one is given (otherwise the dtype is kept). An array of another backend is a
        TypeError, never a silent copy: move it with that backend's to_numpy first."""

    @abstractmethod
    def to_numpy(self, x):
        """This backend's array -> a NumPy array of the same shape and dtype (copied to the host
        where the backend's memory is elsewhere)."""

    @abstractmethod
    def prepare_weight(self, w):
        """A host weight -> the weight as `linear` and `embed` read it; called once per weight, at
        load. w: a float array (float32, or a wider or narrower float that becomes float32) or a
        QuantizedWeight of GGML blocks, which a backend may dequantize here or keep as blocks.
        The result's .shape is the logical shape ([O, I], [V, D], [D], ...)."""

    @abstractmethod
    def linear(self, x, w):
        """x [..., I] float32, w a prepared weight of logical shape [O, I] -> [..., O] float32.

            y = x @ Wᵀ

        Any storage kind of w (float32 or GGML blocks); float32 accumulation in the backend's own
        order. A ValueError when x's last axis is not I.
        """

    @abstractmethod
    def linear_many(self, x, weights):
        """x [..., I] float32, weights a sequence of prepared weights of logical shapes [O_i, I]
        -> a tuple of [..., O_i] float32, one per weight:

            y_i = x @ W_iᵀ                                (= linear(x, W_i) for each i)

        One op for the matrices that read the same input (q, k, v; gate, up), so that a backend
        can read x once and run them as one kernel. A ValueError when x's last axis is not I.
        """

    @abstractmethod
    def geglu_linear(self, x, w_gate, w_up, approximate="tanh"):
        """x [..., I] float32, w_gate, w_up prepared weights of logical shape [F, I] ->
        [..., F] float32, the first half of the gated MLP:

            out = geglu(x @ W_gateᵀ, x @ W_upᵀ, approximate)

        (`geglu` gives the two GELUs). One op so that a backend can apply the GELU where it
        computes the two products, without writing them out. A ValueError when x's last axis is
        not I, the two weights differ in shape, or `approximate` is not "tanh" or "none".
        """

    @abstractmethod
    def embed(self, table, ids, scale):
        """table a prepared weight [V, D], ids [B, T] int, scale a float -> [B, T, D] float32.

            out[b, t] = table[ids[b, t]] · scale          (the product in float32)

        A ValueError when an id lies outside [0, V).
        """

    @abstractmethod
    def rms_norm(self, x, gain, eps):
        """x [..., D] float, gain [D] float32 (the effective gain 1 + w), eps -> [..., D] float32.

            out = x / sqrt(mean(x², over D) + eps) · gain

        float32 throughout (a backend may accumulate the mean square more precisely).
        """

    @abstractmethod
    def rope(self, x, positions, base, rot_dim=None, scale=1.0):
        """x [B, T, N, H] float32, positions [B, T] int -> [B, T, N, H] float32.

            θ_i = (p / s) · f_i,  i < d/2,  d = rot_dim (None: d = H)
            out = [x1·cos θ − x2·sin θ,  x2·cos θ + x1·sin θ] · m,  x[d:] unchanged,
                  x1, x2 = x[:d/2], x[d/2:d]

        f, s and m come from `scale` through `minigemma.ops.rope.rope_frequencies`: a number is
        linear interpolation (f_i = base^(−2i/d), s = scale, m = 1); a RopeScaling
        (`minigemma.models.config`) is linear or YaRN (blended f, s = 1, m its attention factor).
        Half-split pairs (i, i + d/2); the angles in float32 from the integer positions.
        """

    @abstractmethod
    def attention(self, q, k, v, q_pos, k_pos, *, scale, window=None, softcap=None):
        """q [B, T, N, H], k/v [B, S, K, H] float32, q_pos [B, T], k_pos [B, S] int ->
        [B, T, N, H] float32. Query head n reads kv head n // G (G = N/K; kv never repeated):

            s_t,s = softcap(q_t · k_s · scale)            (softcap=None: no cap)
            keep s_t,s only if k_pos[s] ≠ EMPTY_SLOT (−1), k_pos[s] ≤ q_pos[t] and
                               q_pos[t] − k_pos[s] < window      (window=None: no window)
            out_t = Σ_s softmax_s(s_t)·v_s                (masked keys weigh exactly 0)

        float32 scores and softmax. The mask comes from positions, so keys may sit in any order
        (a ring-buffer cache). A query with no allowed key gets NaN; N % K ≠ 0 is a ValueError.
        """

    @abstractmethod
    def geglu(self, gate, up, approximate="tanh"):
        """gate, up [..., F] float32 -> [..., F] float32.

            approximate="tanh":  out = ½·g·(1 + tanh(√(2/π)·(g + 0.044715·g³))) · up,   g = gate
            approximate="none":  out = ½·g·(1 + erf(g/√2)) · up          (the exact GELU)

        PyTorch's names for the two GELUs; anything else is a ValueError.
        """

    @abstractmethod
    def softcap(self, x, cap):
        """x [...] float32, cap > 0 -> [...] float32 in (−cap, cap): out = cap · tanh(x / cap)."""

    @abstractmethod
    def conv1d(self, x, w, b, state):
        """x [B, T, L] float32, w [W, L], b [L], state [B, W−1, L] -> (y [B, T, L],
        new state [B, W−1, L]), float32: the causal depthwise convolution

            y_t = b + Σ_{s=0}^{W−1} w[W−1−s] ⊙ x_{t−s}     (x before t = 0 read from state)

        new state = the last W−1 inputs, including x. A ValueError when the shapes do not fit.
        """

    @abstractmethod
    def rglru_gates(self, x, a_param, input_gate_w, input_gate_b, recurrence_gate_w,
                    recurrence_gate_b):
        """x [B, T, L] float32, a_param θ [L], gate weights [nb, bs, bs] and biases [nb, bs]
        (nb·bs = L) -> (a, gate_x), each [B, T, L] float32: the RG-LRU's gates.

            gate_x = σ(BD(x, W_x) + b_x)                        input gate i_t
            r      = σ(BD(x, W_a) + b_a)                        recurrence gate r_t
            a      = exp(−c · r · softplus(θ)),  c = 8          decay a_t in (0, 1)

        BD(x, W): block-diagonal product, each block of bs channels times its own [bs, bs]
        matrix (x @ W[block], no transpose). float32 throughout. ValueError on shapes that do not
        fit (minigemma.ops.rglru.rglru_gates is the reference).
        """

    @abstractmethod
    def rglru_scan(self, x, a, gate_x, h0, reset):
        """x, a, gate_x [B, T, L] float32, h0 [B, L] float32, reset [B, T] bool ->
        (y [B, T, L], h_T [B, L]), float32:

            h_t = a_t·h_{t−1} + √(1 − a_t²)·(gate_x_t·x_t),   y_t = h_t
            (where reset: a_t = 0 and √(1 − a_t²) = 1)

        The state accumulates in float32. A ValueError when the shapes do not fit.
        """

    @abstractmethod
    def distill_loss_and_grad(self, student_logits, teacher_logits, temperature=1.0):
        """student, teacher logits [T, V] float (T positions, a batch flattened) ->
        (loss a Python float, gradient [T, V] float32, float64 for float64 logits):

            P = softmax(z / τ) per row
            loss = (1/T) Σ_t −Σ_x P_T(x) log P_S(x),   gradient = (P_S − P_T) / (τ·T)

        Accumulated in float64. NaN, +inf or a row without a finite entry is a ValueError
        (minigemma.training.losses.distillation_loss_and_grad is the reference).
        """

    def __repr__(self):
        return f"<{type(self).__name__} {self.name!r}>"
