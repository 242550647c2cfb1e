"""Block-quantized weight storage (the GGML / llama.cpp block formats) in plain NumPy
(docs/formats.md#gguf-blocks).

A quantized matrix W of logical shape [O, I] (O output rows, each a row of I input weights, the
HF [out, in] convention) is stored row by row. Each row is cut into blocks of `block_elems`
consecutive weights and every block is encoded into `block_bytes` bytes, so a row takes
row_bytes = I // block_elems * block_bytes bytes and the whole matrix is a uint8 array
`blocks` of shape [O, row_bytes].

Supported block kinds (elements / bytes per block):

    kind   elems  bytes  value of element j
    q8_0   32     34     d * q_j, q_j int8
    q5_0   32     22     d * (q_j - 16), q_j 5 bits
    q4_0   32     18     d * (q_j - 8), q_j 4 bits
    q4_k   256    144    d * sc_s * q_j - dmin * m_s, 6-bit sc / m per 32
    q6_k   256    210    d * scale_s * (q_j - 32), int8 scale per 16

All multi-byte numbers are little-endian; d / dmin are IEEE fp16. Each `dequantize_<kind>`
function documents its block's byte layout and performs the float32 arithmetic in the same
order as llama.cpp's `dequantize_row_<kind>` (`ggml-quants.c`), so the results are
bit-identical to ggml's (and to `gguf.quants.dequantize`).

`quantize_q8_0` / `quantize_q4_0` reproduce llama.cpp's reference quantizers
`quantize_row_q8_0_ref` / `quantize_row_q4_0_ref` byte for byte.

Everything is vectorised over blocks: no Python loop runs per block (a loop over chunks of rows
bounds the temporary memory of `dequantize` on big matrices).
"""
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BlockFormat:
    """How one block of a quantization kind is laid out: `block_elems` weights in
    `block_bytes` bytes."""

    name: str
    block_elems: int
    block_bytes: int
    scale_offsets: tuple  # byte offsets of the block's fp16 numbers (d, and dmin for q4_k)


BLOCK_FORMATS = {
    fmt.name: fmt
    for fmt in (
        BlockFormat("q8_0", 32, 34, (0,)),
        BlockFormat("q5_0", 32, 22, (0,)),
        BlockFormat("q4_0", 32, 18, (0,)),
        BlockFormat("q4_k", 256, 144, (0, 2)),
        BlockFormat("q6_k", 256, 210, (208,)),
    )
}


def _format(kind):
    try:
        return BLOCK_FORMATS[kind]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown quantization kind {kind!r}; known kinds: {sorted(BLOCK_FORMATS)}"
        ) from None


@dataclass
class QuantizedWeight:
    """A matrix of logical shape `shape = (O, I)` stored as `blocks`, a `uint8`
    array `[O, row_bytes]` holding row `o` as `I // block_elems` consecutive blocks
    of kind `kind` (see `BLOCK_FORMATS`)."""

    kind: str
    blocks: np.ndarray  # uint8 [O, row_bytes]
    shape: tuple  # logical (O, I)

    def __post_init__(self):
        fmt = _format(self.kind)
        try:
            shape = tuple(int(s) for s in self.shape)
        except TypeError:
            raise ValueError(f"shape must be a pair (O, I) of ints, got {self.shape!r}") from None
        if len(shape) != 2 or min(shape) < 0:
            raise ValueError(f"shape must be a pair (O, I) of non-negative ints, got {self.shape!r}")
        n_rows, n_cols = shape
        if n_cols % fmt.block_elems != 0:
            raise ValueError(
                f"{self.kind}: the row length I={n_cols} of shape {shape} is not a multiple "
                f"of the block size {fmt.block_elems}"
            )
        if not isinstance(self.blocks, np.ndarray):
            raise ValueError(f"blocks must be a numpy uint8 array, got {type(self.blocks).__name__}")
        if self.blocks.dtype != np.uint8:
            raise ValueError(f"blocks must have dtype uint8, got {self.blocks.dtype}")
        if self.blocks.ndim != 2:
            raise ValueError(f"blocks must be 2-D [O, row_bytes], got shape {self.blocks.shape}")
        row_bytes = n_cols // fmt.block_elems * fmt.block_bytes
        if self.blocks.shape[0] != n_rows:
            raise ValueError(
                f"{self.kind}: blocks has {self.blocks.shape[0]} rows but shape {shape} "
                f"has O={n_rows}"
            )
        if self.blocks.shape[1] != row_bytes:
            raise ValueError(
                f"{self.kind}: row_bytes mismatch: blocks rows have {self.blocks.shape[1]} bytes "
                f"but I={n_cols} needs {n_cols // fmt.block_elems} blocks x "
                f"{fmt.block_bytes} bytes = {row_bytes}"
            )
        self.shape = shape

    @property
    def format(self):
        return BLOCK_FORMATS[self.kind]

    @property
    def row_bytes(self):
        return self.blocks.shape[1]

    @property
    def nbytes(self):
        return self.blocks.nbytes

    def dequantize(self):
        """float32 `[O, I]`; see `dequantize`."""
        return dequantize(self)


def non_finite_scales(qw):
    """How many fp16 scales (d, dmin) of `qw`'s blocks are Inf or NaN. The other fields of a
    block are small integers, so a block's values are all finite exactly when its scales are
    (the values are scale · integer in float32, and |fp16| ≤ 65504)."""
    fmt = qw.format
    per_block = qw.blocks.reshape(-1, fmt.block_bytes)  # [O · I / block_elems, block_bytes]
    bad = 0
    for offset in fmt.scale_offsets:
        high = per_block[:, offset + 1]  # the little-endian fp16's sign and exponent byte
        bad += int(np.count_nonzero((high & 0x7C) == 0x7C))  # exponent all ones: Inf or NaN
    return bad


# Small helpers

def _check_blocks(blocks, fmt):
    blocks = np.asarray(blocks)
    if blocks.dtype != np.uint8 or blocks.ndim != 2 or blocks.shape[1] != fmt.block_bytes:
        raise ValueError(
            f"{fmt.name}: expected a uint8 array [n_blocks, {fmt.block_bytes}], "
            f"got {blocks.dtype} {blocks.shape}"
        )
    return np.ascontiguousarray(blocks)  # the fp16 / uint32 views need contiguous rows


def _fp16_at(blocks, offset):
    """The little-endian fp16 at byte `offset` of every block, as float32 `[n, 1]`."""
    return blocks[:, offset : offset + 2].view("<f2").astype(np.float32)


def _nibbles(packed):
    """Split bytes `[..., m]` into `[..., 2m]`: all low nibbles, then all high nibbles.

    This is the nibble order of the `_0` formats and of each 32-byte group of `q4_k`:
    byte `j` holds element `j` in its low nibble and element `j + m` in its high one.
    """
    return np.concatenate([packed & 0x0F, packed >> 4], axis=-1)


# Dequantizers: [n_blocks, block_bytes] uint8 -> [n_blocks, block_elems] float32

def dequantize_q8_0(blocks):
    """Q8_0, 32 elements in 34 bytes.

    bytes   type   meaning
    0-1     fp16   scale `d`
    2-33    int8   `q[0..31]`

    `x[j] = d * q[j]`.
    """
    blocks = _check_blocks(blocks, BLOCK_FORMATS["q8_0"])
    d = _fp16_at(blocks, 0)
    x = blocks[:, 2:34].view(np.int8).astype(np.float32)
    x *= d  # in place: the embedding matrix is big
    return x


def dequantize_q5_0(blocks):
    """Q5_0, 32 elements in 22 bytes.

    bytes   type    meaning
    0-1     fp16    scale `d`
    2-5     uint32  `qh`: bit `j` is the 5th (high) bit of element `j`
    6-21    uint8   low 4 bits: byte `j` holds element `j` in its low
                    nibble and element `j + 16` in its high nibble

    `q[j] = low4[j] | (bit j of qh) << 4` (0..31) and `x[j] = d * (q[j] - 16)`.
    """
    blocks = _check_blocks(blocks, BLOCK_FORMATS["q5_0"])
    d = _fp16_at(blocks, 0)
    qh = blocks[:, 2:6].view("<u4")  # [n, 1]
    high = ((qh >> np.arange(32, dtype=np.uint32)) & 1).astype(np.uint8)  # [n, 32]
    low = _nibbles(blocks[:, 6:22])  # [n, 32]
    q = (low | (high << 4)).astype(np.int8) - np.int8(16)
    return d * q.astype(np.float32)


def dequantize_q4_0(blocks):
    """Q4_0, 32 elements in 18 bytes.

    bytes   type   meaning
    0-1     fp16   scale `d`
    2-17    uint8  byte `j` holds element `j` in its low nibble and element
                   `j + 16` in its high nibble

    `x[j] = d * (q[j] - 8)`.
    """
    blocks = _check_blocks(blocks, BLOCK_FORMATS["q4_0"])
    d = _fp16_at(blocks, 0)
    q = _nibbles(blocks[:, 2:18]).astype(np.int8) - np.int8(8)
    return d * q.astype(np.float32)


def _q4_k_scales_and_mins(packed):
    """Unpack the 12 bytes `s[0..11]` of eight 6-bit scales `sc` and mins `m`.

    For sub-blocks `j = 0..3` the low 6 bits of `s[j]` / `s[j + 4]` are `sc[j]` /
    `m[j]`.  For `j = 4..7` the low 4 bits come from the nibbles of `s[j + 4]`
    (low nibble: `sc`, high nibble: `m`) and the top 2 bits from the otherwise unused
    top 2 bits of `s[j - 4]` (`sc`) and `s[j]` (`m`):

        byte  0..3 : [sc4..7 bits 4-5][sc0..3]
        byte  4..7 : [ m4..7 bits 4-5][ m0..3]
        byte  8..11: [m4..7 bits 0-3][sc4..7 bits 0-3]
    """
    first, second, third = packed[:, 0:4], packed[:, 4:8], packed[:, 8:12]
    sc = np.concatenate([first & 63, (third & 0x0F) | ((first >> 6) << 4)], axis=1)
    m = np.concatenate([second & 63, (third >> 4) | ((second >> 6) << 4)], axis=1)
    return sc, m  # uint8 [n, 8] each


def dequantize_q4_k(blocks):
    """Q4_K, 256 elements in 144 bytes: 8 sub-blocks of 32 with their own scale and min.

    bytes     type   meaning
    0-1       fp16   super-block scale `d`
    2-3       fp16   super-block min scale `dmin`
    4-15      uint8  eight 6-bit scales `sc[s]` and mins `m[s]` (see
                     `_q4_k_scales_and_mins`)
    16-143    uint8  4-bit quants, in 4 groups of 32 bytes; group `g` holds
                     sub-block `2g` in the low nibbles and `2g + 1` in the high
                     nibbles (byte `16 + 32g + l` -> elements `64g + l` and
                     `64g + 32 + l`)

    `x = (d * sc[s]) * q - (dmin * m[s])` for an element of sub-block `s`.
    """
    blocks = _check_blocks(blocks, BLOCK_FORMATS["q4_k"])
    n = blocks.shape[0]
    d = _fp16_at(blocks, 0)
    dmin = _fp16_at(blocks, 2)
    sc, m = _q4_k_scales_and_mins(blocks[:, 4:16])
    scale = (d * sc.astype(np.float32))[:, :, None]  # [n, 8, 1]
    offset = (dmin * m.astype(np.float32))[:, :, None]  # [n, 8, 1]
    groups = blocks[:, 16:144].reshape(n, 4, 32)
    q = _nibbles(groups).reshape(n, 8, 32).astype(np.float32)  # sub-blocks 0..7
    return (scale * q - offset).reshape(n, 256)


def dequantize_q6_k(blocks):
    """Q6_K, 256 elements in 210 bytes: 16 sub-blocks of 16, each with an int8 scale.

    bytes     type   meaning
    0-127     uint8  `ql`: low 4 bits, two halves of 64 bytes
    128-191   uint8  `qh`: high 2 bits, two halves of 32 bytes
    192-207   int8   `scale[0..15]`, one per 16 consecutive elements
    208-209   fp16   super-block scale `d`

    Half `h` (elements `128h .. 128h+127`) uses `ql[64h : 64h+64]` and
    `qh[32h : 32h+32]`; within it, for `l = 0..31`:

        element l      : low  nibble of ql[l]      | bits 0-1 of qh[l] << 4
        element l + 32 : low  nibble of ql[l + 32] | bits 2-3 of qh[l] << 4
        element l + 64 : high nibble of ql[l]      | bits 4-5 of qh[l] << 4
        element l + 96 : high nibble of ql[l + 32] | bits 6-7 of qh[l] << 4

    `x[e] = (d * scale[e // 16]) * (q[e] - 32)`.
    """
    blocks = _check_blocks(blocks, BLOCK_FORMATS["q6_k"])
    n = blocks.shape[0]
    low = _nibbles(blocks[:, 0:128].reshape(n, 2, 64))  # [n, 2, 128]
    qh = blocks[:, 128:192].reshape(n, 2, 1, 32)
    shifts = np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 4, 1)
    high = ((qh >> shifts) & 3).reshape(n, 2, 128)  # [n, 2, 128]
    q = (low | (high << 4)).astype(np.int8) - np.int8(32)
    q = q.reshape(n, 16, 16).astype(np.float32)
    scale = blocks[:, 192:208].view(np.int8).astype(np.float32)  # [n, 16]
    d = _fp16_at(blocks, 208)
    return ((d * scale)[:, :, None] * q).reshape(n, 256)


_DEQUANTIZERS = {
    "q8_0": dequantize_q8_0,
    "q5_0": dequantize_q5_0,
    "q4_0": dequantize_q4_0,
    "q4_k": dequantize_q4_k,
    "q6_k": dequantize_q6_k,
}


def dequantize_blocks(kind, blocks):
    """`[n_blocks, block_bytes]` uint8 of `kind` -> `[n_blocks, block_elems]` float32."""
    _format(kind)
    return _DEQUANTIZERS[kind](blocks)


# Rows are dequantized in chunks of about this many blocks to bound temporary memory.
_CHUNK_BLOCKS = 1 << 16


def dequantize(qw):
    """The float32 matrix `[O, I]` that `qw` encodes."""
    fmt = qw.format
    n_rows, n_cols = qw.shape
    out = np.empty((n_rows, n_cols), dtype=np.float32)
    blocks_per_row = n_cols // fmt.block_elems
    if out.size == 0:
        return out
    step = max(1, _CHUNK_BLOCKS // blocks_per_row)
    for start in range(0, n_rows, step):
        chunk = np.ascontiguousarray(qw.blocks[start : start + step]).reshape(-1, fmt.block_bytes)
        out[start : start + step] = _DEQUANTIZERS[qw.kind](chunk).reshape(-1, n_cols)
    return out


def dequantize_rows(qw, rows):
    """Dequantize only `rows` (ints or an int array of any shape) of `qw`:
    float32 `[*rows.shape, I]`.  An embedding lookup is `dequantize_rows(embedding, ids)`."""
    rows = np.asarray(rows)
    if not np.issubdtype(rows.dtype, np.integer):
        raise ValueError(f"rows must be integers, got dtype {rows.dtype}")
    fmt = qw.format
    picked = np.ascontiguousarray(qw.blocks[rows.reshape(-1)])  # [k, row_bytes]
    values = _DEQUANTIZERS[qw.kind](picked.reshape(-1, fmt.block_bytes))
    return values.reshape(*rows.shape, qw.shape[1])


# Quantizers (llama.cpp reference quantizers)

def _as_blocks(w, fmt):
    w = np.asarray(w)
    if w.ndim != 2:
        raise ValueError(f"{fmt.name}: expected a 2-D matrix [O, I], got shape {w.shape}")
    if w.shape[1] % fmt.block_elems != 0:
        raise ValueError(
            f"{fmt.name}: the row length I={w.shape[1]} is not a multiple of the block size "
            f"{fmt.block_elems}"
        )
    return w.astype(np.float32, copy=False).reshape(-1, fmt.block_elems)


def _round_half_away_from_zero(v):
    """C's `roundf`: nearest integer, ties away from zero.  (`np.round` rounds ties to
    even, and `floor(v + 0.5)` can be wrong because `v + 0.5` itself rounds.)"""
    whole = np.trunc(v)
    frac = v - whole  # exact
    return whole + np.where(np.abs(frac) >= 0.5, np.sign(v), np.float32(0))


def quantize_q8_0(w):
    """Quantize float32 `[O, I]` to Q8_0 like llama.cpp's `quantize_row_q8_0_ref`.

    Per block: `d = max|x| / 127`; `q = roundf(x * (1/d))` (`q = 0` when `d = 0`);
    `d` is stored as fp16 (round to nearest even).  All arithmetic is float32.
    """
    fmt = BLOCK_FORMATS["q8_0"]
    x = _as_blocks(w, fmt)
    amax = np.abs(x).max(axis=1, keepdims=True)
    d = amax / np.float32(127)
    with np.errstate(divide="ignore"):
        inv_d = np.where(d == 0, np.float32(0), np.float32(1) / d)
    q = _round_half_away_from_zero(x * inv_d).astype(np.int8)
    packed = np.concatenate([d.astype("<f2").view(np.uint8), q.view(np.uint8)], axis=1)
    n_rows, n_cols = np.shape(w)
    return QuantizedWeight("q8_0", packed.reshape(n_rows, -1), (n_rows, n_cols))


def quantize_q4_0(w):
    """Quantize float32 `[O, I]` to Q4_0 like llama.cpp's `quantize_row_q4_0_ref`.

    Per block: `max` is the (first) element of largest magnitude, with its sign;
    `d = max / -8` so that element becomes exactly `q = 0` (value `-8 d = max`);
    `q = min(15, trunc(x * (1/d) + 8.5))` (elements of the opposite sign near `-max`
    would need `q = 16` and are clipped to 15).  `d` is stored as fp16.
    """
    fmt = BLOCK_FORMATS["q4_0"]
    x = _as_blocks(w, fmt)
    where_max = np.abs(x).argmax(axis=1)[:, None]
    signed_max = np.take_along_axis(x, where_max, axis=1)
    d = signed_max / np.float32(-8)
    with np.errstate(divide="ignore"):
        inv_d = np.where(d == 0, np.float32(0), np.float32(1) / d)
    q = np.minimum(np.trunc(x * inv_d + np.float32(8.5)), 15).astype(np.uint8)  # 0..15
    packed_q = q[:, :16] | (q[:, 16:] << 4)
    packed = np.concatenate([d.astype("<f2").view(np.uint8), packed_q], axis=1)
    n_rows, n_cols = np.shape(w)
    return QuantizedWeight("q4_0", packed.reshape(n_rows, -1), (n_rows, n_cols))


_QUANTIZERS = {
    "q8_0": quantize_q8_0,
    "q4_0": quantize_q4_0,
}


def quantize(w, kind):
    """Quantize float32 `[O, I]` to `kind` (`q8_0` or `q4_0`)."""
    _format(kind)
    if kind not in _QUANTIZERS:
        raise ValueError(f"no quantizer for {kind!r}; available: {sorted(_QUANTIZERS)}")
    return _QUANTIZERS[kind](w)
