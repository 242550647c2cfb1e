"""Inputs and comparisons shared by the backend tests: random arrays, random GGML blocks, and
the closeness check of a backend's result against the NumPy reference's."""
import numpy as np

from minigemma.formats.gguf.blocks import BLOCK_FORMATS, QuantizedWeight, quantize

from helpers.tolerances import BACKEND_OP_ATOL

SCALE_OFFSETS = {"q8_0": (0,), "q5_0": (0,), "q4_0": (0,), "q4_k": (0, 2), "q6_k": (208,)}


def rand(rng, *shape, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(np.float32)


def assert_close(be, got, expected, kind="float32"):
    """got (a backend array) equals the reference's `expected` within BACKEND_OP_ATOL, scaled
    by the size of the values; NaN where the reference has NaN."""
    got = be.to_numpy(got)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    finite = expected[np.isfinite(expected)]
    scale = max(1.0, float(np.abs(finite).max())) if finite.size else 1.0
    np.testing.assert_allclose(got, expected, rtol=0, atol=BACKEND_OP_ATOL[kind] * scale)


def random_blocks(kind, rows, n_blocks, rng):
    """A QuantizedWeight [rows, n_blocks · block_elems] of random bytes and fp16 scales ~ 0.05."""
    fmt = BLOCK_FORMATS[kind]
    blocks = rng.integers(0, 256, size=(rows * n_blocks, fmt.block_bytes), dtype=np.uint8)
    for off in SCALE_OFFSETS[kind]:
        scale = (0.05 * rng.standard_normal(rows * n_blocks)).astype("<f2")
        blocks[:, off:off + 2] = scale.view(np.uint8).reshape(-1, 2)
    return QuantizedWeight(kind, blocks.reshape(rows, -1), (rows, n_blocks * fmt.block_elems))


def quantized_params(config, params, kinds):
    """The matrices whose rows fit whole blocks, quantized (cycling through `kinds`)."""
    out, i = {}, 0
    for name, value in params.items():
        if value.ndim == 2 and value.shape[1] % 32 == 0:
            out[name] = quantize(value, kinds[i % len(kinds)])
            i += 1
        else:
            out[name] = value
    return out
