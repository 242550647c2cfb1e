"""GGML block decoding in Numba: a row of blocks -> float32, exactly as `minigemma.formats.gguf.blocks`.

The byte layouts are documented once, in `minigemma.formats.gguf.blocks` (one `dequantize_<kind>` each); the
decoders here walk the same bytes one block at a time and do the same float32 arithmetic in the
same order (no fastmath: no fused multiply-add), so their output is bit-identical to the NumPy
reference. fp16 scales are read through a 65536-entry table (`F16_TO_F32`, as ggml's
`ggml_table_f32_f16`): one load instead of bit surgery.

    dequantize_rows(blocks, kind, rows, scale, f16, lanes, out)
                                                           out[r] = decode(blocks[rows[r]]) · scale
    widen_q5_0(w)                                          q5_0 -> q8_0, value for value
    widen_q6_k(w)                                          q6_k -> i8_16, value for value

`dequantize_rows` serves the embedding lookup (only the looked-up rows are decoded) and the row
tiles that `linear_numba` hands to BLAS for prefill.

Why widen q5_0: a q5_0 value is d·(q − 16) with q − 16 in [−16, 15], which a q8_0 block holds
exactly with the same fp16 d. The q8_0 dot product is one sign-extend, convert and FMA per
weight; q5_0's also splices a fifth bit out of a 32-bit mask, which made its matvec compute-bound
at half the q8_0 speed per block. Widening costs 34/22 of those tensors' bytes (Gemma 3 270M
Q4_K_M: 43 → 67 MB, +24 MB resident) and bought 70 → 83 tok/s of decode.

Why widen q6_k: its matvec unpacks 6-bit values from two bytes and applies 16 scales per 256
elements, 3.8 G weights/s on one core; "i8_16", the same values as int8 with the float32
products d·scale (exact: 11 × 8 bits) per 16, runs at 8.0 (Gemma 3 270M down_proj, 1 thread).
It costs 1.25 against 0.82 bytes per weight (+5 MB here); with two cores the matvec is then
memory-bound, not compute-bound: 172 -> 91 µs per 640 × 2048 matrix.

    i8_16 row of I elements: float32 scale[I/16] | int8 q[I]; value j = scale[j / 16] · q[j]
"""
from dataclasses import dataclass

import numpy as np
from numba import njit

from minigemma.backends.numba.jit import kernel

# Kind codes of the kinds the kernels read (a string cannot select a branch in compiled code).
# q5_0 is widened to q8_0 at load (`widen_q5_0`) and never reaches a kernel; q6_k is widened to
# i8_16 (`widen_q6_k`), a layout only these kernels read.
KIND_CODES = {"q8_0": 0, "q4_0": 1, "q4_k": 2, "i8_16": 3}
Q8_0, Q4_0, Q4_K, I8_16 = range(4)


@dataclass
class KernelWeight:
    """A matrix of logical shape (O, I) in a layout of the Numba kernels' own (kind "i8_16"),
    uint8 blocks [O, row_bytes]; the backend treats it as it treats a QuantizedWeight."""
    kind: str
    blocks: np.ndarray
    shape: tuple

    @property
    def nbytes(self):
        return self.blocks.nbytes

LANES = 32  # the block length, passed to the kernels at run time (see `decode_row`)
F16_TO_F32 = np.arange(65536, dtype=np.uint16).view(np.float16).astype(np.float32)  # exact


@njit(inline="always")
def fp16_at(row, off, f16):
    """The little-endian fp16 at byte `off` of `row`, as float32."""
    return f16[np.int32(row[off]) | (np.int32(row[off + 1]) << 8)]


@njit(inline="always")
def q4_k_scale_min(row, off, s):
    """Sub-block s (0..7) of the q4_k super-block at `off`: its 6-bit (scale, min), int32.

    Every bit operation is cast back to int32: Numba widens them to int64, which is exact but
    made the matvec unpack its scales with 64-bit instructions.
    """
    packed = off + 4
    m6, m4 = np.int32(63), np.int32(15)
    if s < 4:
        return (np.int32(np.int32(row[packed + s]) & m6),
                np.int32(np.int32(row[packed + s + 4]) & m6))
    lo = np.int32(row[packed + s + 4])
    sc = np.int32(np.int32(lo & m4) | np.int32(np.int32(np.int32(row[packed + s - 4]) >> 6) << 4))
    m = np.int32(np.int32(lo >> 4) | np.int32(np.int32(np.int32(row[packed + s]) >> 6) << 4))
    return sc, m


@njit(inline="always")
def decode_row(row, kind, f16, lanes, out):
    """One row of blocks (uint8 [row_bytes]) of `kind` -> out float32 [I], bit-exact.

    `lanes` is the block length, 32, passed at run time so that LLVM vectorises each block's
    loop instead of unrolling it and vectorising across blocks with gathers (2–5× slower).
    Compiled without fastmath, so bit-identical to the reference.
    """
    half = lanes // 2
    if kind == Q8_0:
        q = row.view(np.int8)
        for b in range(row.shape[0] // 34):  # d · q
            off, base = b * 34, b * 32
            d = fp16_at(row, off, f16)
            for j in range(lanes):
                out[base + j] = d * np.float32(q[off + 2 + j])
    elif kind == Q4_0:
        for b in range(row.shape[0] // 18):  # d · (q − 8): low nibbles, then high
            off, base = b * 18, b * 32
            d = fp16_at(row, off, f16)
            for j in range(half):
                byte = np.int32(row[off + 2 + j])
                out[base + j] = d * np.float32(np.int32(np.int32(byte & 0x0F) - 8))
                out[base + half + j] = d * np.float32(np.int32(np.int32(byte >> 4) - 8))
    elif kind == Q4_K:
        for b in range(row.shape[0] // 144):  # (d · sc) · q − (dmin · m) per sub-block
            off, base = b * 144, b * 256
            d, dmin = fp16_at(row, off, f16), fp16_at(row, off + 2, f16)
            for g in range(4):  # 32 bytes: sub-block 2g (low nibbles), 2g + 1 (high)
                sc0, m0 = q4_k_scale_min(row, off, 2 * g)
                sc1, m1 = q4_k_scale_min(row, off, 2 * g + 1)
                scale0, offset0 = d * np.float32(sc0), dmin * np.float32(m0)
                scale1, offset1 = d * np.float32(sc1), dmin * np.float32(m1)
                for l in range(lanes):
                    byte = np.int32(row[off + 16 + 32 * g + l])
                    out[base + 64 * g + l] = scale0 * np.float32(np.int32(byte & 0x0F)) - offset0
                    out[base + 64 * g + 32 + l] = (scale1 * np.float32(np.int32(byte >> 4))
                                                   - offset1)
    else:  # I8_16: scale · q, the float32 product of the reference's (d · scale) and q
        n = out.shape[0]
        scales, q = row[:n // 4].view(np.float32), row[n // 4:].view(np.int8)
        for b in range(n // 32):  # two scales per 32 values
            s0, s1, base = scales[2 * b], scales[2 * b + 1], 32 * b
            for j in range(half):
                out[base + j] = s0 * np.float32(q[base + j])
                out[base + half + j] = s1 * np.float32(q[base + half + j])


@kernel(fastmath=False)  # exact: bit-identical to minigemma.formats.gguf.blocks
def dequantize_rows(loop):
    def dequantize_rows(blocks, kind, rows, scale, f16, lanes, out):
        """blocks uint8 [O, row_bytes], rows int64 [R] -> out float32 [R, I] = decode · scale
        (lanes: the block length, 32, as a run-time value; see `decode_row`).

        scale = 1 gives the plain dequantized rows (multiplying by 1.0 is exact).
        """
        s = np.float32(scale)  # multiply in float32, as the reference does
        for r in loop(rows.shape[0]):  # each token / tile row writes its own output row
            decode_row(blocks[rows[r]], kind, f16, lanes, out[r])
            if s != 1:
                for i in range(out.shape[1]):
                    out[r, i] *= s
    return dequantize_rows


def widen_q5_0(w):
    """A q5_0 QuantizedWeight -> the q8_0 QuantizedWeight of exactly the same values.

    Per block (layouts in minigemma.formats.gguf.blocks): d is copied; q8[j] = (low4[j] | bit j of qh << 4) − 16.
    """
    from minigemma.formats.gguf.blocks import QuantizedWeight
    rows, row_bytes = w.blocks.shape
    n = row_bytes // 22
    src = np.ascontiguousarray(w.blocks).reshape(rows, n, 22)
    qh = np.ascontiguousarray(src[:, :, 2:6]).view("<u4")  # [rows, n, 1]
    high = ((qh >> np.arange(32, dtype=np.uint32)) & 1).astype(np.uint8)  # [rows, n, 32]
    low = np.concatenate([src[:, :, 6:22] & 0x0F, src[:, :, 6:22] >> 4], axis=-1)
    q = ((low | (high << 4)).astype(np.int8) - np.int8(16)).view(np.uint8)  # [−16, 15] as int8
    out = np.empty((rows, n, 34), dtype=np.uint8)
    out[:, :, :2] = src[:, :, :2]  # the fp16 scale d
    out[:, :, 2:] = q
    return QuantizedWeight("q8_0", out.reshape(rows, n * 34), w.shape)


def widen_q6_k(w):
    """A q6_k QuantizedWeight -> the i8_16 KernelWeight of exactly the same values.

    Per 16 elements k of a block (layout in minigemma.formats.gguf.blocks.dequantize_q6_k):
    scale = d · scale_k in float32 (exact), q = the 6-bit value − 32 as int8.
    """
    rows, row_bytes = w.blocks.shape
    n = row_bytes // 210
    src = np.ascontiguousarray(w.blocks).reshape(rows, n, 210)
    low = src[:, :, 0:128].reshape(rows, n, 2, 1, 64)  # [.., half, 1, ql of the half]
    # part p = 2·nibble + (l ≥ 32 in ql): low(ql[l]), low(ql[l + 32]), high(ql[l]), high(...)
    low = np.concatenate([low & 0x0F, low >> 4], axis=3).reshape(rows, n, 2, 4, 32)
    qh = src[:, :, 128:192].reshape(rows, n, 2, 1, 32)
    high = (qh >> np.array([0, 2, 4, 6], np.uint8).reshape(1, 1, 1, 4, 1)) & 3  # [.., part, l]
    q = ((low | (high << 4)).astype(np.int16) - 32).astype(np.int8).reshape(rows, n * 256)
    d = src[:, :, 208:210].copy().view("<f2").astype(np.float32)  # [rows, n, 1]
    scales = (d * src[:, :, 192:208].view(np.int8).astype(np.float32)).reshape(rows, n * 16)
    out = np.empty((rows, n * 16 * 4 + n * 256), np.uint8)
    out[:, :n * 64] = scales.view(np.uint8)
    out[:, n * 64:] = q.view(np.uint8)
    return KernelWeight("i8_16", out, tuple(w.shape))
