"""x @ Wᵀ in Numba for the block kinds the backend keeps (q8_0, q4_0, q4_k, i8_16).

    decode  (few rows of x): matvec — the output rows of one or several weights (q, k and v;
            gate and up, with the GELU applied in the same chunks) cut into one run of about
            equal bytes per thread, one parallel loop; a thread done with its run claims what
            is left of the others' (`work_sharing`); each row of blocks is read once.
            One row of x: the blocks are decoded inside the dot product, eight lanes at a time
            (`vectors`), one vector sum per weight row,
                out[o] = Σ_b d_b · Σ_j q_bj · x[32b + j]      (q8_0; the other kinds alike)
            Four rows of x (a batch, or a speculative step's 1 + 3 positions): each group of
            eight weights is converted once and multiplied into one sum per row of x, scaled
            per block (`dot4_*`; the 4-bit kinds dequantize, w = d_b · q_bj, as the reference
            does). Two rows left over take `dot2_*` (the 8-bit kinds alike), a last one the
            one-row dot product, the weight row by then in L1.
    prefill (many rows of x): the weight is decoded tile by tile (bit-exact, `blocks_numba`)
            into a float32 buffer and multiplied by BLAS: a GEMM, never token by token.

The dot products accumulate in float32 in their own order (eight lanes, fused multiply-adds),
so they match the reference's dequantize-then-matmul to float32 rounding, not bitwise; a row
of x decoded in a group of four rounds differently from the same row alone.

Why eight-lane values instead of loops for LLVM to vectorise: a loop over one block vectorises,
but every block then ended in a horizontal sum and the loop's entry and exit checks, ~40
instructions per 32 multiply-adds; one vector accumulator across the blocks takes 17. One
thread, weights streamed from memory (G multiply-adds/s; the previous loops, two interleaved
runs, against these):

    q8_0 4.5 / 4.5 -> 8.0 / 8.7    q4_0 3.8 / 4.0 -> 6.3 / 7.4
    q4_k 5.1 / 5.3 -> 6.6 / 6.9    i8_16 3.7 / 4.7 -> 7.0 / 6.3

With two cores the q8_0 output head (178 MB) streams at about the speed of a plain byte scan
(docs/benchmarks.md). Four rows of x: q8_0 and i8_16 18–25, q4_k 11–15 G/s on one core.

- The fp16 scales are converted by F16C (`vectors.load_f16`); `blocks.fp16_at`'s 65536-entry
  table missed L1 on real scales (head 12.9 against 10.9 ms).
- Every block asks for the cache line PREFETCH_BYTES ahead (`vectors.prefetch`).
- q4_k: the 8 sub-block sums Σ q·x are scaled once per sub-block; its minimum term needs Σ x per
  32 elements, the same for every weight row, computed once per call (`block_sums`), as
  llama.cpp does. Its 6-bit scales stay int32 work (`blocks.q4_k_scale_min`): Numba widens
  integer arithmetic to int64 otherwise.
- q6_k is widened at load to i8_16 and q5_0 to q8_0 (blocks.py says why).
- Each kind's row loop is its own compiled function (`rows_of`): one loop inlining all the dot
  products ran q8_0 10 % and q4_k 20 % slower.

4-bit weights stay compute-bound in float32: 5–6 vector instructions per 8 weights (load, mask
or shift, widen, convert, multiply-add) against 3 for int8. llama.cpp avoids that by quantizing
x to int8 too (integer multiply-adds); that changes x by up to 1/254 of its block's maximum and
the real model's products by 1.4e-2 of their size (median over its layers; docs/benchmarks.md),
where the backend tolerance allows 5e-6, so x stays float32.
"""
import itertools
import threading
import weakref

import numpy as np
from numba import njit

from minigemma.backends.numba import vectors as V
from minigemma.backends.numba.blocks import (
    F16_TO_F32,
    KIND_CODES,
    LANES,
    Q4_0,
    Q4_K,
    Q8_0,
    dequantize_rows,
    q4_k_scale_min,
)
from minigemma.backends.numba.elementwise import geglu_exact_span, geglu_span
from minigemma.backends.numba.jit import FASTMATH, kernel
from minigemma.backends.numba.work_sharing import claim, fresh_counters

GEMM_MIN_ROWS = 32  # from this many rows of x on, decode weight tiles and call BLAS. Below it
#                    the matvec is faster (gate_proj at 16 rows 1.2 against 1.9 ms, even at 32;
#                    BLAS wins from 64: 3.0 against 3.4), and OpenBLAS's workers, spinning after
#                    each small GEMM, do not take the cores from Numba's threads
PARALLEL_MIN_BYTES = 1 << 18  # less weight than this in one call: a serial matvec beats waking
#                               the threads
MAX_WEIGHTS = 3  # weights per matvec call (q, k, v); fewer are padded with an empty weight, so
#                  that the kernel has one signature
PREFETCH_BYTES = 2048  # how far ahead in the weights the dot products ask for cache lines
#                        (a head-sized q8_0 matrix on two cores: 10.6–11.3 ms without,
#                        8.8–10.6 with, 4096: 8.4–9.0; in a decode step's matrices neither
#                        1024 nor 4096 measured better than the machine's noise)
TILE_BYTES = 1 << 23  # float32 tile of decoded weight rows handed to the GEMM
CHUNK_BYTES = 1 << 16  # weight bytes per claimed chunk of a matvec (head: 2.7k claims; 32 KB
#                        and 64 KB measured alike, docs/benchmarks.md)


@njit(inline="always", fastmath=FASTMATH)
def dot_q8_0(row, x, xsums):
    """row uint8 [I/32 · 34] (one weight row), x [I] -> Σ_b d_b Σ_j q_bj x_bj."""
    acc = V.zeros()
    for b in range(row.shape[0] // 34):
        off, e = 34 * b, 32 * b
        V.prefetch(row, off + PREFETCH_BYTES)
        s = V.mul(V.load_i8(row, off + 2), V.load_f32(x, e))  # the block's four quarters
        s = V.fma(V.load_i8(row, off + 10), V.load_f32(x, e + 8), s)
        s = V.fma(V.load_i8(row, off + 18), V.load_f32(x, e + 16), s)
        s = V.fma(V.load_i8(row, off + 26), V.load_f32(x, e + 24), s)
        acc = V.fma(V.splat(V.load_f16(row, off)), s, acc)
    return V.hsum(acc)


@njit(inline="always", fastmath=FASTMATH)
def dot_q4_0(row, x, xsums):
    """row uint8 [I/32 · 18], x [I] -> Σ_b d_b Σ_j (q_bj − 8) x_bj: a block's low nibbles
    are its values 0..15, the high ones 16..31."""
    acc = V.zeros()
    eight = V.splat(np.float32(8))
    for b in range(row.shape[0] // 18):
        off, e = 18 * b, 32 * b
        V.prefetch(row, off + PREFETCH_BYTES)
        s = V.mul(V.sub(V.load_nibbles(row, off + 2, 0), eight), V.load_f32(x, e))
        s = V.fma(V.sub(V.load_nibbles(row, off + 10, 0), eight), V.load_f32(x, e + 8), s)
        s = V.fma(V.sub(V.load_nibbles(row, off + 2, 4), eight), V.load_f32(x, e + 16), s)
        s = V.fma(V.sub(V.load_nibbles(row, off + 10, 4), eight), V.load_f32(x, e + 24), s)
        acc = V.fma(V.splat(V.load_f16(row, off)), s, acc)
    return V.hsum(acc)


@njit(inline="always", fastmath=FASTMATH)
def dot_q4_k(row, x, xsums):
    """row uint8 [I/256 · 144], x [I], xsums [I/32] ->
    Σ_s (d·sc_s) Σ_j q_sj x_sj − (dmin·m_s) Σ_j x_sj over the 8 sub-blocks s of 32 per block.

    Group g's 32 bytes hold sub-block 2g in their low nibbles and 2g + 1 in their high ones.
    """
    acc = V.zeros()
    mins = np.float32(0)
    for b in range(row.shape[0] // 144):
        off, e = 144 * b, 256 * b
        V.prefetch(row, off + PREFETCH_BYTES)  # 144 bytes: up to three cache lines
        V.prefetch(row, off + PREFETCH_BYTES + 64)
        V.prefetch(row, off + PREFETCH_BYTES + 128)
        d, dmin = V.load_f16(row, off), V.load_f16(row, off + 2)
        for g in range(4):
            q, xe = off + 16 + 32 * g, e + 64 * g
            lo = V.mul(V.load_nibbles(row, q, 0), V.load_f32(x, xe))  # sub-block 2g
            hi = V.mul(V.load_nibbles(row, q, 4), V.load_f32(x, xe + 32))  # 2g + 1
            for k in range(8, 32, 8):
                lo = V.fma(V.load_nibbles(row, q + k, 0), V.load_f32(x, xe + k), lo)
                hi = V.fma(V.load_nibbles(row, q + k, 4), V.load_f32(x, xe + 32 + k), hi)
            sc0, m0 = q4_k_scale_min(row, off, 2 * g)
            sc1, m1 = q4_k_scale_min(row, off, 2 * g + 1)
            acc = V.fma(V.splat(d * np.float32(sc0)), lo, acc)
            acc = V.fma(V.splat(d * np.float32(sc1)), hi, acc)
            mins += dmin * (np.float32(m0) * xsums[8 * b + 2 * g]
                            + np.float32(m1) * xsums[8 * b + 2 * g + 1])
    return V.hsum(acc) - mins


@njit(inline="always", fastmath=FASTMATH)
def dot_i8_16(row, x, xsums):
    """row: float32 scale[I/16] | int8 q[I] (blocks.widen_q6_k) -> Σ_k scale_k Σ_j q_kj x_kj."""
    n = x.shape[0]
    scales = row[:n // 4].view(np.float32)
    acc = V.zeros()
    for k in range(n // 16):
        off, e = n // 4 + 16 * k, 16 * k
        if k % 2 == 0:  # one prefetch per 32 bytes of values
            V.prefetch(row, off + PREFETCH_BYTES)
        s = V.mul(V.load_i8(row, off), V.load_f32(x, e))
        s = V.fma(V.load_i8(row, off + 8), V.load_f32(x, e + 8), s)
        acc = V.fma(V.splat(scales[k]), s, acc)
    return V.hsum(acc)


@njit(inline="always")
def store4(out, o, a0, a1, a2, a3):
    """out[r, o] = Σ lanes of a_r for the four rows r."""
    out[0, o], out[1, o], out[2, o], out[3, o] = V.hsum(a0), V.hsum(a1), V.hsum(a2), V.hsum(a3)


@njit(inline="always", fastmath=FASTMATH)
def dot4_q8_0(row, x, out, o):
    """row uint8 [I/32 · 34], x [4, I] -> out[:4, o] = x @ w: as dot_q8_0 for four rows of x,
    each eight-weight quarter of a block converted once for the four, then d_b · Σ per block.

    Per-block sums, so that a block's four multiply-adds into one running sum do not wait on
    the previous block's (w = d_b · q into one accumulator per row did; one core, 40 000 head
    rows: 4 rows 5.4–7.2 against 6.0–7.4 ms, 8 rows 10.5–12.5 against 13.1–14.3, and 2 rows
    3.6 against 7.6)."""
    a0 = a1 = a2 = a3 = V.zeros()
    for b in range(row.shape[0] // 34):
        off, e = 34 * b, 32 * b
        V.prefetch(row, off + PREFETCH_BYTES)
        q = V.load_i8(row, off + 2)
        s0, s1 = V.mul(q, V.load_f32(x[0], e)), V.mul(q, V.load_f32(x[1], e))
        s2, s3 = V.mul(q, V.load_f32(x[2], e)), V.mul(q, V.load_f32(x[3], e))
        for k in range(8, 32, 8):
            q = V.load_i8(row, off + 2 + k)
            s0, s1 = V.fma(q, V.load_f32(x[0], e + k), s0), V.fma(q, V.load_f32(x[1], e + k), s1)
            s2, s3 = V.fma(q, V.load_f32(x[2], e + k), s2), V.fma(q, V.load_f32(x[3], e + k), s3)
        d = V.splat(V.load_f16(row, off))
        a0, a1, a2, a3 = V.fma(d, s0, a0), V.fma(d, s1, a1), V.fma(d, s2, a2), V.fma(d, s3, a3)
    store4(out, o, a0, a1, a2, a3)


@njit(inline="always", fastmath=FASTMATH)
def fma4(w, x, i, a0, a1, a2, a3):
    """w: eight weights (float32x8), x [4, I] -> a_r + w · x[r, i:i + 8] for the four rows r."""
    return (V.fma(w, V.load_f32(x[0], i), a0), V.fma(w, V.load_f32(x[1], i), a1),
            V.fma(w, V.load_f32(x[2], i), a2), V.fma(w, V.load_f32(x[3], i), a3))


@njit(inline="always", fastmath=FASTMATH)
def dot4_q4_0(row, x, out, o):
    """row uint8 [I/32 · 18], x [4, I] -> out[:4, o] = x @ w, w = d_b · (q_bj − 8)."""
    a0 = a1 = a2 = a3 = V.zeros()
    eight = V.splat(np.float32(8))
    for b in range(row.shape[0] // 18):
        off, e = 18 * b, 32 * b
        V.prefetch(row, off + PREFETCH_BYTES)
        d = V.splat(V.load_f16(row, off))
        for k in range(0, 32, 8):  # values k..k + 7: the low nibbles of bytes k.. (k < 16),
            q, shift = off + 2 + k % 16, 4 * (k // 16)  # else the high ones of bytes k − 16..
            w = V.mul(d, V.sub(V.load_nibbles(row, q, shift), eight))
            a0, a1, a2, a3 = fma4(w, x, e + k, a0, a1, a2, a3)
    store4(out, o, a0, a1, a2, a3)


@njit(inline="always", fastmath=FASTMATH)
def dot4_q4_k(row, x, out, o):
    """row uint8 [I/256 · 144], x [4, I] -> out[:4, o] = x @ w, w = (d·sc_s) · q − dmin·m_s
    on sub-block s (the product and the difference may fuse into one FMA)."""
    a0 = a1 = a2 = a3 = V.zeros()
    for b in range(row.shape[0] // 144):
        off, e = 144 * b, 256 * b
        for line in range(0, 192, 64):  # 144 bytes: up to three cache lines
            V.prefetch(row, off + PREFETCH_BYTES + line)
        d, dmin = V.load_f16(row, off), V.load_f16(row, off + 2)
        for s in range(8):  # sub-block s: the low (s even) or high nibbles of group s // 2
            sc, m = q4_k_scale_min(row, off, s)
            scale, offset = V.splat(d * np.float32(sc)), V.splat(dmin * np.float32(m))
            q, shift = off + 16 + 32 * (s // 2), 4 * (s % 2)
            for k in range(0, 32, 8):
                w = V.sub(V.mul(scale, V.load_nibbles(row, q + k, shift)), offset)
                a0, a1, a2, a3 = fma4(w, x, e + 32 * s + k, a0, a1, a2, a3)
    store4(out, o, a0, a1, a2, a3)


@njit(inline="always", fastmath=FASTMATH)
def dot4_i8_16(row, x, out, o):
    """As dot4_q8_0 for an i8_16 row (float32 scale[I/16] | int8 q[I]): scale_k · Σ per 16."""
    n = x.shape[1]
    scales = row[:n // 4].view(np.float32)
    a0 = a1 = a2 = a3 = V.zeros()
    for k in range(n // 16):
        off, e = n // 4 + 16 * k, 16 * k
        if k % 2 == 0:
            V.prefetch(row, off + PREFETCH_BYTES)
        q, r = V.load_i8(row, off), V.load_i8(row, off + 8)
        s0 = V.fma(r, V.load_f32(x[0], e + 8), V.mul(q, V.load_f32(x[0], e)))
        s1 = V.fma(r, V.load_f32(x[1], e + 8), V.mul(q, V.load_f32(x[1], e)))
        s2 = V.fma(r, V.load_f32(x[2], e + 8), V.mul(q, V.load_f32(x[2], e)))
        s3 = V.fma(r, V.load_f32(x[3], e + 8), V.mul(q, V.load_f32(x[3], e)))
        scale = V.splat(scales[k])
        a0, a1, a2, a3 = (V.fma(scale, s0, a0), V.fma(scale, s1, a1), V.fma(scale, s2, a2),
                          V.fma(scale, s3, a3))
    store4(out, o, a0, a1, a2, a3)


def one_weight_row_at_a_time(dot4):
    """dot8 from a four-row kernel: weight rows o and, when `pair`, o + 1, one after the other
    (two rows' sums beside their accumulators do not fit the 16 vector registers: q4_k at 4
    rows of x, one core, 11.7 G multiply-adds/s one weight row at a time, 9.3 two at a time)."""
    @njit(inline="always", fastmath=FASTMATH)
    def dot8(r0, r1, x, out, o, pair):
        dot4(r0, x, out, o)
        if pair:
            dot4(r1, x, out, o + 1)
    return dot8


@njit(inline="always", fastmath=FASTMATH)
def dot2_q8_0(row, x, xsums, out, o):
    """row uint8 [I/32 · 34], x [2, I] -> out[:2, o] = x @ w: as dot_q8_0, each block's
    eight-weight quarters converted once for both rows of x, then d_b · Σ per block.

    Two calls of dot_q8_0 take 5.3 ms for 40 000 head rows on one core, this 3.6, and w = d_b · q
    into one running sum per row 7.6 (each block's four multiply-adds wait on each other)."""
    a0 = a1 = V.zeros()
    for b in range(row.shape[0] // 34):
        off, e = 34 * b, 32 * b
        V.prefetch(row, off + PREFETCH_BYTES)
        q = V.load_i8(row, off + 2)
        s0, s1 = V.mul(q, V.load_f32(x[0], e)), V.mul(q, V.load_f32(x[1], e))
        for k in range(8, 32, 8):
            q = V.load_i8(row, off + 2 + k)
            s0, s1 = V.fma(q, V.load_f32(x[0], e + k), s0), V.fma(q, V.load_f32(x[1], e + k), s1)
        d = V.splat(V.load_f16(row, off))
        a0, a1 = V.fma(d, s0, a0), V.fma(d, s1, a1)
    out[0, o], out[1, o] = V.hsum(a0), V.hsum(a1)


@njit(inline="always", fastmath=FASTMATH)
def dot2_i8_16(row, x, xsums, out, o):
    """As dot2_q8_0 for an i8_16 row (float32 scale[I/16] | int8 q[I])."""
    n = x.shape[1]
    scales = row[:n // 4].view(np.float32)
    a0 = a1 = V.zeros()
    for k in range(n // 16):
        off, e = n // 4 + 16 * k, 16 * k
        if k % 2 == 0:
            V.prefetch(row, off + PREFETCH_BYTES)
        q, r = V.load_i8(row, off), V.load_i8(row, off + 8)
        s0 = V.fma(r, V.load_f32(x[0], e + 8), V.mul(q, V.load_f32(x[0], e)))
        s1 = V.fma(r, V.load_f32(x[1], e + 8), V.mul(q, V.load_f32(x[1], e)))
        scale = V.splat(scales[k])
        a0, a1 = V.fma(scale, s0, a0), V.fma(scale, s1, a1)
    out[0, o], out[1, o] = V.hsum(a0), V.hsum(a1)


def two_rows(dot):
    """dot2 for the 4-bit kinds: the one-row `dot` on each of the two rows of x (their
    nibbles unpacked twice; the weight row is in L1 for the second)."""
    @njit(inline="always", fastmath=FASTMATH)
    def dot2(row, x, xsums, out, o):
        out[0, o] = dot(row, x[0], xsums[0])
        out[1, o] = dot(row, x[1], xsums[1])
    return dot2


def rows_of(dot, dot8, dot2):
    """The serial loop over rows lo..hi of one weight for one kind, compiled on its own (one
    loop inlining every kind's dot products ran q8_0 10 % and q4_k 20 % slower).

    Each weight row is read from memory once. The loop steps two weight rows at a time (an odd
    last one is passed twice, and stored once); four rows of x at a time take `dot8`, two rows
    left over `dot2`, and a last one the one-row `dot`, with the weight row by then in L1."""
    @njit(cache=True, fastmath=FASTMATH)
    def rows(blocks, x, xsums, out, lo, hi):
        M = x.shape[0]
        for o in range(lo, hi, 2):
            pair = o + 1 < hi
            o1 = o + 1 if pair else o
            m = 0
            while m + 4 <= M:
                dot8(blocks[o], blocks[o1], x[m:m + 4], out[m:m + 4], o, pair)
                m += 4
            if m + 2 <= M:
                dot2(blocks[o], x[m:m + 2], xsums[m:m + 2], out[m:m + 2], o)
                if pair:
                    dot2(blocks[o1], x[m:m + 2], xsums[m:m + 2], out[m:m + 2], o1)
                m += 2
            if m < M:
                out[m, o] = dot(blocks[o], x[m], xsums[m])
                if pair:
                    out[m, o1] = dot(blocks[o1], x[m], xsums[m])
    return rows


rows_q8_0 = rows_of(dot_q8_0, one_weight_row_at_a_time(dot4_q8_0), dot2_q8_0)
rows_q4_0 = rows_of(dot_q4_0, one_weight_row_at_a_time(dot4_q4_0), two_rows(dot_q4_0))
rows_q4_k = rows_of(dot_q4_k, one_weight_row_at_a_time(dot4_q4_k), two_rows(dot_q4_k))
rows_i8_16 = rows_of(dot_i8_16, one_weight_row_at_a_time(dot4_i8_16), dot2_i8_16)


@njit(cache=True)
def rows_any(blocks, kind, x, xsums, out, lo, hi):
    """out[:, lo:hi] = x @ W[lo:hi]ᵀ for a weight of any kept kind."""
    if kind == Q8_0:
        rows_q8_0(blocks, x, xsums, out, lo, hi)
    elif kind == Q4_0:
        rows_q4_0(blocks, x, xsums, out, lo, hi)
    elif kind == Q4_K:
        rows_q4_k(blocks, x, xsums, out, lo, hi)
    else:
        rows_i8_16(blocks, x, xsums, out, lo, hi)


@kernel
def matvec(loop):
    def matvec(weights, kinds, chunks, starts, counters, x, xsums, outs):
        """weights: a tuple of uint8 blocks [O_w, row_bytes_w], kinds [n_weights], chunks
        int64 [C, 3] = (weight, first row, end row), starts [T + 1] (run r: chunks starts[r]
        to starts[r + 1]), counters (`work_sharing.fresh_counters`), x [M, I], xsums [M, I/32]
        (q4_k) -> outs[w] [M, O_w] = x @ W_wᵀ, each chunk's rows."""
        for t in loop(starts.shape[0] - 1):  # thread t: its own run, then the others' rest
            c = claim(counters, starts, t)
            while c >= 0:
                w, lo, hi = chunks[c, 0], chunks[c, 1], chunks[c, 2]
                rows_any(weights[w], kinds[w], x, xsums, outs[w], lo, hi)
                c = claim(counters, starts, t)
    return matvec


@kernel
def matvec_geglu(loop):
    def matvec_geglu(gate_w, up_w, kinds, chunks, starts, counters, x, xsums, exact, gate, up,
                     out):
        """gate_w, up_w uint8 blocks [F, row_bytes], kinds [2], chunks int64 [C, 3] (the rows
        of chunk c: chunks[c, 1] to chunks[c, 2]), starts and counters as in matvec,
        x [M, I] -> gate, up [M, F] (scratch) and out [M, F] = geglu(x @ W_gateᵀ, x @ W_upᵀ):
        each chunk its rows of the three."""
        for t in loop(starts.shape[0] - 1):
            c = claim(counters, starts, t)
            while c >= 0:
                lo, hi = chunks[c, 1], chunks[c, 2]
                rows_any(gate_w, kinds[0], x, xsums, gate, lo, hi)
                rows_any(up_w, kinds[1], x, xsums, up, lo, hi)
                for m in range(x.shape[0]):  # the GELU of these rows, while in cache
                    if exact:
                        geglu_exact_span(gate[m], up[m], out[m], lo, hi)
                    else:
                        geglu_span(gate[m], up[m], out[m], lo, hi)
                c = claim(counters, starts, t)
    return matvec_geglu


@njit(cache=True, fastmath=FASTMATH)
def block_sums(x, width, out):
    """x [M, I] -> out [M, I/width]: Σ of each `width`-element slice."""
    for m in range(x.shape[0]):
        for s in range(out.shape[1]):
            t = np.float32(0)
            for j in range(width):
                t += x[m, width * s + j]
            out[m, s] = t


_EMPTY_BLOCKS = np.zeros((0, 0), np.uint8)
_EMPTY_BLOCKS.flags.writeable = False  # the same Numba type as the weights' read-only views
_EMPTY_OUT = np.zeros((0, 0), np.float32)


def thread_runs(sizes, threads):
    """sizes [(rows, row_bytes)] of the weights in order -> (chunks int64 [C, 3] of (weight,
    first row, end row), starts int64 [threads + 1]): the weights' rows, one after the other,
    cut into `threads` runs of about equal bytes, run t being chunks starts[t]..starts[t + 1];
    each run's part of a weight is cut into chunks of about CHUNK_BYTES (an even number of
    rows, for the loop over pairs of weight rows).

    Thread t works through run t first: with no thread late, each does exactly its run. Cut per
    weight instead of per call, the q/k/v rows split 960 against 576 rows of 680 bytes.
    """
    row_bytes = np.concatenate([np.full(rows, nbytes, np.float64) for rows, nbytes in sizes])
    middles = np.cumsum(row_bytes) - row_bytes / 2  # [total rows]; a row joins the run of
    cuts = np.searchsorted(middles, row_bytes.sum() * np.arange(1, threads) / threads)  # its middle
    bounds = np.concatenate([[0], cuts, [row_bytes.size]])  # run t: rows bounds[t]..bounds[t+1]
    firsts = np.cumsum([0] + [rows for rows, _ in sizes])
    chunks, starts = [], [0]
    for lo, hi in itertools.pairwise(bounds):
        for w, (a, b) in enumerate(itertools.pairwise(firsts)):  # this run's rows of weight w
            first, end = max(lo, a) - a, min(hi, b) - a
            step = max(2, CHUNK_BYTES // sizes[w][1] // 2 * 2)
            chunks += [(w, r, min(end, r + step)) for r in range(first, end, step)]
        starts.append(len(chunks))
    return np.array(chunks, np.int64).reshape(-1, 3), np.array(starts, np.int64)


class MatvecPlan:
    """How one matvec call over `weights` is cut into chunks (computed once per weight tuple):
    one run of rows per thread (`thread_runs`), or, serially, one run.

    paired: the weights have the same rows and a chunk takes the same rows of each (the fused
    GeGLU); otherwise each chunk takes rows of one weight.
    """

    def __init__(self, weights, threads, paired=False):
        self.weights = tuple(weakref.ref(w) for w in weights)  # `plan_for` checks these
        self.kinds = np.array([KIND_CODES[w.kind] for w in weights] + [0] * (
            MAX_WEIGHTS - len(weights)), np.int64)
        total = sum(w.blocks.nbytes for w in weights)
        self.parallel = total >= PARALLEL_MIN_BYTES and threads > 1
        sizes = [w.blocks.shape for w in weights]
        if paired:
            sizes = [(sizes[0][0], sum(row_bytes for _, row_bytes in sizes))]
        self.chunks, self.starts = thread_runs(sizes, threads if self.parallel else 1)
        self.needs = {k for k in (w.kind for w in weights)}

    def work(self):
        """(chunks, starts, counters) for one call: the counters are fresh each time."""
        return self.chunks, self.starts, fresh_counters(self.starts)


_plans = {}


def plan_for(weights, threads, paired=False):
    """The MatvecPlan of these weights, made on their first call. Plans are kept by the weights'
    ids and hold them only weakly (a plan is 0.1 ms of Python, a decode step needs ~55)."""
    key = (tuple(id(w) for w in weights), threads, paired)
    plan = _plans.get(key)
    if plan is None or any(ref() is not w for ref, w in zip(plan.weights, weights)):
        if len(_plans) > 4096:  # plans of models long gone
            _plans.clear()
        plan = _plans[key] = MatvecPlan(weights, threads, paired)
    return plan


def _block_sums(x, plan):
    """The per-call sums of x over 32 elements that q4_k's one-row dot product needs, or an
    empty array."""
    needed = "q4_k" in plan.needs and x.shape[0] % 4
    xsums = np.empty((x.shape[0], x.shape[1] // 32 if needed else 0), np.float32)
    if xsums.size:
        block_sums(x, 32, xsums)
    return xsums


def matvec_many(x, weights, threads):
    """x float32 [M, I] (contiguous), weights QuantizedWeights [O_w, I] (at most MAX_WEIGHTS)
    -> tuple of x @ W_wᵀ float32 [M, O_w], in one (parallel or serial) kernel call."""
    plan = plan_for(weights, threads)
    outs = tuple(np.empty((x.shape[0], w.shape[0]), np.float32) for w in weights)
    pad = MAX_WEIGHTS - len(weights)
    matvec(tuple(w.blocks for w in weights) + (_EMPTY_BLOCKS,) * pad, plan.kinds, *plan.work(),
           x, _block_sums(x, plan), outs + (_EMPTY_OUT,) * pad, parallel=plan.parallel)
    return outs


def matvec_geglu_blocks(x, w_gate, w_up, exact, threads):
    """x float32 [M, I] (contiguous), w_gate, w_up QuantizedWeights [F, I] -> float32 [M, F]
    = geglu(x @ W_gateᵀ, x @ W_upᵀ), in one kernel call: the GELU runs in the matvec's chunks,
    on rows still in cache, instead of in a second parallel loop."""
    plan = plan_for((w_gate, w_up), threads, paired=True)
    M, F = x.shape[0], w_gate.shape[0]
    gate, up, out = (np.empty((M, F), np.float32) for _ in range(3))
    matvec_geglu(w_gate.blocks, w_up.blocks, plan.kinds[:2], *plan.work(), x,
                 _block_sums(x, plan), bool(exact), gate, up, out, parallel=plan.parallel)
    return out


def gemm_blocks(x, w):
    """x float32 [M, I] (contiguous, M large), w a QuantizedWeight [O, I] -> x @ Wᵀ float32
    [M, O]: the weight decoded in row tiles, each multiplied by BLAS."""
    M, (O, I) = x.shape[0], w.shape
    kind = KIND_CODES[w.kind]
    out = np.empty((M, O), dtype=np.float32)
    rows_per_tile = max(1, min(O, TILE_BYTES // (4 * I)))
    tile = _scratch(rows_per_tile * I).reshape(rows_per_tile, I)
    if rows_per_tile == O:  # one tile: the GEMM writes the result itself
        dequantize_rows(w.blocks, kind, np.arange(O), 1.0, F16_TO_F32, LANES, tile)
        return np.matmul(x, tile.T, out=out)  # BLAS: [M, I] @ [I, O]
    for start in range(0, O, rows_per_tile):
        rows = np.arange(start, min(O, start + rows_per_tile))
        dequantize_rows(w.blocks, kind, rows, 1.0, F16_TO_F32, LANES, tile)
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
