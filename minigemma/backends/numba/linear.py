"""x @ Wᵀ in Numba for the GGML block kinds the backend keeps (q8_0, q4_0, q4_k, q6_k).

    decode  (few rows of x): matvec — one prange over the output rows o; each reads its row of
            blocks once and dots it with every x row, decoding inside the dot product:
                out[m, o] = Σ_b d_b · Σ_j q_bj · x[m, 32b + j]      (q8_0; the other kinds alike)
    prefill (many rows of x): the weight is decoded tile by tile (bit-exact, `blocks_numba`)
            into a float32 buffer and multiplied by BLAS: a GEMM, never token by token.

The dot products accumulate in float32 in their own order (fastmath reassociates to vectorise),
so they match the reference's dequantize-then-matmul to float32 rounding, not bitwise.

Two details keep the loops fast. The block length comes in as a run-time argument (`lanes` = 32):
with a literal 32, LLVM unrolls the inner loop and vectorises across blocks with gathers, 2–5×
slower. And q4_k's minimum term needs Σ x per 32-element sub-block, which is the same for
every output row, so it is computed once per call (`xsums`), as llama.cpp does.
"""
import threading

import numpy as np
from numba import njit

from minigemma.backends.numba.blocks import (
    F16_TO_F32,
    KIND_CODES,
    Q4_0,
    Q4_K,
    Q8_0,
    dequantize_rows,
    fp16_at,
    q4_k_scale_min,
    signed8,
)
from minigemma.backends.numba.jit import FASTMATH, kernel

GEMM_MIN_ROWS = 8  # from this many rows of x on, decode weight tiles and call BLAS
PARALLEL_MIN_BYTES = 1 << 18  # smaller weights: a serial matvec beats waking the threads
TILE_BYTES = 1 << 23  # float32 tile of decoded weight rows handed to the GEMM
LANES = 32  # the block length, passed at run time (see the module docstring)


@njit(inline="always", fastmath=FASTMATH)
def dot_q8_0(row, x, f16, lanes):
    acc = np.float32(0)
    for b in range(row.shape[0] // 34):
        off, base = b * 34, b * 32
        s = np.float32(0)
        for j in range(lanes):
            s += np.float32(signed8(row[off + 2 + j])) * x[base + j]
        acc += fp16_at(row, off, f16) * s
    return acc


@njit(inline="always", fastmath=FASTMATH)
def dot_q4_0(row, x, f16, lanes):
    acc = np.float32(0)
    half = lanes // 2
    for b in range(row.shape[0] // 18):
        off, base = b * 18, b * 32
        s = np.float32(0)
        for j in range(half):
            byte = np.int32(row[off + 2 + j])
            s += np.float32((byte & 0x0F) - 8) * x[base + j]
            s += np.float32((byte >> 4) - 8) * x[base + 16 + j]
        acc += fp16_at(row, off, f16) * s
    return acc


@njit(inline="always", fastmath=FASTMATH)
def dot_q4_k(row, x, xsums, f16, lanes):
    """Σ_s (d·sc_s) Σ_j q_sj x_sj − (dmin·m_s) Σ_j x_sj over the 8 sub-blocks s of 32."""
    acc = np.float32(0)
    for b in range(row.shape[0] // 144):
        off, base = b * 144, b * 256
        d, dmin = fp16_at(row, off, f16), fp16_at(row, off + 2, f16)
        for g in range(4):  # 32 bytes: sub-block 2g in the low nibbles, 2g + 1 in the high
            q, e = off + 16 + 32 * g, base + 64 * g
            s0 = np.float32(0)
            s1 = np.float32(0)
            for l in range(lanes):
                byte = np.int32(row[q + l])
                s0 += np.float32(byte & 0x0F) * x[e + l]
                s1 += np.float32(byte >> 4) * x[e + 32 + l]
            sc0, m0 = q4_k_scale_min(row, off, 2 * g)
            sc1, m1 = q4_k_scale_min(row, off, 2 * g + 1)
            sub = e // 32
            acc += d * (np.float32(sc0) * s0 + np.float32(sc1) * s1)
            acc -= dmin * (np.float32(m0) * xsums[sub] + np.float32(m1) * xsums[sub + 1])
    return acc


@njit(inline="always", fastmath=FASTMATH)
def dot_q6_k(row, x, f16, lanes):
    """Σ over the 16-element sub-blocks k of (d·scale_k) Σ (q − 32) x (quant.dequantize_q6_k)."""
    acc = np.float32(0)
    half = lanes // 2
    for b in range(row.shape[0] // 210):
        off, base = b * 210, b * 256
        d = fp16_at(row, off + 208, f16)
        for h in range(2):
            ql, qh, e = off + 64 * h, off + 128 + 32 * h, base + 128 * h
            for l0 in range(0, 32, 16):  # l0..l0+15 lie in one sub-block for each part
                s0 = np.float32(0)
                s1 = np.float32(0)
                s2 = np.float32(0)
                s3 = np.float32(0)
                for i in range(half):
                    l = l0 + i
                    low0, low1 = np.int32(row[ql + l]), np.int32(row[ql + l + 32])
                    high = np.int32(row[qh + l])
                    q0 = (low0 & 0x0F) | ((high & 3) << 4)  # element l
                    q1 = (low1 & 0x0F) | (((high >> 2) & 3) << 4)  # element l + 32
                    q2 = (low0 >> 4) | (((high >> 4) & 3) << 4)  # element l + 64
                    q3 = (low1 >> 4) | (((high >> 6) & 3) << 4)  # element l + 96
                    s0 += np.float32(q0 - 32) * x[e + l]
                    s1 += np.float32(q1 - 32) * x[e + 32 + l]
                    s2 += np.float32(q2 - 32) * x[e + 64 + l]
                    s3 += np.float32(q3 - 32) * x[e + 96 + l]
                k = off + 192 + 8 * h + l0 // 16  # scale of part p is k + 2p
                acc += d * (np.float32(signed8(row[k])) * s0 + np.float32(signed8(row[k + 2])) * s1
                            + np.float32(signed8(row[k + 4])) * s2
                            + np.float32(signed8(row[k + 6])) * s3)
    return acc


@kernel
def matvec(loop):
    def matvec(blocks, kind, x, xsums, f16, lanes, out):
        """blocks uint8 [O, row_bytes], x [M, I], xsums [M, I/32] -> out [M, O] = x @ Wᵀ."""
        for o in loop(blocks.shape[0]):  # each output row: its weights read once, for all x
            row = blocks[o]
            for m in range(x.shape[0]):
                if kind == Q8_0:
                    out[m, o] = dot_q8_0(row, x[m], f16, lanes)
                elif kind == Q4_0:
                    out[m, o] = dot_q4_0(row, x[m], f16, lanes)
                elif kind == Q4_K:
                    out[m, o] = dot_q4_k(row, x[m], xsums[m], f16, lanes)
                else:
                    out[m, o] = dot_q6_k(row, x[m], f16, lanes)
    return matvec


@njit(cache=True)
def block_sums(x, out):
    """x [M, I] -> out [M, I/32]: Σ of each 32-element slice (q4_k's minimum term)."""
    for m in range(x.shape[0]):
        for s in range(out.shape[1]):
            t = np.float32(0)
            for j in range(32):
                t += x[m, 32 * s + j]
            out[m, s] = t


def linear_blocks(x, w):
    """x float32 [M, I] (contiguous), w a QuantizedWeight [O, I] -> x @ Wᵀ float32 [M, O]."""
    M, (O, I) = x.shape[0], w.shape
    kind = KIND_CODES[w.kind]
    out = np.empty((M, O), dtype=np.float32)
    if M < GEMM_MIN_ROWS:  # decode: dequantize inside the dot products
        xsums = np.empty((M, I // 32 if w.kind == "q4_k" else 0), dtype=np.float32)
        if w.kind == "q4_k":
            block_sums(x, xsums)
        matvec(w.blocks, kind, x, xsums, F16_TO_F32, LANES, out,
               parallel=w.blocks.nbytes >= PARALLEL_MIN_BYTES)
        return out
    rows_per_tile = max(1, min(O, TILE_BYTES // (4 * I)))  # prefill: decode tiles, then GEMM
    tile = _scratch(rows_per_tile * I).reshape(rows_per_tile, I)
    if rows_per_tile == O:  # one tile: the GEMM writes the result itself
        dequantize_rows(w.blocks, kind, np.arange(O), 1.0, F16_TO_F32, tile)
        return np.matmul(x, tile.T, out=out)  # BLAS: [M, I] @ [I, O]
    for start in range(0, O, rows_per_tile):
        rows = np.arange(start, min(O, start + rows_per_tile))
        dequantize_rows(w.blocks, kind, rows, 1.0, F16_TO_F32, tile)
        out[:, start:start + rows.size] = x @ tile[:rows.size].T
    return out


_local = threading.local()


def _scratch(n):
    """A float32 buffer of n elements, kept per thread: a fresh 5 MB tile per call would be
    paged in again on every prefill matmul."""
    buf = getattr(_local, "buf", None)
    if buf is None or buf.size < n:
        buf = _local.buf = np.empty(n, dtype=np.float32)
    return buf[:n]
