"""The host side of every kernel: outputs allocated, inputs made contiguous, the launch shaped.

`Launches(launcher, xp)` has one method per kernel family of this folder's `.cu` files. Each
takes arrays of `xp` (CuPy on a GPU; NumPy with the CPU launcher in the tests), converts them to
the C-contiguous dtype the kernel's C signature names (no copy when they already are), allocates
the outputs with `xp`, and launches with the shape that the `.cu` file's header comment
describes. The block sizes are read from the `.cu` files' own `#define`s, so host and kernel
cannot disagree.

    linear_blocks(w, x2)                x2 [M, I] @ Wᵀ for a BlockWeight w: matvec (M small) or
                                        dequantized tiles times xp.matmul (prefill)
    dequantize_rows(w, rows, scale)     [R, I] float32 rows of w, times scale
    attention_decode(q, k, v, …)        [B, T, N, H]
    rglru_scan(x, a, gate_x, h0, reset) (y [B, T, L], h_T [B, L])
    conv1d(x, w, b, state)              (y [B, T, L], new state [B, W−1, L])
    rms_norm(x2, gain, eps)             [R, D]
    geglu(gate, up), softcap(x, cap)    same shape as the input
    rope(x, positions, inv_freq, …)     [B, T, N, H]
    distill_rows(student, teacher, τ)   (grad [T, V] f32, row_loss [T] f64, status [T] i32)
"""
import re
from dataclasses import dataclass

from minigemma.backends.cupy import kernels
from minigemma.formats.gguf.blocks import BLOCK_FORMATS

MAX_GRID_BLOCKS = 1 << 16  # grid-stride kernels: blocks launched at most (each loops on)
MAX_GRID_Y = 65535  # CUDA's limit on gridDim.y and gridDim.z
GEMM_MIN_ROWS = 16  # from this many rows of x on, linear decodes tiles of W and calls xp.matmul
TILE_ELEMENTS = 1 << 25  # float32 elements of one dequantized tile of W (128 MiB)


def define(file, name):
    """The integer value of `#define name value` in `file`."""
    match = re.search(rf"^#define\s+{name}\s+(\d+)\s*$", (kernels.KERNEL_DIR / file).read_text(),
                      flags=re.MULTILINE)
    if match is None:
        raise ValueError(f"{file} defines no integer {name}")
    return int(match.group(1))


@dataclass(frozen=True)
class BlockWeight:
    """A GGML block matrix on the device: blocks uint8 [O, row_bytes] of `kind`, logical [O, I]."""
    kind: str
    blocks: object
    shape: tuple

    @property
    def nbytes(self):
        return int(self.blocks.nbytes)


def _ceil_div(a, b):
    return -(-a // b)


class Launches:
    def __init__(self, launcher, xp, max_grid_blocks=MAX_GRID_BLOCKS, tile_elements=TILE_ELEMENTS):
        self.launcher, self.xp = launcher, xp
        self.max_grid_blocks = max_grid_blocks
        self.tile_elements = tile_elements
        self.matvec_warps = define("matvec_blocks.cu", "MATVEC_WARPS")
        self.matvec_max_rows = define("matvec_blocks.cu", "MATVEC_MAX_ROWS")
        self.dequantize_threads = define("dequantize_blocks.cu", "DEQUANTIZE_THREADS")
        self.attention_threads = define("attention_decode.cu", "ATTENTION_THREADS")
        self.scan_threads = define("rglru_scan.cu", "SCAN_THREADS")
        self.conv_threads = define("conv1d.cu", "CONV_THREADS")
        self.norm_threads = define("rms_norm.cu", "NORM_THREADS")
        self.elementwise_threads = define("elementwise.cu", "ELEMENTWISE_THREADS")
        self.rope_threads = define("rope.cu", "ROPE_THREADS")
        self.distill_threads = define("distill_loss.cu", "DISTILL_THREADS")

    # --- helpers -------------------------------------------------------------------------------

    def f32(self, a):
        return self.array(a, self.xp.float32)

    def i64(self, a):
        return self.array(a, self.xp.int64)

    def array(self, a, dtype):
        """a as a C-contiguous array of dtype (no copy when it is one); a TypeError for an
        array of another module (a NumPy array given to the GPU): never a silent transfer."""
        if not isinstance(a, self.xp.ndarray):
            raise TypeError(f"expected an array of {self.xp.__name__}, got a "
                            f"{type(a).__module__}.{type(a).__name__}; move arrays to the "
                            f"backend with its asarray")
        return self.xp.ascontiguousarray(a, dtype=dtype)

    def _grid_for(self, n, threads):
        """Blocks for a grid-stride loop over n elements."""
        return (max(1, min(self.max_grid_blocks, _ceil_div(n, threads))),)

    def _launch(self, file, kernel, grid, block, *args):
        self.launcher.launch(file, kernel, grid, block, args)

    # --- GGML blocks -------------------------------------------------------------------------

    def matvec(self, w, x2):
        """x2 float32 [M, I] -> [M, O] = x2 @ Wᵀ, decoding W inside the dot products."""
        xp, (O, I) = self.xp, w.shape
        x2 = self.f32(x2)
        M = x2.shape[0]
        if x2.ndim != 2 or x2.shape[1] != I:
            raise ValueError(f"matvec: x {tuple(x2.shape)} does not fit a weight {tuple(w.shape)}")
        out = xp.empty((M, O), dtype=xp.float32)
        grid, block = (max(1, _ceil_div(O, self.matvec_warps)),), (32, self.matvec_warps)
        for m0 in range(0, M, self.matvec_max_rows):  # row slices of C arrays stay contiguous
            m1 = min(M, m0 + self.matvec_max_rows)
            if O:
                self._launch("matvec_blocks.cu", f"matvec_{w.kind}", grid, block, w.blocks,
                             x2[m0:m1], out[m0:m1], O, I, m1 - m0)
        return out

    def dequantize_rows(self, w, rows, scale=1.0):
        """rows int [R] (each in [0, O)) -> float32 [R, I] = decode(W[rows]) · scale."""
        xp, (_, I) = self.xp, w.shape
        rows = self.i64(rows).reshape(-1)
        out = xp.empty((rows.shape[0], I), dtype=xp.float32)
        block = (self.dequantize_threads,)
        for r0 in range(0, rows.shape[0], MAX_GRID_Y):
            r1 = min(rows.shape[0], r0 + MAX_GRID_Y)
            if I:
                self._launch("dequantize_blocks.cu", f"dequantize_rows_{w.kind}",
                             (_ceil_div(I, self.dequantize_threads), r1 - r0), block, w.blocks,
                             rows[r0:r1], out[r0:r1], I, scale)
        return out

    def linear_blocks(self, w, x2):
        """x2 float32 [M, I] -> [M, O]: matvec for few rows; else tiles of W decoded, then GEMMs."""
        xp, (O, I) = self.xp, w.shape
        x2 = self.f32(x2)
        if x2.shape[0] < GEMM_MIN_ROWS:
            return self.matvec(w, x2)
        out = xp.empty((x2.shape[0], O), dtype=xp.float32)
        step = max(1, min(O, self.tile_elements // max(1, I)))  # output rows per tile
        for o0 in range(0, O, step):
            o1 = min(O, o0 + step)
            tile = self.dequantize_rows(w, xp.arange(o0, o1, dtype=xp.int64))  # [o1 − o0, I]
            out[:, o0:o1] = x2 @ tile.T  # cuBLAS on the GPU
        return out

    # --- attention -----------------------------------------------------------------------------

    def attention_decode(self, q, k, v, q_pos, k_pos, scale, window, cap):
        """q [B, T, N, H], k/v [B, S, K, H], q_pos [B, T], k_pos [B, S] -> [B, T, N, H] float32.

        window: an int, or the largest int64 for none; cap: a float, 0 for none.
        """
        xp = self.xp
        q, k, v, q_pos, k_pos = self.f32(q), self.f32(k), self.f32(v), self.i64(q_pos), self.i64(k_pos)
        B, T, N, H = q.shape
        S, K = k.shape[1], k.shape[2]
        if N % K:
            raise ValueError(f"query heads ({N}) must be a multiple of kv heads ({K})")
        if T > MAX_GRID_Y or B > MAX_GRID_Y:
            raise ValueError(f"attention_decode takes at most {MAX_GRID_Y} queries and batch rows")
        out = xp.empty((B, T, N, H), dtype=xp.float32)
        weights = xp.empty((B, T, N, S), dtype=xp.float32)  # scratch: scores, then weights
        if out.size:
            self._launch("attention_decode.cu", "attention_decode", (N, T, B),
                         (self.attention_threads,), q, k, v, q_pos, k_pos, weights, out, T, N, S,
                         K, H, scale, window, cap)
        return out

    # --- recurrent -----------------------------------------------------------------------------

    def rglru_scan(self, x, a, gate_x, h0, reset):
        """x, a, gate_x [B, T, L], h0 [B, L], reset [B, T] bool -> (y [B, T, L], h_T [B, L])."""
        xp = self.xp
        x, a, gate_x, h0 = self.f32(x), self.f32(a), self.f32(gate_x), self.f32(h0)
        reset = self.array(reset, xp.bool_).view(xp.uint8)  # 1 byte each, 0 / 1
        B, T, L = x.shape
        y = xp.empty((B, T, L), dtype=xp.float32)
        h_last = xp.empty((B, L), dtype=xp.float32)
        if B and L:
            self._launch("rglru_scan.cu", "rglru_scan", (_ceil_div(L, self.scan_threads), B),
                         (self.scan_threads,), x, a, gate_x, h0, reset, y, h_last, T, L)
        return y, h_last

    def conv1d(self, x, w, b, state):
        """x [B, T, L], w [W, L], b [L], state [B, W−1, L] -> (y [B, T, L], state [B, W−1, L])."""
        xp = self.xp
        x, w, b, state = self.f32(x), self.f32(w), self.f32(b), self.f32(state)
        B, T, L = x.shape
        W = w.shape[0]
        y = xp.empty((B, T, L), dtype=xp.float32)
        new_state = xp.empty((B, W - 1, L), dtype=xp.float32)
        if B and L:
            self._launch("conv1d.cu", "conv1d", (_ceil_div(L, self.conv_threads), B),
                         (self.conv_threads,), x, w, b, state, y, new_state, T, W, L)
        return y, new_state

    # --- row-wise and elementwise ----------------------------------------------------------------

    def rms_norm(self, x2, gain, eps):
        """x2 [R, D], gain [D] -> [R, D] float32."""
        x2, gain = self.f32(x2), self.f32(gain)
        R, D = x2.shape
        out = self.xp.empty((R, D), dtype=self.xp.float32)
        if R:
            self._launch("rms_norm.cu", "rms_norm", (R,), (self.norm_threads,), x2, gain, out, D,
                         eps)
        return out

    def geglu(self, gate, up):
        gate, up = self.f32(gate), self.f32(up)
        out = self.xp.empty(gate.shape, dtype=self.xp.float32)
        if out.size:
            self._launch("elementwise.cu", "geglu", self._grid_for(out.size, self.elementwise_threads),
                         (self.elementwise_threads,), gate, up, out, out.size)
        return out

    def softcap(self, x, cap):
        x = self.f32(x)
        out = self.xp.empty(x.shape, dtype=self.xp.float32)
        if out.size:
            self._launch("elementwise.cu", "softcap", self._grid_for(out.size, self.elementwise_threads),
                         (self.elementwise_threads,), x, out, cap, out.size)
        return out

    def rope(self, x, positions, inv_freq, rot_dim, scale):
        """x [B, T, N, H], positions [B, T], inv_freq [rot_dim/2] float32 -> [B, T, N, H]."""
        x, positions, inv_freq = self.f32(x), self.i64(positions), self.f32(inv_freq)
        N, H = x.shape[2], x.shape[3]
        out = self.xp.empty(x.shape, dtype=self.xp.float32)
        if out.size:
            self._launch("rope.cu", "rope", self._grid_for(out.size, self.rope_threads),
                         (self.rope_threads,), x, positions, inv_freq, out, N, H, rot_dim, scale,
                         out.size)
        return out

    # --- losses ----------------------------------------------------------------------------------

    def distill_rows(self, student, teacher, temperature):
        """student, teacher [T, V] -> (grad [T, V] f32, row_loss [T] f64, status [T] int32)."""
        xp = self.xp
        student, teacher = self.f32(student), self.f32(teacher)
        T, V = student.shape
        grad = xp.empty((T, V), dtype=xp.float32)
        row_loss = xp.zeros(T, dtype=xp.float64)
        status = xp.zeros(T, dtype=xp.int32)
        self._launch("distill_loss.cu", "distill_rows", (T,), (self.distill_threads,), student,
                     teacher, grad, row_loss, status, V, float(temperature),
                     1.0 / (float(temperature) * T))
        return grad, row_loss, status


def block_weight(xp, w):
    """A host QuantizedWeight -> a BlockWeight whose blocks live in `xp` (copied once)."""
    if w.kind not in BLOCK_FORMATS:
        raise ValueError(f"no kernel for block kind {w.kind!r}")
    return BlockWeight(w.kind, xp.ascontiguousarray(xp.asarray(w.blocks), dtype=xp.uint8),
                       tuple(w.shape))
