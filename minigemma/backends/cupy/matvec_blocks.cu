// matvec_blocks.cu — x @ Wᵀ for a weight kept in GGML blocks, decoded inside the dot product.
//
// Reference: minigemma.backends.reference.NumpyBackend.linear on the dequantized weight
// (minigemma.formats.gguf.blocks.dequantize), i.e. for every row m of x and output row o
//
//     out[m, o] = Σ_i W[o, i] · x[m, i] = Σ_b Σ_e decode(block b of row o, e) · x[m, E·b + e]
//
// with E = block_elems of the kind. This is the decode path (few rows of x: M ≤ MATVEC_MAX_ROWS
// per launch; the host cuts larger M into chunks or, for prefill, decodes tiles of W with
// dequantize_blocks.cu and multiplies them with cuBLAS).
//
// Launch: block (32, MATVEC_WARPS), grid (ceil(O / MATVEC_WARPS)). Warp y of block bx owns the
// output row o = bx · MATVEC_WARPS + y; its lane j decodes elements j, j + 32, … of each block,
// so the lanes read consecutive bytes of the row and consecutive floats of x. Every lane keeps M
// partial sums; a butterfly over the warp adds them up and lane 0 writes out[m, o].
//
// Arrays: blocks uint8 [O, row_bytes] (row_bytes = I / E · block_bytes), x float32 [M, I],
// out float32 [M, O]; all C-contiguous.
#include "common.cuh"
#include "ggml_blocks.cuh"

#define MATVEC_WARPS 4
#define MATVEC_MAX_ROWS 8

template <int ELEMS, int BYTES, float (*DECODE)(const unsigned char*, int)>
__device__ void matvec_rows(const unsigned char* __restrict__ blocks, const float* __restrict__ x,
                            float* __restrict__ out, int O, int I, int M)
{
    const int o = blockIdx.x * MATVEC_WARPS + threadIdx.y;  // this warp's output row
    if (o >= O)
        return;  // the whole warp leaves together: no lane is missing from its shuffles
    const int lane = threadIdx.x, n_blocks = I / ELEMS;
    const unsigned char* row = blocks + (long long)o * n_blocks * BYTES;
    float acc[MATVEC_MAX_ROWS];
#pragma unroll
    for (int m = 0; m < MATVEC_MAX_ROWS; ++m)
        acc[m] = 0.0f;
    for (int b = 0; b < n_blocks; ++b) {
        const unsigned char* block = row + b * BYTES;
        for (int e = lane; e < ELEMS; e += WARP_SIZE) {
            const float w = DECODE(block, e);
            const int i = b * ELEMS + e;
#pragma unroll
            for (int m = 0; m < MATVEC_MAX_ROWS; ++m)
                if (m < M)
                    acc[m] += w * x[(long long)m * I + i];
        }
    }
#pragma unroll
    for (int m = 0; m < MATVEC_MAX_ROWS; ++m) {
        if (m < M) {  // M is the same for every lane: the shuffles stay converged
            const float total = warp_sum(acc[m]);
            if (lane == 0)
                out[(long long)m * O + o] = total;
        }
    }
}

extern "C" __global__ void matvec_q8_0(const unsigned char* __restrict__ blocks,
                                       const float* __restrict__ x, float* __restrict__ out,
                                       int O, int I, int M)
{
    matvec_rows<Q8_0_ELEMS, Q8_0_BYTES, decode_q8_0>(blocks, x, out, O, I, M);
}

extern "C" __global__ void matvec_q5_0(const unsigned char* __restrict__ blocks,
                                       const float* __restrict__ x, float* __restrict__ out,
                                       int O, int I, int M)
{
    matvec_rows<Q5_0_ELEMS, Q5_0_BYTES, decode_q5_0>(blocks, x, out, O, I, M);
}

extern "C" __global__ void matvec_q4_0(const unsigned char* __restrict__ blocks,
                                       const float* __restrict__ x, float* __restrict__ out,
                                       int O, int I, int M)
{
    matvec_rows<Q4_0_ELEMS, Q4_0_BYTES, decode_q4_0>(blocks, x, out, O, I, M);
}

extern "C" __global__ void matvec_q4_k(const unsigned char* __restrict__ blocks,
                                       const float* __restrict__ x, float* __restrict__ out,
                                       int O, int I, int M)
{
    matvec_rows<Q4_K_ELEMS, Q4_K_BYTES, decode_q4_k>(blocks, x, out, O, I, M);
}

extern "C" __global__ void matvec_q6_k(const unsigned char* __restrict__ blocks,
                                       const float* __restrict__ x, float* __restrict__ out,
                                       int O, int I, int M)
{
    matvec_rows<Q6_K_ELEMS, Q6_K_BYTES, decode_q6_k>(blocks, x, out, O, I, M);
}
