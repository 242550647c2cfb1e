"""Numba CPU backend: the NumPy reference's ops as compiled kernels (`minigemma.backends.numba`).

Quantized weights stay quantized in memory: `prepare_weight` keeps a QuantizedWeight's GGML
blocks as they are (a checkpoint's memory map, not even copied; q5_0 is widened to the q8_0
blocks of the same values), and `linear` and `embed` decode them inside the kernels. Float32
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
from minigemma.ops.rope import rope_angles

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

    asarray = delegate_to_reference("asarray", "the kernels read NumPy arrays, on the host")
    to_numpy = delegate_to_reference("to_numpy", "the backend's arrays are NumPy arrays already")

    def prepare_weight(self, w):
        """QuantizedWeight -> QuantizedWeight (blocks kept); anything else -> float32 array.

        Blocks are used in place (a checkpoint's memory map is paged in on first use, never
        copied) through a read-only view, so that every weight has the same Numba type. q5_0
        is the exception: it is widened to the q8_0 blocks of the same values (`widen_q5_0`:
        twice the matvec speed for 34/22 of the bytes).
        """
        if isinstance(w, QuantizedWeight):
            if w.kind == "q5_0":
                w = self._blocks.widen_q5_0(w)
            if w.kind not in self._blocks.KIND_CODES:
                raise ValueError(f"the numba backend has no kernel for block kind {w.kind!r}")
            blocks = np.ascontiguousarray(w.blocks, dtype=np.uint8).view()
            blocks.flags.writeable = False
            return QuantizedWeight(w.kind, blocks, w.shape)
        return np.array(w, dtype=np.float32, order="C")  # a writable copy, off any memory map

    def linear(self, x, w):
        in_features = w.shape[1]
        if x.shape[-1] != in_features:
            raise ValueError(f"linear: x has {x.shape[-1]} features, the weight {tuple(w.shape)} "
                             f"expects {in_features}")
        lead = x.shape[:-1]
        x2 = _rows(x)  # [M, I]
        if isinstance(w, QuantizedWeight):
            out = self._linear.linear_blocks(x2, w)
        else:
            out = x2 @ w.T  # [M, I] @ [I, O], BLAS
        return out.reshape(*lead, w.shape[0])

    def embed(self, table, ids, scale):
        if not isinstance(table, QuantizedWeight):  # reference: one NumPy gather of rows
            return embedding.embed(table, ids, scale, xp=np)
        ids = embedding.check_ids(np.asarray(ids), table.shape[0])
        rows = _ints(ids.reshape(-1))
        out = np.empty((rows.size, table.shape[1]), dtype=np.float32)
        self._blocks.dequantize_rows(table.blocks, self._blocks.KIND_CODES[table.kind], rows,
                                     float(scale), self._blocks.F16_TO_F32, out,
                                     parallel=out.size >= PARALLEL_MIN_WORK)
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
        """cos θ, sin θ [B·T, d/2] of the reference's own angles (`rope.rope_angles`, NumPy).

        A forward pass rotates q and k of every layer at the same positions with one or two
        bases: the tables are kept for the last few (positions, base, d, scale) seen.
        """
        positions = _ints(positions)
        key = (positions.tobytes(), positions.shape, float(base), rot_dim, float(scale))
        if key not in self._rope_tables:
            theta = rope_angles(positions, base, rot_dim, scale, xp=np)  # [B, T, d/2]
            theta = theta.reshape(-1, rot_dim // 2)
            if len(self._rope_tables) >= ROPE_TABLES:
                self._rope_tables.pop(next(iter(self._rope_tables)))  # the oldest
            self._rope_tables[key] = (_c(np.cos(theta)), _c(np.sin(theta)))
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

    def geglu(self, gate, up):
        g2, u2 = _rows(gate), _rows(up)
        out = np.empty_like(g2)
        self._elementwise.geglu(g2, u2, out, parallel=g2.size >= PARALLEL_MIN_TANH)
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
        kernels = [self._blocks.dequantize_rows, self._linear.matvec, self._attention.attention,
                   self._attention.masked_softmax]
        kernels += [getattr(self._elementwise, n)
                    for n in ("rms_norm", "rope", "geglu", "softcap")]
        kernels += [self._recurrent.conv1d, self._recurrent.rglru_scan]
        return [d for k in kernels for d in k.dispatchers] + [self._linear.block_sums]

    def warmup(self):
        """Compile (or load from the cache) every kernel, serial and parallel, on tiny inputs."""
        b, e, lin = self._blocks, self._elementwise, self._linear
        rng = np.random.default_rng(0)
        x = rng.standard_normal((2, 64)).astype(np.float32)
        blocks = self.prepare_weight(QuantizedWeight("q8_0", np.zeros((4, 68), np.uint8),
                                                     (4, 64))).blocks  # read-only, as weights
        lin.block_sums(x, np.empty((2, 2), np.float32))
        q = rng.standard_normal((1, 3, 4, 8)).astype(np.float32)
        kv = rng.standard_normal((1, 3, 2, 8)).astype(np.float32)
        pos = np.arange(3)[None]
        for parallel in (True, False):  # the kind code is a value: one signature serves all
            lin.matvec(blocks, 0, x, np.empty((2, 0), np.float32), b.F16_TO_F32, lin.LANES,
                       np.empty((2, 4), np.float32), parallel=parallel)
            b.dequantize_rows(blocks, 0, np.arange(2), 1.0, b.F16_TO_F32,
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
            e.softcap(x, 30.0, np.empty_like(x), parallel=parallel)
            x3 = x.reshape(1, 2, 64)
            self._recurrent.conv1d(x3, x, x[0], x3, np.empty_like(x3), np.empty_like(x3),
                                   parallel=parallel)
            self._recurrent.rglru_scan(x3, x3, x3, x, np.zeros((1, 2), np.bool_),
                                       np.empty_like(x3), np.empty_like(x[:1]), parallel=parallel)
        from minigemma.backends.numba.distill import warm_up as warm_up_distillation
        warm_up_distillation()
        return self
