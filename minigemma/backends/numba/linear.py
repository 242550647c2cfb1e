"""x @ Wᵀ in Numba for the block kinds the backend keeps (q8_0, q4_0, q4_k, i8_16).

    decode  (few rows of x): matvec — the output rows of one or several weights (q, k and v;
            gate and up, with the GELU applied in the same jobs) cut into jobs of about equal
            bytes, one parallel loop over the jobs; each row of blocks is read once.
            One row of x: the blocks are decoded inside the dot product,
                out[o] = Σ_b d_b · Σ_j q_bj · x[32b + j]      (q8_0; the other kinds alike)
            Several rows (a batch, or the drafts of a speculative step): the weight row is
            decoded once to float32 w_o (`blocks.decode_row`, in L1) and dotted with every row,
                out[m, o] = Σ_i w_o[i] · x[m, i],  two weight rows and four rows of x at a time
            (`dot_rows_2`). Decoding again for every row of x made 8 rows cost 4.3 single
            rows in the output head (90 ms against 21, `bench --generation`); unpacked, 2.4
            (55 against 23: one read, then 8 float32 dot products). One row stays on the fused
            dot product, which does not store and reload the values (head 19 against 24 ms).
    prefill (many rows of x): the weight is decoded tile by tile (bit-exact, `blocks_numba`)
            into a float32 buffer and multiplied by BLAS: a GEMM, never token by token.

The dot products accumulate in float32 in their own order (fastmath reassociates to vectorise),
so they match the reference's dequantize-then-matmul to float32 rounding, not bitwise.

What keeps the loops fast (single-thread matvec on the real model's matrices, thread CPU time,
best of 40, against the kernels before this version):
- The block length comes in as a run-time argument (`lanes` = 32): with a literal 32, LLVM
  unrolls the inner loop and vectorises across blocks with gathers, 2–5× slower.
- Integer work stays in int32 (`np.int32(...)` around every bit operation). Numba widens integer
  arithmetic to int64, and LLVM then unpacked nibbles in 64-bit lanes (4 per register instead of
  8) or converted int64 to float one by one.
- q4_k: one vector accumulator per sub-block (8) over the 32 lanes of a block, so the sub-block
  scales are applied once per sub-block, not once per weight; its minimum term needs Σ x per 32
  elements, the same for every output row, so it is computed once per call (`block_sums`), as
  llama.cpp does. 2.4 -> 3.4 GB/s per core.
- q6_k is widened at load to i8_16 (blocks.py): 2.6 GB/s of q6_k -> 10 GB/s of i8_16 (3.8 -> 8.0
  G weights/s). q8_0 is unchanged at 9.7 GB/s (34 bytes of weight per 32 multiply-adds: with two
  cores it streams at the memory's speed).
- Each kind's row loop is its own compiled function (`rows_of`): one loop inlining all the dot
  products ran q8_0 10 % and q4_k 20 % slower.

4-bit weights stay compute-bound in float32: 5–6 vector instructions per 8 weights (load, mask
or shift, widen, convert, multiply-add) against 3 for int8. llama.cpp avoids that by quantizing
x to int8 too (integer multiply-adds); that changes x by up to 1/254 of its block's maximum and
the real model's products by 1.4e-2 of their size (median over its layers; docs/benchmarks.md),
where the backend tolerance allows 5e-6, so x stays float32.
"""
import threading
import weakref

import numpy as np
from numba import njit

from minigemma.backends.numba.blocks import (
    F16_TO_F32,
    KIND_CODES,
    LANES,
    Q4_0,
    Q4_K,
    Q8_0,
    decode_row,
    dequantize_rows,
    fp16_at,
    q4_k_scale_min,
    signed8,
)
from minigemma.backends.numba.elementwise import geglu_exact_span, geglu_span
from minigemma.backends.numba.jit import FASTMATH, kernel

GEMM_MIN_ROWS = 32  # from this many rows of x on, decode weight tiles and call BLAS. Below it
#                    the matvec is faster (gate_proj at 16 rows 1.2 against 1.9 ms, even at 32;
#                    BLAS wins from 64: 3.0 against 3.4), and OpenBLAS's workers, spinning after
#                    each small GEMM, do not take the cores from Numba's threads
UNPACK_MIN_ROWS = 2  # from this many rows of x on, each weight row is unpacked once to float32
#                     and dotted with every row (`rows_unpacked`; module docstring)
PARALLEL_MIN_BYTES = 1 << 18  # less weight than this in one call: a serial matvec beats waking
#                               the threads
JOBS_PER_THREAD = 4  # jobs of a parallel matvec per thread: a late thread delays one small job
MAX_WEIGHTS = 3  # weights per matvec call (q, k, v); fewer are padded with an empty weight, so
#                  that the kernel has one signature
TILE_BYTES = 1 << 23  # float32 tile of decoded weight rows handed to the GEMM
F4, S4 = np.int32(15), np.int32(4)  # nibble mask, nibble shift


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
            s += np.float32(np.int32(np.int32(byte & F4) - 8)) * x[base + j]
            s += np.float32(np.int32(np.int32(byte >> S4) - 8)) * x[base + 16 + j]
        acc += fp16_at(row, off, f16) * s
    return acc


@njit(inline="always", fastmath=FASTMATH)
def dot_q4_k(blocks, x, xsums, f16, lanes):
    """blocks [I/256, 144] (one row), x [I], xsums [I/32] ->
    Σ_s (d·sc_s) Σ_j q_sj x_sj − (dmin·m_s) Σ_j x_sj over the 8 sub-blocks s of 32 per block.

    Group g's 32 bytes hold sub-block 2g in their low nibbles and 2g + 1 in their high ones.
    """
    acc = np.float32(0)
    mins = np.float32(0)
    for b in range(blocks.shape[0]):
        blk = blocks[b]
        t0 = t1 = t2 = t3 = t4 = t5 = t6 = t7 = np.float32(0)  # Σ q x of sub-blocks 0..7
        for l in range(lanes):  # pass 1: the 8 sub-block sums, lane by lane
            q0, q1 = np.int32(blk[16 + l]), np.int32(blk[48 + l])
            q2, q3 = np.int32(blk[80 + l]), np.int32(blk[112 + l])
            e = 256 * b + l
            t0 += np.float32(np.int32(q0 & F4)) * x[e]
            t1 += np.float32(np.int32(q0 >> S4)) * x[e + 32]
            t2 += np.float32(np.int32(q1 & F4)) * x[e + 64]
            t3 += np.float32(np.int32(q1 >> S4)) * x[e + 96]
            t4 += np.float32(np.int32(q2 & F4)) * x[e + 128]
            t5 += np.float32(np.int32(q2 >> S4)) * x[e + 160]
            t6 += np.float32(np.int32(q3 & F4)) * x[e + 192]
            t7 += np.float32(np.int32(q3 >> S4)) * x[e + 224]
        sc0, m0 = q4_k_scale_min(blk, 0, 0)  # pass 2: scales and minimums
        sc1, m1 = q4_k_scale_min(blk, 0, 1)
        sc2, m2 = q4_k_scale_min(blk, 0, 2)
        sc3, m3 = q4_k_scale_min(blk, 0, 3)
        sc4, m4 = q4_k_scale_min(blk, 0, 4)
        sc5, m5 = q4_k_scale_min(blk, 0, 5)
        sc6, m6 = q4_k_scale_min(blk, 0, 6)
        sc7, m7 = q4_k_scale_min(blk, 0, 7)
        acc += fp16_at(blk, 0, f16) * (
            (np.float32(sc0) * t0 + np.float32(sc1) * t1) + (np.float32(sc2) * t2
                                                             + np.float32(sc3) * t3)
            + (np.float32(sc4) * t4 + np.float32(sc5) * t5) + (np.float32(sc6) * t6
                                                               + np.float32(sc7) * t7))
        xs = xsums[8 * b:8 * b + 8]
        mins += fp16_at(blk, 2, f16) * (
            (np.float32(m0) * xs[0] + np.float32(m1) * xs[1]) + (np.float32(m2) * xs[2]
                                                                 + np.float32(m3) * xs[3])
            + (np.float32(m4) * xs[4] + np.float32(m5) * xs[5]) + (np.float32(m6) * xs[6]
                                                                   + np.float32(m7) * xs[7]))
    return acc - mins


@njit(inline="always", fastmath=FASTMATH)
def dot_i8_16(row, x, xsums, f16, lanes):
    """row: float32 scale[I/16] | int8 q[I] (blocks.widen_q6_k) -> Σ_k scale_k Σ_j q_kj x_kj,
    two 16-element scales per 32-lane pass."""
    n = x.shape[0]
    scales, q = row[:n // 4].view(np.float32), row[n // 4:].view(np.int8)
    half = lanes // 2
    acc = np.float32(0)
    for b in range(n // 32):
        base = 32 * b
        s0 = np.float32(0)
        s1 = np.float32(0)
        for j in range(half):
            s0 += np.float32(q[base + j]) * x[base + j]
            s1 += np.float32(q[base + half + j]) * x[base + half + j]
        acc += scales[2 * b] * s0 + scales[2 * b + 1] * s1
    return acc


def rows_of(dot, block_bytes=None):
    """The serial loop over rows lo..hi of one weight, for one kind's dot product, compiled on
    its own. With `block_bytes` the dot product gets its row as a [blocks, block_bytes] view
    (q4_k: 2.9 -> 3.4 GB/s against reshaping each row; q8_0 is 17 % faster without)."""
    @njit(cache=True, fastmath=FASTMATH)
    def rows(blocks, x, xsums, f16, lanes, out, lo, hi):
        if block_bytes is None:
            by_block = blocks.reshape(blocks.shape[0], 1, blocks.shape[1])
        else:
            by_block = blocks.reshape(blocks.shape[0], blocks.shape[1] // block_bytes,
                                      block_bytes)
        for o in range(lo, hi):  # each row of weights: read once, for every row of x
            for m in range(x.shape[0]):
                if block_bytes is None:
                    out[m, o] = dot(blocks[o], x[m], xsums[m], f16, lanes)
                else:
                    out[m, o] = dot(by_block[o], x[m], xsums[m], f16, lanes)
    return rows


@njit(inline="always", fastmath=FASTMATH)
def dot_q8_0_row(row, x, xsums, f16, lanes):
    return dot_q8_0(row, x, f16, lanes)


@njit(inline="always", fastmath=FASTMATH)
def dot_q4_0_row(row, x, xsums, f16, lanes):
    return dot_q4_0(row, x, f16, lanes)


rows_q8_0 = rows_of(dot_q8_0_row)
rows_q4_0 = rows_of(dot_q4_0_row)
rows_q4_k = rows_of(dot_q4_k, 144)
rows_i8_16 = rows_of(dot_i8_16)


@njit(inline="always", fastmath=FASTMATH)
def dot_rows(w, x, out, o):
    """w float32 [I] (one unpacked weight row), x [M, I] -> out[:, o] = x @ w."""
    for m in range(x.shape[0]):
        s = np.float32(0)
        for i in range(x.shape[1]):
            s += w[i] * x[m, i]
        out[m, o] = s


@njit(inline="always", fastmath=FASTMATH)
def dot_rows_2(w, v, x, out, o):
    """w, v float32 [I] (weight rows o and o + 1, unpacked), x [M, I] -> out[:, o:o + 2].

    out[m, o + r] = Σ_i w_r[i] · x[m, i], four rows of x at a time: each step loads 2 weight and
    4 x vectors for 8 multiply-adds into 8 independent sums. (One weight row against 8 rows of x
    loads 9 vectors per 8: the head at 8 rows took 68 ms against 55.)"""
    M, I = x.shape
    m = 0
    while m + 4 <= M:
        a0 = a1 = a2 = a3 = b0 = b1 = b2 = b3 = np.float32(0)
        for i in range(I):
            p, q = w[i], v[i]
            x0, x1, x2, x3 = x[m, i], x[m + 1, i], x[m + 2, i], x[m + 3, i]
            a0 += p * x0
            a1 += p * x1
            a2 += p * x2
            a3 += p * x3
            b0 += q * x0
            b1 += q * x1
            b2 += q * x2
            b3 += q * x3
        out[m, o], out[m + 1, o], out[m + 2, o], out[m + 3, o] = a0, a1, a2, a3
        out[m, o + 1], out[m + 1, o + 1], out[m + 2, o + 1], out[m + 3, o + 1] = b0, b1, b2, b3
        m += 4
    for r in range(m, M):  # the last 1–3 rows of x
        a0 = b0 = np.float32(0)
        for i in range(I):
            a0 += w[i] * x[r, i]
            b0 += v[i] * x[r, i]
        out[r, o], out[r, o + 1] = a0, b0


@njit(cache=True, fastmath=FASTMATH)
def rows_unpacked(blocks, kind, x, f16, lanes, out, lo, hi):
    """out[:, lo:hi] = x @ W[lo:hi]ᵀ for several rows of x: weight rows are decoded to float32
    (`decode_row`, the exact decoder) two at a time into L1 and dotted with every row of x. One
    dot product serves every kind (the kind only picks the decoding): a quarter of the code to
    compile."""
    w = np.empty((2, x.shape[1]), np.float32)  # two weight rows [2, I]
    for o in range(lo, hi, 2):
        n = min(2, hi - o)  # 1: an odd last row
        for r in range(n):  # one call site: the decoding is inlined once
            decode_row(blocks[o + r], kind, f16, lanes, w[r])
        if n == 2:
            dot_rows_2(w[0], w[1], x, out, o)
        else:
            dot_rows(w[0], x, out, o)


@njit(cache=True)
def rows_any(blocks, kind, x, xsums, f16, lanes, out, lo, hi):
    """out[:, lo:hi] = x @ W[lo:hi]ᵀ for a weight of any kept kind."""
    if x.shape[0] >= UNPACK_MIN_ROWS:
        rows_unpacked(blocks, kind, x, f16, lanes, out, lo, hi)
    elif kind == Q8_0:
        rows_q8_0(blocks, x, xsums, f16, lanes, out, lo, hi)
    elif kind == Q4_0:
        rows_q4_0(blocks, x, xsums, f16, lanes, out, lo, hi)
    elif kind == Q4_K:
        rows_q4_k(blocks, x, xsums, f16, lanes, out, lo, hi)
    else:
        rows_i8_16(blocks, x, xsums, f16, lanes, out, lo, hi)


@kernel
def matvec(loop):
    def matvec(weights, kinds, jobs, x, xsums, f16, lanes, outs):
        """weights: a tuple of uint8 blocks [O_w, row_bytes_w], kinds [n_weights], jobs int64
        [J, 3] = (weight, first row, end row), x [M, I], xsums [M, I/32] (q4_k) ->
        outs[w] [M, O_w] = x @ W_wᵀ, each job's rows."""
        for j in loop(jobs.shape[0]):  # each job writes its own rows of one output
            w, lo, hi = jobs[j, 0], jobs[j, 1], jobs[j, 2]
            rows_any(weights[w], kinds[w], x, xsums, f16, lanes, outs[w], lo, hi)
    return matvec


@kernel
def matvec_geglu(loop):
    def matvec_geglu(gate_w, up_w, kinds, jobs, x, xsums, f16, lanes, exact, gate, up, out):
        """gate_w, up_w uint8 blocks [F, row_bytes], kinds [2], jobs int64 [J, 3] (the rows of
        job j: jobs[j, 1] to jobs[j, 2]), x [M, I] -> gate, up [M, F] (scratch) and
        out [M, F] = geglu(x @ W_gateᵀ, x @ W_upᵀ): each job its rows of the three."""
        for j in loop(jobs.shape[0]):
            lo, hi = jobs[j, 1], jobs[j, 2]
            rows_any(gate_w, kinds[0], x, xsums, f16, lanes, gate, lo, hi)
            rows_any(up_w, kinds[1], x, xsums, f16, lanes, up, lo, hi)
            for m in range(x.shape[0]):  # the GELU of this job's rows, while they are in cache
                if exact:
                    geglu_exact_span(gate[m], up[m], out[m], lo, hi)
                else:
                    geglu_span(gate[m], up[m], out[m], lo, hi)
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


class MatvecPlan:
    """How one matvec call over `weights` is cut into jobs (computed once per weight tuple).

    paired: the weights have the same rows and a job takes the same rows of each (the fused
    GeGLU); otherwise each job takes rows of one weight.
    """

    def __init__(self, weights, threads, paired=False):
        self.weights = tuple(weakref.ref(w) for w in weights)  # `plan_for` checks these
        self.kinds = np.array([KIND_CODES[w.kind] for w in weights] + [0] * (
            MAX_WEIGHTS - len(weights)), np.int64)
        total = sum(w.blocks.nbytes for w in weights)
        self.parallel = total >= PARALLEL_MIN_BYTES and threads > 1
        target = total / (JOBS_PER_THREAD * threads) if self.parallel else np.inf
        jobs = []
        for i, w in enumerate(weights[:1] if paired else weights):
            rows, row_bytes = w.blocks.shape  # rows per job: about `target` bytes of blocks
            if paired:
                row_bytes = sum(v.blocks.shape[1] for v in weights)
            step = int(max(1, min(rows, target // max(1, row_bytes))))
            jobs += [(i, lo, min(rows, lo + step)) for lo in range(0, rows, step)]
        self.jobs = np.array(jobs, np.int64).reshape(-1, 3)
        self.needs = {k for k in (w.kind for w in weights)}


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
    needed = "q4_k" in plan.needs and x.shape[0] < UNPACK_MIN_ROWS
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
    matvec(tuple(w.blocks for w in weights) + (_EMPTY_BLOCKS,) * pad, plan.kinds, plan.jobs, x,
           _block_sums(x, plan), F16_TO_F32, LANES, outs + (_EMPTY_OUT,) * pad,
           parallel=plan.parallel)
    return outs


def matvec_geglu_blocks(x, w_gate, w_up, exact, threads):
    """x float32 [M, I] (contiguous), w_gate, w_up QuantizedWeights [F, I] -> float32 [M, F]
    = geglu(x @ W_gateᵀ, x @ W_upᵀ), in one kernel call: the GELU runs in the matvec's jobs,
    on rows still in cache, instead of in a second parallel loop."""
    plan = plan_for((w_gate, w_up), threads, paired=True)
    M, F = x.shape[0], w_gate.shape[0]
    gate, up, out = (np.empty((M, F), np.float32) for _ in range(3))
    matvec_geglu(w_gate.blocks, w_up.blocks, plan.kinds[:2], plan.jobs, x, _block_sums(x, plan),
                 F16_TO_F32, LANES, bool(exact), gate, up, out, parallel=plan.parallel)
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
