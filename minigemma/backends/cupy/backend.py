"""The CuPy GPU backend: weights on the device once, every op on the device.

Where each op runs (on CuPy arrays; the kernels are this folder's `.cu` files, see `kernels`):

| op                    | on the device as                                                     |
|-----------------------|----------------------------------------------------------------------|
| prepare_weight        | float arrays -> float32 device arrays; GGML blocks stay blocks       |
| linear                | blocks: matvec_blocks.cu (few rows) or dequantize_blocks.cu tiles +  |
|                       | cuBLAS (prefill); float32: the reference's GEMM (cuBLAS)             |
| embed                 | blocks: dequantize_blocks.cu on the looked-up rows; float32: the     |
|                       | reference's gather                                                   |
| rms_norm, geglu,      | rms_norm.cu, elementwise.cu, rope.cu (one pass each)                 |
| softcap, rope         |                                                                      |
| attention             | attention_decode.cu for up to ATTENTION_KERNEL_MAX_QUERIES queries   |
|                       | (decode over the ring-buffer cache); the reference's batched GEMMs   |
|                       | (cuBLAS) for prefill                                                 |
| conv1d, rglru_scan    | conv1d.cu, rglru_scan.cu (sequential in time, a thread per channel)  |
| rglru_gates           | the reference's: two batched GEMMs and elementwise CuPy ops          |
| distill_loss_and_grad | distill_loss.cu for float32 logits; the reference for float64        |

Arrays cross between host and device only in `asarray` and `to_numpy` (the models bring back
only the last logits: `minigemma.text.generation`). Mixing host and device arrays is an error.

Built so that its host side runs without a GPU. `CupyBackend(xp=numpy, launcher=CpuLauncher())`
(`minigemma.backends.cupy.toolchain`) is this same class with NumPy standing in for CuPy and the
kernels running on CPU threads from the same CUDA C: upload, the launch shapes, dtype and
contiguity conversion, the choice of kernel or reference path, chunking, and the models' cache
updates all run that way in the tests (tests/backends/cuda/test_cupy_host.py).

What only a GPU can show (scripts/gpu_check.sh):
- NVRTC compiling the sources inside CuPy (`cupy.RawModule`), loading the cubins, the launch
  itself (`CupyLauncher`), and the device's own limits (registers, occupancy);
- CuPy's array semantics on the device: transfers in asarray / to_numpy, device allocation,
  cuBLAS products, CuPy's ascontiguousarray and fancy indexing in the cache updates;
- asynchronous execution on the stream (the CPU harness runs each launch to completion);
- races between thread blocks (the CPU harness runs blocks one after another) and the warp's
  hardware lockstep;
- the GPU's float rounding: fused multiply-adds (the CPU harness compiles with
  -ffp-contract=off) and CUDA's tanhf / expf / cosf / sinf, each within a few ulps;
- speed, and `compute-sanitizer` memory checking.
"""
import importlib.util

import numpy as np

from minigemma.backends.base import Backend
from minigemma.backends.cupy.launches import BlockWeight, Launches, block_weight
from minigemma.backends.reference import delegate_to_reference
from minigemma.formats.gguf.blocks import QuantizedWeight
from minigemma.ops.conv1d import check_conv1d_shapes
from minigemma.ops.embedding import check_ids
from minigemma.ops.rglru import check_scan_shapes
from minigemma.ops.rope import rope_angles
from minigemma.training.losses import check_logit_pair, check_temperature

ATTENTION_KERNEL_MAX_QUERIES = 16  # query rows (T) up to which attention runs the decode kernel
NO_WINDOW = np.iinfo(np.int64).max  # window=None, as the kernel takes it
BAD_ROW = {1: "student_logits", 2: "teacher_logits"}  # distill_loss.cu's status codes


def probe():
    """None when CuPy can run here; else why not: not installed, no CUDA device, driver error."""
    if importlib.util.find_spec("cupy") is None:
        return "CuPy is not installed (pip install minigemma[cupy] on a machine with CUDA)"
    try:
        import cupy
    except Exception as e:  # noqa: BLE001 (a broken installation: say what broke)
        return f"CuPy is installed but cannot be imported ({type(e).__name__}: {e})"
    try:
        if cupy.cuda.runtime.driverGetVersion() == 0:
            return "no CUDA device: no NVIDIA driver is loaded on this machine"
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # noqa: BLE001 (CUDARuntimeError, or CuPy's own errors)
        if "InsufficientDriver" in str(e) or "NoDevice" in str(e):
            return f"no CUDA device: {e}"
        return f"CUDA driver error: {e}"
    if count == 0:
        return "no CUDA device: the driver reports none"
    try:
        cupy.zeros(1).sum().item()  # one allocation and one kernel on the device
    except Exception as e:  # noqa: BLE001 (whatever the driver says is the reason)
        return f"CUDA driver error on device 0: {type(e).__name__}: {e}"
    return None


class CupyBackend(Backend):
    """The ops on CuPy arrays and CUDA kernels; `xp` and `launcher` may be injected (tests)."""
    name = "cupy"

    def __init__(self, xp=None, launcher=None):
        if xp is None:
            import cupy as xp
        if launcher is None:
            from minigemma.backends.cupy.kernels import CupyLauncher
            launcher = CupyLauncher(xp)
        self.xp = xp
        self.launches = Launches(launcher, xp)
        self._inv_freq = {}  # (base, rot_dim) -> inv_freq [rot_dim/2] on the device

    # --- moving arrays -------------------------------------------------------------------------

    def asarray(self, x, dtype=None):
        if isinstance(x, self.xp.ndarray):
            return x if dtype is None else x.astype(dtype, copy=False)
        if not isinstance(x, (np.ndarray, np.generic, list, tuple, int, float)):
            raise TypeError(f"the {self.name} backend got a {type(x).__module__}."
                            f"{type(x).__name__}; move arrays between backends with to_numpy")
        return self.xp.asarray(x, dtype=dtype)  # host -> device

    def to_numpy(self, x):
        if isinstance(x, BlockWeight):
            raise TypeError("to_numpy takes arrays; a block weight stays on the device")
        return np.asarray(self.xp.asnumpy(x) if hasattr(self.xp, "asnumpy") else x)

    def prepare_weight(self, w):
        """QuantizedWeight -> BlockWeight (the GGML blocks, uint8, copied to the device as they
        are); a float array -> a float32 device array."""
        if isinstance(w, QuantizedWeight):
            return block_weight(self.xp, w)
        if isinstance(w, BlockWeight):
            return w
        return self.xp.ascontiguousarray(self.asarray(np.asarray(w, dtype=np.float32)))

    # --- matrices ------------------------------------------------------------------------------

    def linear(self, x, w):
        if x.shape[-1] != w.shape[1]:
            raise ValueError(f"linear: x has {x.shape[-1]} features, the weight "
                             f"{tuple(w.shape)} expects {w.shape[1]}")
        if not isinstance(w, BlockWeight):
            return self._linear_float32(x, w)
        out = self.launches.linear_blocks(w, x.reshape(-1, x.shape[-1]))  # [M, O]
        return out.reshape(*x.shape[:-1], w.shape[0])

    _linear_float32 = delegate_to_reference(
        "linear", "a float32 weight is one cuBLAS GEMM on the flattened rows")
    linear_many = delegate_to_reference(
        "linear_many", "one linear per weight; each is already one kernel launch or GEMM")
    geglu_linear = delegate_to_reference(
        "geglu_linear", "the two products, then the fused GeGLU kernel: three launches")

    def embed(self, table, ids, scale):
        if not isinstance(table, BlockWeight):
            return self._embed_float32(table, ids, scale)
        ids = check_ids(self.launches.i64(ids), table.shape[0])
        rows = self.launches.dequantize_rows(table, ids.reshape(-1), scale)  # [B·T, D]
        return rows.reshape(*ids.shape, table.shape[1])

    _embed_float32 = delegate_to_reference(
        "embed", "a float32 table is one gather and one multiply on the device")

    # --- row-wise and elementwise ----------------------------------------------------------------

    def rms_norm(self, x, gain, eps):
        out = self.launches.rms_norm(x.reshape(-1, x.shape[-1]), gain, float(eps))
        return out.reshape(x.shape)

    def rope(self, x, positions, base, rot_dim=None, scale=1.0):
        if hasattr(scale, "kind") and scale.kind != "linear":  # YaRN: blended frequencies and
            return self._rope_reference(x, positions, base, rot_dim, scale)  # a factor on cos/sin
        factor = float(getattr(scale, "factor", scale))
        rot_dim = x.shape[-1] if rot_dim is None else int(rot_dim)
        return self.launches.rope(x, positions, self._inverse_frequencies(base, rot_dim),
                                  rot_dim, factor)

    _rope_reference = delegate_to_reference(
        "rope", "rope.cu takes plain frequencies and a position divisor; YaRN's blended "
        "frequencies and cos/sin factor run as the reference's CuPy array operations")

    def _inverse_frequencies(self, base, rot_dim):
        """1 / base^(2i/d) [d/2], float32, once per (base, d): the reference's own numbers
        (rope_angles at position 1 and scale 1 is inv_freq exactly: 1·x and x/1 are exact),
        computed by NumPy on the host and moved once."""
        key = (float(base), rot_dim)
        if key not in self._inv_freq:
            theta = rope_angles(np.ones((1, 1), np.int64), base, rot_dim, 1.0, xp=np)[0, 0]
            self._inv_freq[key] = self.asarray(np.ascontiguousarray(theta, dtype=np.float32))
        return self._inv_freq[key]

    def geglu(self, gate, up, approximate="tanh"):
        if approximate != "tanh":  # the exact GELU: the reference's erfc on CuPy arrays
            return self._geglu_reference(gate, up, approximate)
        return self.launches.geglu(gate, up)

    _geglu_reference = delegate_to_reference(
        "geglu", "elementwise.cu has the tanh GELU of every released Gemma; the exact GELU a "
        "config may ask for runs as the reference's CuPy array operations")

    def softcap(self, x, cap):
        return self.launches.softcap(x, float(cap))

    # --- attention -----------------------------------------------------------------------------

    def attention(self, q, k, v, q_pos, k_pos, *, scale, window=None, softcap=None):
        if q.shape[2] % k.shape[2]:
            raise ValueError(f"query heads ({q.shape[2]}) must be a multiple of kv heads "
                             f"({k.shape[2]})")
        if q.shape[1] > ATTENTION_KERNEL_MAX_QUERIES:
            return self._attention_prefill(q, k, v, q_pos, k_pos, scale=scale, window=window,
                                           softcap=softcap)
        return self.launches.attention_decode(
            q, k, v, q_pos, k_pos, float(scale), NO_WINDOW if window is None else int(window),
            0.0 if softcap is None else float(softcap))

    _attention_prefill = delegate_to_reference(
        "attention", "many queries: the scores and the weighted sum as batched cuBLAS GEMMs")

    # --- recurrent -----------------------------------------------------------------------------

    def conv1d(self, x, w, b, state):
        check_conv1d_shapes(x, w, b, state)
        return self.launches.conv1d(x, w, b, state)

    rglru_gates = delegate_to_reference(
        "rglru_gates", "two batched GEMMs (cuBLAS) and a few elementwise CuPy ops; a fused "
        "kernel would save launches only")

    def rglru_scan(self, x, a, gate_x, h0, reset):
        check_scan_shapes(x, a, gate_x, h0, reset)
        return self.launches.rglru_scan(x, a, gate_x, h0, reset)

    # --- losses ----------------------------------------------------------------------------------

    def distill_loss_and_grad(self, student_logits, teacher_logits, temperature=1.0):
        tau = check_temperature(temperature)
        T, _ = check_logit_pair(student_logits, teacher_logits)
        if np.float64 in (student_logits.dtype, teacher_logits.dtype):
            return self._distill_float64(student_logits, teacher_logits, tau)
        grad, row_loss, status = self.launches.distill_rows(student_logits, teacher_logits, tau)
        bad = int(status.max())  # one small transfer: 0 unless a row is bad
        if bad:
            row = int(self.xp.flatnonzero(status)[0])
            raise ValueError(f"{BAD_ROW[int(status[row])]} row {row} has NaN, +inf or no finite "
                             f"entry; logits must be finite or −inf (probability 0), with a "
                             f"finite entry in every row")
        return float(row_loss.sum()) / T, grad

    _distill_float64 = delegate_to_reference(
        "distill_loss_and_grad", "float64 logits get the reference's float64 gradient, which "
        "the float32 kernel does not write")

    # --- compilation ---------------------------------------------------------------------------

    def warmup(self):
        """Compile every kernel file now (NVRTC, or CuPy's on-disk cache) instead of on first
        use, so that the first token's time is not spent compiling."""
        compile_all = getattr(self.launches.launcher, "compile_all", None)
        if compile_all is not None:
            compile_all()
        return self
