"""Numba CPU backend: the NumPy reference's ops as compiled kernels (`minigemma.backends.numba`).

Quantized weights stay quantized in memory: `prepare_weight` keeps a QuantizedWeight's GGML
blocks as they are (not even copied; q5_0 is widened to the q8_0 blocks of the same values and
q6_k to the kernels' own i8_16 layout, both where it measured faster: blocks.py says by how
much), and `linear` and `embed` decode them inside the kernels. Float32
weights go through NumPy's BLAS. Every kernel takes C-contiguous arrays of one dtype and Python
scalars of one type, so each compiles once per process (or loads from Numba's cache);
`warmup()` compiles them all on tiny inputs. Work below a size threshold runs in the kernel's
serial version: waking the thread pool costs more than decode-sized loops.

Three ops are the reference's, each delegated by name with its reason (`delegate_to_reference`):
asarray and to_numpy (the arrays are NumPy's) and rglru_gates.

Numba is imported when the backend object is created, never by `import minigemma`.
"""
import os

import numpy as np

from minigemma.backends.base import Backend
from minigemma.backends.reference import delegate_to_reference
from minigemma.formats.gguf.blocks import QuantizedWeight
from minigemma.ops import embedding
from minigemma.ops.conv1d import check_conv1d_shapes
from minigemma.ops.rglru import check_scan_shapes
from minigemma.ops.rope import rope_cos_sin

# GNU OpenMP (Numba's default thread pool here) lets idle workers spin 300 000 rounds before they
# sleep. Between Numba's parallel loops and OpenBLAS's GEMMs that spinning took the cores BLAS
# needed (2 cores: prefill 200 instead of ~800 tok/s). Workers that sleep at once
# (OMP_WAIT_POLICY=passive) cost a decode step's ~90 parallel loops a wake-up each (85 -> 60
# tok/s); 1000 rounds keep both. Read once, when the pool starts; a value the user set wins.
GOMP_SPINCOUNT = "1000"
PARALLEL_MIN_WORK = 1 << 16  # multiply-adds (or elements) below which a kernel runs serially
PARALLEL_MIN_TANH = 1 << 10  # the same for geglu / softcap: their serial loops do not vectorise
PREFILL_MIN_ROWS = 16  # query rows (T·G) from which attention runs as BLAS products
ROPE_TABLES = 4  # cos/sin tables kept (a forward pass needs one per RoPE base)


def probe():
    try:
        import numba  # noqa: F401
    except ImportError as e:
        return f"Numba is not installed ({e}); pip install minigemma[numba]"
    return None


def _c(a, dtype=np.float32):
    """a as a C-contiguous, writable array of `dtype` (no copy when it already is one)."""
    a = np.ascontiguousarray(a, dtype=dtype)
    return a if a.flags.writeable else a.copy()  # Numba types read-only arrays apart


def _rows(x):
    """x [..., W] -> float32 [R, W] for the row kernels."""
    x = _c(x)
    return x.reshape(-1, x.shape[-1])


def _ints(a):
    return _c(a, np.int64)


class NumbaBackend(Backend):
    name = "numba"
    xp = np

    def __init__(self):
        os.environ.setdefault("GOMP_SPINCOUNT", GOMP_SPINCOUNT)  # before the pool starts
        from minigemma.backends.numba import attention as attention_numba
        from minigemma.backends.numba import blocks as blocks_numba
        from minigemma.backends.numba import elementwise as elementwise_numba
        from minigemma.backends.numba import linear as linear_numba
        from minigemma.backends.numba import recurrent as recurrent_numba
        self._attention = attention_numba
        self._blocks = blocks_numba
        self._elementwise = elementwise_numba
        self._linear = linear_numba
        self._recurrent = recurrent_numba
        self._rope_tables = {}  # (positions, base, d, scale) -> (cos, sin), oldest first
        self._block_types = (QuantizedWeight, blocks_numba.KernelWeight)  # what the kernels read
        import numba
        self._threads = numba.get_num_threads()

    asarray = delegate_to_reference("asarray", "the kernels read NumPy arrays, on the host")
    to_numpy = delegate_to_reference("to_numpy", "the backend's arrays are NumPy arrays already")

    def prepare_weight(self, w):
        """QuantizedWeight -> QuantizedWeight (blocks kept) or KernelWeight; anything else ->
        float32 array.

        Blocks are used in place (a checkpoint's memory map is paged in on first use, never
        copied) through a read-only view, so that every weight has the same Numba type. Two
        kinds are widened to blocks of exactly the same values: q5_0 to q8_0 (`widen_q5_0`:
        twice the matvec speed for 34/22 of the bytes) and q6_k to i8_16 (`widen_q6_k`: 2.1×
        the speed for 1.5× the bytes).
        """
        if isinstance(w, QuantizedWeight):
            if w.kind == "q5_0":
                w = self._blocks.widen_q5_0(w)
            elif w.kind == "q6_k":
                w = self._blocks.widen_q6_k(w)
            if w.kind not in self._blocks.KIND_CODES:
                raise ValueError(f"the numba backend has no kernel for block kind {w.kind!r}")
            blocks = np.ascontiguousarray(w.blocks, dtype=np.uint8).view()
            blocks.flags.writeable = False
            return type(w)(w.kind, blocks, w.shape)
        return np.array(w, dtype=np.float32, order="C")  # a writable copy, off any memory map

    def linear(self, x, w):
        return self._linear_many(x, (w,))[0]

    def linear_many(self, x, weights):
        return self._linear_many(x, weights)

    def _linear_many(self, x, weights):
        """Block weights of a few rows of x: one matvec kernel over all their rows (one
        parallel loop for q, k and v, not three); many rows of x: a GEMM per weight on tiles
        of decoded rows; float32 weights: BLAS."""
        for w in weights:
            if x.shape[-1] != w.shape[1]:
                raise ValueError(f"linear: x has {x.shape[-1]} features, the weight "
                                 f"{tuple(w.shape)} expects {w.shape[1]}")
        lead = x.shape[:-1]
        x2 = _rows(x)  # [M, I]
        blocks = [w for w in weights if isinstance(w, self._block_types)]
        fused = {}
        if x2.shape[0] < self._linear.GEMM_MIN_ROWS:
            for start in range(0, len(blocks), self._linear.MAX_WEIGHTS):
                group = tuple(blocks[start:start + self._linear.MAX_WEIGHTS])
                outs = self._linear.matvec_many(x2, group, self._threads)
                fused.update((id(w), y) for w, y in zip(group, outs))
        outs = []
        for w in weights:
            if id(w) in fused:
                y = fused[id(w)]
            elif isinstance(w, self._block_types):
                y = self._linear.gemm_blocks(x2, w)
            else:
                y = x2 @ w.T  # [M, I] @ [I, O], BLAS
            outs.append(y.reshape(*lead, w.shape[0]))
        return tuple(outs)

    def geglu_linear(self, x, w_gate, w_up, approximate="tanh"):
        """Block weights and a few rows of x: one kernel computes both products and the GELU
        (each job its rows); otherwise the two products, then `geglu`."""
        if approximate not in ("tanh", "none"):
            raise ValueError(f"approximate must be 'tanh' or 'none' (the exact GELU), got "
                             f"{approximate!r}")
        if tuple(w_gate.shape) != tuple(w_up.shape):
            raise ValueError(f"geglu_linear: the gate weight {tuple(w_gate.shape)} and the up "
                             f"weight {tuple(w_up.shape)} differ in shape")
        x2 = _rows(x)
        if (x2.shape[0] >= self._linear.GEMM_MIN_ROWS or x.shape[-1] != w_gate.shape[1]
                or not isinstance(w_gate, self._block_types)
                or not isinstance(w_up, self._block_types)):
            return self._geglu(*self._linear_many(x, (w_gate, w_up)), approximate)
        out = self._linear.matvec_geglu_blocks(x2, w_gate, w_up, approximate == "none",
                                               self._threads)
        return out.reshape(*x.shape[:-1], w_gate.shape[0])

    def embed(self, table, ids, scale):
        if not isinstance(table, self._block_types):  # reference: one NumPy gather of rows
            return embedding.embed(table, ids, scale, xp=np)
        ids = embedding.check_ids(np.asarray(ids), table.shape[0])
        rows = _ints(ids.reshape(-1))
        out = np.empty((rows.size, table.shape[1]), dtype=np.float32)
        self._blocks.dequantize_rows(table.blocks, self._blocks.KIND_CODES[table.kind], rows,
                                     float(scale), self._blocks.F16_TO_F32, self._blocks.LANES,
                                     out, parallel=out.size >= PARALLEL_MIN_WORK)
        return out.reshape(*ids.shape, table.shape[1])  # [B, T, D]

    def rms_norm(self, x, gain, eps):
        x2 = _rows(x)
        out = np.empty_like(x2)
        self._elementwise.rms_norm(x2, _c(gain).reshape(-1), float(eps), out,
                                   parallel=x2.size >= PARALLEL_MIN_WORK)
        return out.reshape(x.shape)

    def rope(self, x, positions, base, rot_dim=None, scale=1.0):
        B, T, N, H = x.shape
        rot_dim = H if rot_dim is None else int(rot_dim)
        cos, sin = self._rope_table(positions, base, rot_dim, scale)
        x3 = _c(x).reshape(B * T, N, H)
        out = np.empty_like(x3)
        self._elementwise.rope(x3, cos, sin, out, parallel=x3.size >= PARALLEL_MIN_WORK)
        return out.reshape(B, T, N, H)

    def _rope_table(self, positions, base, rot_dim, scale):
        """m·cos θ, m·sin θ [B·T, d/2]: the reference's own tables (`rope.rope_cos_sin`, NumPy),
        for every kind of `scale` it takes (a number, or a linear or YaRN RopeScaling).

        A forward pass rotates q and k of every layer at the same positions with one or two
        bases: the tables are kept for the last few (positions, base, d, scale) seen.
        """
        positions = _ints(positions)
        scale_key = scale if hasattr(scale, "kind") else float(scale)  # RopeScaling is hashable
        key = (positions.tobytes(), positions.shape, float(base), rot_dim, scale_key)
        if key not in self._rope_tables:
            cos, sin = rope_cos_sin(positions, base, rot_dim, scale, xp=np)  # [B, T, d/2]
            if len(self._rope_tables) >= ROPE_TABLES:
                self._rope_tables.pop(next(iter(self._rope_tables)))  # the oldest
            self._rope_tables[key] = (_c(cos.reshape(-1, rot_dim // 2)),
                                      _c(sin.reshape(-1, rot_dim // 2)))
        return self._rope_tables[key]

    def attention(self, q, k, v, q_pos, k_pos, *, scale, window=None, softcap=None):
        B, T, N, H = q.shape
        S, K = k.shape[1], k.shape[2]
        if N % K:
            raise ValueError(f"query heads ({N}) must be a multiple of kv heads ({K})")
        att = self._attention
        args = (_c(q), _c(k), _c(v), _ints(q_pos), _ints(k_pos), float(scale),
                att.NO_WINDOW if window is None else int(window),
                0.0 if softcap is None else float(softcap))
        if T * (N // K) >= PREFILL_MIN_ROWS:
            return att.attention_prefill(*args, parallel=T * N * S >= PARALLEL_MIN_WORK)
        out = np.empty_like(args[0])
        att.attention(*args, out, parallel=B * T * N * S * H >= 4 * PARALLEL_MIN_WORK)
        return out

    def geglu(self, gate, up, approximate="tanh"):
        return self._geglu(gate, up, approximate)

    def _geglu(self, gate, up, approximate):
        kernels = {"tanh": self._elementwise.geglu, "none": self._elementwise.geglu_exact}
        if approximate not in kernels:
            raise ValueError(f"approximate must be 'tanh' or 'none' (the exact GELU), got "
                             f"{approximate!r}")
        g2, u2 = _rows(gate), _rows(up)
        out = np.empty_like(g2)
        kernels[approximate](g2, u2, out, parallel=g2.size >= PARALLEL_MIN_TANH)
        return out.reshape(gate.shape)

    def softcap(self, x, cap):
        x2 = _rows(x)
        out = np.empty_like(x2)
        self._elementwise.softcap(x2, float(cap), out, parallel=x2.size >= PARALLEL_MIN_TANH)
        return out.reshape(x.shape)

    def conv1d(self, x, w, b, state):
        check_conv1d_shapes(x, w, b, state)
        B, T, L = x.shape
        W = w.shape[0]
        y = np.empty((B, T, L), dtype=np.float32)
        new_state = np.empty((B, W - 1, L), dtype=np.float32)
        self._recurrent.conv1d(_c(x), _c(w), _c(b), _c(state), y, new_state,
                               parallel=x.size * W >= PARALLEL_MIN_WORK)
        return y, new_state

    rglru_gates = delegate_to_reference(
        "rglru_gates", "its two block-diagonal products are BLAS GEMMs there already, and the "
        "rest, sigmoids and exps, is no faster compiled (Numba calls scalar expf per element: "
        "31 ms for NumPy and for a serial kernel at T = 512, L = 2560, measured)")

    def rglru_scan(self, x, a, gate_x, h0, reset):
        check_scan_shapes(x, a, gate_x, h0, reset)
        B, T, L = x.shape
        y = np.empty((B, T, L), dtype=np.float32)
        h = np.empty((B, L), dtype=np.float32)
        self._recurrent.rglru_scan(_c(x), _c(a), _c(gate_x), _c(h0), _c(reset, np.bool_), y, h,
                                   parallel=x.size >= PARALLEL_MIN_WORK)
        return y, h

    def distill_loss_and_grad(self, student_logits, teacher_logits, temperature=1.0):
        from minigemma.backends.numba.distill import distill_loss_and_grad_numba
        return distill_loss_and_grad_numba(student_logits, teacher_logits, temperature)

    # Not ops of the contract: the compiled kernels and their warm-up.

    def dispatchers(self):
        """Every Numba dispatcher this backend calls (for warm-up and signature checks)."""
        kernels = [self._blocks.dequantize_rows, self._linear.matvec, self._linear.matvec_geglu,
                   self._attention.attention,
                   self._attention.masked_softmax]
        kernels += [getattr(self._elementwise, n)
                    for n in ("rms_norm", "rope", "geglu", "geglu_exact", "softcap")]
        kernels += [self._recurrent.conv1d, self._recurrent.rglru_scan]
        return [d for k in kernels for d in k.dispatchers] + [self._linear.block_sums]

    def warmup(self):
        """Compile (or load from the cache) every kernel, serial and parallel, on tiny inputs."""
        b, e, lin = self._blocks, self._elementwise, self._linear
        rng = np.random.default_rng(0)
        x = rng.standard_normal((2, 64)).astype(np.float32)
        blocks = self.prepare_weight(QuantizedWeight("q8_0", np.zeros((4, 68), np.uint8),
                                                     (4, 64))).blocks  # read-only, as weights
        lin.block_sums(x, 32, np.empty((2, 2), np.float32))
        weight = QuantizedWeight("q8_0", blocks, (4, 64))
        plan = lin.MatvecPlan([weight], 1)
        pad = lin.MAX_WEIGHTS - 1
        outs = (np.empty((2, 4), np.float32),) + (lin._EMPTY_OUT,) * pad
        out4 = [np.empty((2, 4), np.float32) for _ in range(3)]
        q = rng.standard_normal((1, 3, 4, 8)).astype(np.float32)
        kv = rng.standard_normal((1, 3, 2, 8)).astype(np.float32)
        pos = np.arange(3)[None]
        for parallel in (True, False):  # the kind code is a value: one signature serves all
            lin.matvec((blocks,) + (lin._EMPTY_BLOCKS,) * pad, plan.kinds, *plan.work(), x,
                       np.empty((2, 0), np.float32), outs, parallel=parallel)
            lin.matvec_geglu(blocks, blocks, plan.kinds[:2], *plan.work(), x,
                             np.empty((2, 0), np.float32), False, *out4, parallel=parallel)
            b.dequantize_rows(blocks, 0, np.arange(2), 1.0, b.F16_TO_F32, b.LANES,
                              np.empty((2, 64), np.float32), parallel=parallel)
            att = self._attention
            att.attention(q, kv, kv, pos, pos, 1.0, att.NO_WINDOW, 0.0, np.empty_like(q),
                          parallel=parallel)
            att.masked_softmax(np.ones((3, 3), np.float32), pos[0], pos[0], 1, 1.0, att.NO_WINDOW,
                               0.0, parallel=parallel)
            e.rms_norm(x, x[0], 1e-6, np.empty_like(x), parallel=parallel)
            e.rope(q[0], *self._rope_table(pos, 1e4, 8, 1.0), np.empty_like(q[0]),
                   parallel=parallel)
            e.geglu(x, x, np.empty_like(x), parallel=parallel)
            e.geglu_exact(x, x, np.empty_like(x), parallel=parallel)
            e.softcap(x, 30.0, np.empty_like(x), parallel=parallel)
            x3 = x.reshape(1, 2, 64)
            self._recurrent.conv1d(x3, x, x[0], x3, np.empty_like(x3), np.empty_like(x3),
                                   parallel=parallel)
            self._recurrent.rglru_scan(x3, x3, x3, x, np.zeros((1, 2), np.bool_),
                                       np.empty_like(x3), np.empty_like(x[:1]), parallel=parallel)
        from minigemma.backends.numba.distill import warm_up as warm_up_distillation
        warm_up_distillation()
        return self
