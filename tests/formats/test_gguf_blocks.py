"""minigemma.formats.gguf.blocks against the gguf package's NumPy (de)quantizers, the oracle.

Dequantization is required to be *bitwise* identical (float32 bit patterns compared, so even
the sign of zero must agree); quantize_q8_0 / quantize_q4_0 byte-identical to
gguf.quants.quantize (which reproduces llama.cpp's quantize_row_q8_0_ref / q4_0_ref).
"""
import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from gguf import GGMLQuantizationType, quants
from hypothesis import example, given
from hypothesis import strategies as st

from minigemma.formats.gguf import blocks as quant
from minigemma.formats.gguf.blocks import (
    BLOCK_FORMATS,
    QuantizedWeight,
    dequantize,
    dequantize_blocks,
    dequantize_rows,
    quantize,
    quantize_q4_0,
    quantize_q8_0,
)

KINDS = ["q8_0", "q5_0", "q4_0", "q4_k", "q6_k"]
GGML = {kind: GGMLQuantizationType[kind.upper()] for kind in KINDS}
# byte offsets of the fp16 scales in each block kind (d, and dmin for q4_k)
SCALE_OFFSETS = {"q8_0": (0,), "q5_0": (0,), "q4_0": (0,), "q4_k": (0, 2), "q6_k": (208,)}

# finite fp16 values, built from bit fields (exponent 31 would be inf/NaN); drawing
# st.floats(width=16) filters too many candidates for hypothesis' health check
finite_f16 = st.builds(
    lambda sign, exponent, mantissa: np.uint16(sign << 15 | exponent << 10 | mantissa)
    .view(np.float16).item(),
    st.integers(0, 1), st.integers(0, 30), st.integers(0, 1023))


def bits(a):
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def oracle_dequantize(kind, blocks):
    return quants.dequantize(blocks, GGML[kind])


def random_blocks(kind, n, rng):
    """Random bytes, with finite fp16 scales of magnitudes between 1e-7 and 6e4."""
    fmt = BLOCK_FORMATS[kind]
    blocks = rng.integers(0, 256, size=(n, fmt.block_bytes), dtype=np.uint8)
    for off in SCALE_OFFSETS[kind]:
        scale = rng.standard_normal(n) * 10.0 ** rng.uniform(-7, 4, n)
        scale = np.clip(scale, -65504, 65504).astype("<f2")
        blocks[:, off:off + 2] = scale.view(np.uint8).reshape(n, 2)
    return blocks


def test_block_formats():
    assert {k: (f.block_elems, f.block_bytes) for k, f in BLOCK_FORMATS.items()} == {
        "q8_0": (32, 34), "q5_0": (32, 22), "q4_0": (32, 18), "q4_k": (256, 144),
        "q6_k": (256, 210)}
    for kind, fmt in BLOCK_FORMATS.items():
        assert fmt.name == kind
        assert quants.GGML_QUANT_SIZES[GGML[kind]] == (fmt.block_elems, fmt.block_bytes)
    with pytest.raises(Exception):
        BLOCK_FORMATS["q8_0"].block_bytes = 1  # frozen


# --- dequantization: bitwise equal to gguf ---------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@given(data=st.data())
def test_dequantize_blocks_bitwise_equals_gguf(kind, data):
    fmt = BLOCK_FORMATS[kind]
    n = data.draw(st.integers(1, 6), label="n_blocks")
    # payload: seeded random bytes or a constant pattern, plus a few drawn bytes (drawing
    # whole blocks byte by byte overflows hypothesis' buffer for the 210-byte q6_k blocks)
    fill = data.draw(st.sampled_from(["random", 0x00, 0xFF, 0x0F, 0xF0, 0x55]), label="fill")
    if fill == "random":
        seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
        blocks = np.random.default_rng(seed).integers(0, 256, (n, fmt.block_bytes), np.uint8)
    else:
        blocks = np.full((n, fmt.block_bytes), fill, np.uint8)
    flat = blocks.reshape(-1)
    for pos, byte in data.draw(st.lists(st.tuples(st.integers(0, flat.size - 1),
                                                  st.integers(0, 255)), max_size=8)):
        flat[pos] = byte
    for off in SCALE_OFFSETS[kind]:
        scales = data.draw(st.lists(finite_f16, min_size=n, max_size=n), label=f"fp16@{off}")
        blocks[:, off:off + 2] = np.array(scales, dtype="<f2").view(np.uint8).reshape(n, 2)
    mine = dequantize_blocks(kind, blocks)
    assert mine.dtype == np.float32 and mine.shape == (n, fmt.block_elems)
    np.testing.assert_array_equal(bits(mine), bits(oracle_dequantize(kind, blocks)))


@pytest.mark.parametrize("kind", KINDS)
def test_dequantize_many_random_blocks_bitwise(kind):
    rng = np.random.default_rng(KINDS.index(kind))
    blocks = random_blocks(kind, 20_000, rng)
    per_kind = getattr(quant, f"dequantize_{kind}")
    mine = per_kind(blocks)
    np.testing.assert_array_equal(bits(mine), bits(oracle_dequantize(kind, blocks)))


@pytest.mark.parametrize("kind", KINDS)
def test_dequantize_matrix_rows_and_chunks(kind, monkeypatch):
    """Whole matrices: row-major block order, and the row-chunking of dequantize()."""
    fmt = BLOCK_FORMATS[kind]
    rng = np.random.default_rng(100 + KINDS.index(kind))
    n_rows, blocks_per_row = 7, 3
    blocks = random_blocks(kind, n_rows * blocks_per_row, rng).reshape(n_rows, -1)
    qw = QuantizedWeight(kind, blocks, (n_rows, blocks_per_row * fmt.block_elems))
    expected = oracle_dequantize(kind, blocks)
    assert expected.shape == qw.shape
    monkeypatch.setattr(quant, "_CHUNK_BLOCKS", 4)  # forces several chunks of one row
    np.testing.assert_array_equal(bits(dequantize(qw)), bits(expected))
    np.testing.assert_array_equal(bits(qw.dequantize()), bits(expected))
    rows = np.array([[6, 0], [3, 3]])
    np.testing.assert_array_equal(bits(dequantize_rows(qw, rows)), bits(expected[rows]))
    assert dequantize_rows(qw, 5).shape == (qw.shape[1],)


def test_dequantize_known_values():
    """A hand-made block of each _0 kind, against the formulas of the docstrings."""
    d = np.array([0.5], dtype="<f2").view(np.uint8)
    q = np.arange(-16, 16, dtype=np.int8)
    q8 = np.concatenate([d, q.view(np.uint8)])[None]
    np.testing.assert_array_equal(quant.dequantize_q8_0(q8)[0], 0.5 * q)
    # q4_0: element j in the low nibble of byte j, element j + 16 in the high nibble
    nib = np.arange(32) % 16
    packed = (nib[:16] | (nib[16:] << 4)).astype(np.uint8)
    q4 = np.concatenate([d, packed])[None]
    np.testing.assert_array_equal(quant.dequantize_q4_0(q4)[0], 0.5 * (nib - 8))
    # q5_0: 5th bit of element j is bit j of the little-endian uint32 qh
    q5v = (np.arange(32) * 7) % 32
    qh = np.array([sum(int(v >> 4) << j for j, v in enumerate(q5v))], dtype="<u4")
    low = q5v & 15
    q5 = np.concatenate([d, qh.view(np.uint8), (low[:16] | (low[16:] << 4)).astype(np.uint8)])
    np.testing.assert_array_equal(quant.dequantize_q5_0(q5[None])[0], 0.5 * (q5v - 16))


# --- quantization: bytewise equal to gguf (llama.cpp reference quantizers) -------------------


def matrices(max_abs=1e4):
    """float32 [O, 32k] matrices; magnitudes below 1e-20 are zeroed (1/d would overflow)."""
    shapes = st.tuples(st.integers(1, 4), st.integers(1, 3).map(lambda k: 32 * k))
    elements = st.floats(-max_abs, max_abs, width=32, allow_subnormal=False)
    return hnp.arrays(np.float32, shapes, elements=elements).map(
        lambda w: np.where(np.abs(w) < 1e-20, np.float32(0), w))


TIES = np.concatenate([[127.0], np.arange(-15.5, 15.5, 1.0)]).astype(np.float32)[None]  # d = 1
Q4_TIES = np.concatenate([[-8.0], np.arange(-7.5, 8, 0.5)]).astype(np.float32)[None]  # d = 1


@pytest.mark.parametrize("kind", ["q8_0", "q4_0"])
@given(w=matrices())
@example(w=TIES)
@example(w=Q4_TIES)
@example(w=np.zeros((2, 64), np.float32))
@example(w=np.full((1, 32), -3.0, np.float32))
def test_quantize_bytewise_equals_gguf(kind, w):
    qw = quantize(w, kind)
    ref = quants.quantize(w, GGML[kind])
    assert qw.kind == kind and qw.shape == w.shape
    assert qw.blocks.dtype == np.uint8 and qw.blocks.shape == ref.shape
    assert qw.blocks.tobytes() == ref.tobytes()


def test_quantize_q8_0_rounds_ties_away_from_zero():
    q = quantize_q8_0(TIES).blocks[0, 2:].view(np.int8)
    expected = np.concatenate([[127], np.sign(TIES[0, 1:]) * np.ceil(np.abs(TIES[0, 1:]))])
    np.testing.assert_array_equal(q, expected)


def test_quantize_q4_0_uses_signed_max():
    """d = max / -8 with the sign of the largest-magnitude element: it maps to q = 0."""
    w = np.linspace(-1, 1, 32, dtype=np.float32)[None] * np.float32(3)
    w[0, 5] = -4.0
    qw = quantize_q4_0(w)
    assert qw.blocks[0, :2].view("<f2")[0] == np.float16(0.5)
    assert qw.blocks[0, 2 + 5] & 0x0F == 0 and dequantize(qw)[0, 5] == -4.0


@pytest.mark.parametrize("kind", ["q8_0", "q4_0"])
@given(w=matrices(max_abs=1e3))
@example(w=TIES)
@example(w=Q4_TIES)
def test_round_trip_error_bound(kind, w):
    """|x - x_hat| <= |d|/2 (+ the fp16 rounding of d, times the largest |q|).

    d is the float32 scale the quantizer computes; the block stores fp16(d). For q4_0 the
    range of q - 8 is [-8, 7]: an element opposite in sign to the max, beyond 7.5 |d|, is
    clipped to 7 and its error bound grows to at most |d|.
    """
    x = w.reshape(-1, 32).astype(np.float64)
    x_hat = dequantize(quantize(w, kind)).reshape(-1, 32).astype(np.float64)
    stored = quantize(w, kind).blocks.reshape(-1, BLOCK_FORMATS[kind].block_bytes)
    d16 = stored[:, :2].copy().view("<f2").astype(np.float64)  # [n, 1]
    amax = np.abs(x).max(axis=1, keepdims=True)
    if kind == "q8_0":
        d = amax / 127
        half_steps = np.full_like(x, 0.5)
        qmax = 127
    else:
        signed_max = np.take_along_axis(x, np.abs(x).argmax(axis=1)[:, None], axis=1)
        d = signed_max / -8
        with np.errstate(divide="ignore", invalid="ignore"):
            v = np.where(d == 0, 8.0, x / d + 8)  # position on the 0..15 grid
        half_steps = np.maximum(0.5, v - 15)  # clipped elements: up to one full step
        qmax = 8
    bound = np.abs(d) * half_steps + qmax * np.abs(d - d16) + 1e-6 * amax
    err = np.abs(x - x_hat)
    assert np.all(err <= bound), float((err - bound).max())
    assert np.all(half_steps <= 1.0)
    assert np.all(x_hat[amax[:, 0] == 0] == 0)


def test_quantize_accepts_float64_and_validates():
    w = np.random.default_rng(0).standard_normal((3, 64))
    assert quantize_q8_0(w).blocks.tobytes() == quantize_q8_0(w.astype(np.float32)).blocks.tobytes()
    with pytest.raises(ValueError, match="multiple of the block size 32"):
        quantize_q8_0(np.zeros((2, 33), np.float32))
    with pytest.raises(ValueError, match="2-D"):
        quantize_q4_0(np.zeros(64, np.float32))
    with pytest.raises(ValueError, match="no quantizer"):
        quantize(np.zeros((1, 256), np.float32), "q4_k")
    with pytest.raises(ValueError, match="unknown quantization kind"):
        quantize(np.zeros((1, 32), np.float32), "q3_k")


# --- QuantizedWeight validation ---------------------------------------------------------------


def test_quantized_weight_validation():
    ok = QuantizedWeight("q4_k", np.zeros((3, 288), np.uint8), [3, 512])
    assert ok.shape == (3, 512) and ok.row_bytes == 288 and ok.nbytes == 3 * 288
    assert ok.format == BLOCK_FORMATS["q4_k"]
    with pytest.raises(ValueError, match="unknown quantization kind 'q9_9'"):
        QuantizedWeight("q9_9", np.zeros((3, 34), np.uint8), (3, 32))
    with pytest.raises(ValueError, match="I=48 .* not a multiple of the block size 32"):
        QuantizedWeight("q8_0", np.zeros((3, 51), np.uint8), (3, 48))
    with pytest.raises(ValueError, match="not a multiple of the block size 256"):
        QuantizedWeight("q6_k", np.zeros((1, 210), np.uint8), (1, 128))
    with pytest.raises(ValueError, match="row_bytes mismatch"):
        QuantizedWeight("q8_0", np.zeros((3, 68), np.uint8), (3, 32))
    with pytest.raises(ValueError, match="row_bytes mismatch"):
        QuantizedWeight("q5_0", np.zeros((3, 34), np.uint8), (3, 64))
    with pytest.raises(ValueError, match="4 rows but shape"):
        QuantizedWeight("q8_0", np.zeros((4, 34), np.uint8), (3, 32))
    with pytest.raises(ValueError, match="dtype uint8"):
        QuantizedWeight("q8_0", np.zeros((3, 34), np.int8), (3, 32))
    with pytest.raises(ValueError, match="2-D"):
        QuantizedWeight("q8_0", np.zeros(102, np.uint8), (3, 32))
    with pytest.raises(ValueError, match="pair"):
        QuantizedWeight("q8_0", np.zeros((3, 34), np.uint8), (3, 32, 1))


@pytest.mark.parametrize("kind", KINDS)
def test_per_kind_dequantizer_rejects_wrong_block_size(kind):
    fmt = BLOCK_FORMATS[kind]
    with pytest.raises(ValueError, match=f"\\[n_blocks, {fmt.block_bytes}\\]"):
        getattr(quant, f"dequantize_{kind}")(np.zeros((2, fmt.block_bytes + 1), np.uint8))
    with pytest.raises(ValueError):
        getattr(quant, f"dequantize_{kind}")(np.zeros(fmt.block_bytes, np.uint8))


def test_dequantize_rows_rejects_float_indices():
    qw = quantize_q8_0(np.ones((2, 32), np.float32))
    with pytest.raises(ValueError, match="integers"):
        dequantize_rows(qw, np.array([0.0]))


def test_module_does_not_use_gguf():
    """gguf is only the test oracle; minigemma.formats.gguf.blocks is self-contained NumPy."""
    import inspect
    source = inspect.getsource(quant)
    assert "import gguf" not in source and "from gguf" not in source
