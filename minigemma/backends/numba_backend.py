"""Numba CPU backend: the NumPy reference's ops as compiled kernels (`minigemma.kernels`).

Quantized weights stay quantized in memory: `prepare_weight` keeps a QuantizedWeight's GGML
blocks as they are (a checkpoint's memory map, not even copied), and `linear` and `embed` decode
them inside the kernels. Float32 weights go through NumPy's BLAS. Every kernel takes C-contiguous arrays of one
dtype and Python scalars of one type, so each compiles once per process (or loads from Numba's
cache); `warmup()` compiles them all on tiny inputs. Work below a size threshold runs in the
kernel's serial version: waking the thread pool costs more than decode-sized loops.

Numba is imported when the backend object is created, never by `import minigemma`.
"""
import numpy as np

from ..quant import QuantizedWeight
from .numpy_backend import NumpyBackend

PARALLEL_MIN_WORK = 1 << 16  # multiply-adds (or elements) below which a kernel runs serially
NO_WINDOW = np.iinfo(np.int64).max  # window=None: no key is this far back


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


class NumbaBackend(NumpyBackend):
    name = "numba"

    def __init__(self):
        from ..kernels import attention_numba, blocks_numba, elementwise_numba, linear_numba
        self._attention = attention_numba
        self._blocks = blocks_numba
        self._elementwise = elementwise_numba
        self._linear = linear_numba

    def prepare_weight(self, w):
        """QuantizedWeight -> QuantizedWeight (blocks kept); anything else -> float32 array.

        Blocks are used in place (a checkpoint's memory map is paged in on first use, never
        copied) through a read-only view, so that every weight has the same Numba type.
        """
        if isinstance(w, QuantizedWeight):
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
        if not isinstance(table, QuantizedWeight):
            return super().embed(table, ids, scale)
        ids = np.asarray(ids)
        vocab = table.shape[0]
        if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= vocab):
            raise ValueError(f"token ids must lie in [0, {vocab}); got min {int(ids.min())}, "
                             f"max {int(ids.max())}")
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
        x3 = _c(x).reshape(B * T, N, H)
        out = np.empty_like(x3)
        self._elementwise.rope(x3, _ints(positions).reshape(B * T), float(base), rot_dim,
                               float(scale), out, parallel=x3.size >= PARALLEL_MIN_WORK)
        return out.reshape(B, T, N, H)

    def attention(self, q, k, v, q_pos, k_pos, *, scale, window=None, softcap=None):
        B, T, N, H = q.shape
        S, K = k.shape[1], k.shape[2]
        if N % K:
            raise ValueError(f"query heads ({N}) must be a multiple of kv heads ({K})")
        q, k, v = _c(q), _c(k), _c(v)
        out = np.empty_like(q)
        self._attention.attention(
            q, k, v, _ints(q_pos), _ints(k_pos), float(scale),
            NO_WINDOW if window is None else int(window), 0.0 if softcap is None else float(softcap),
            out, parallel=B * T * N * S * H >= 4 * PARALLEL_MIN_WORK)
        return out

    def geglu(self, gate, up):
        g2, u2 = _rows(gate), _rows(up)
        out = np.empty_like(g2)
        self._elementwise.geglu(g2, u2, out, parallel=g2.size >= PARALLEL_MIN_WORK)
        return out.reshape(gate.shape)

    def softcap(self, x, cap):
        x2 = _rows(x)
        out = np.empty_like(x2)
        self._elementwise.softcap(x2, float(cap), out, parallel=x2.size >= PARALLEL_MIN_WORK)
        return out.reshape(x.shape)

    def log_softmax(self, x):
        x2 = _rows(x)
        out = np.empty_like(x2)
        self._elementwise.log_softmax(x2, out, parallel=x2.size >= PARALLEL_MIN_WORK)
        return out.reshape(x.shape)

    def distill_loss_and_grad(self, student_logits, teacher_logits, temperature=1.0):
        try:
            from ..kernels.distill_numba import distill_loss_and_grad_numba
        except ModuleNotFoundError as e:
            if e.name != "minigemma.kernels.distill_numba":
                raise
            return super().distill_loss_and_grad(student_logits, teacher_logits, temperature)
        return distill_loss_and_grad_numba(student_logits, teacher_logits, temperature)

    # --- compilation -----------------------------------------------------------------------

    def dispatchers(self):
        """Every Numba dispatcher this backend calls (for warm-up and signature checks)."""
        kernels = [self._blocks.dequantize_rows, self._linear.matvec, self._attention.attention]
        kernels += [getattr(self._elementwise, n)
                    for n in ("rms_norm", "rope", "geglu", "softcap", "log_softmax")]
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
            self._attention.attention(q, kv, kv, pos, pos, 1.0, NO_WINDOW, 0.0, np.empty_like(q),
                                      parallel=parallel)
            e.rms_norm(x, x[0], 1e-6, np.empty_like(x), parallel=parallel)
            e.rope(q[0], pos[0], 1e4, 8, 1.0, np.empty_like(q[0]), parallel=parallel)
            e.geglu(x, x, np.empty_like(x), parallel=parallel)
            e.softcap(x, 30.0, np.empty_like(x), parallel=parallel)
            e.log_softmax(x, np.empty_like(x), parallel=parallel)
        return self
