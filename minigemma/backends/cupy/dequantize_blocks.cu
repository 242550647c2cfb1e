// dequantize_blocks.cu — chosen rows of a GGML block matrix as float32, times a scale.
//
// Reference: minigemma.formats.gguf.blocks.dequantize_rows(w, rows) · scale, bit for bit
// (decode_<kind> repeats the reference's float32 operations; the product by scale is one
// correctly rounded multiply, and scale = 1 leaves the values as they are):
//
//     out[r, i] = decode(block i / E of row rows[r], i mod E) · scale
//
// It serves the embedding lookup (rows = token ids, scale = √D rounded) and the prefill path of
// linear (rows = a tile of output rows, scale = 1; cuBLAS then multiplies the tile).
//
// Launch: block (DEQUANTIZE_THREADS), grid (ceil(I / DEQUANTIZE_THREADS), R). Thread i of
// block (bx, r) writes out[r, bx · DEQUANTIZE_THREADS + i]: consecutive threads, consecutive
// elements. R ≤ 65535 (gridDim.y's limit: the host cuts longer lists). Arrays: blocks uint8
// [O, row_bytes], rows int64 [R] (each in [0, O): the host checks), out float32 [R, I]; all
// C-contiguous.
#include "common.cuh"
#include "ggml_blocks.cuh"

#define DEQUANTIZE_THREADS 256

template <int ELEMS, int BYTES, float (*DECODE)(const unsigned char*, int)>
__device__ void dequantize_rows(const unsigned char* __restrict__ blocks,
                                const long long* __restrict__ rows, float* __restrict__ out,
                                int I, float scale)
{
    const int r = blockIdx.y, i = blockIdx.x * DEQUANTIZE_THREADS + threadIdx.x;
    if (i >= I)
        return;
    const long long row_bytes = (long long)(I / ELEMS) * BYTES;
    const unsigned char* block = blocks + rows[r] * row_bytes + (i / ELEMS) * BYTES;
    out[(long long)r * I + i] = __fmul_rn(DECODE(block, i % ELEMS), scale);
}

extern "C" __global__ void dequantize_rows_q8_0(const unsigned char* __restrict__ blocks,
                                                const long long* __restrict__ rows,
                                                float* __restrict__ out, int I, float scale)
{
    dequantize_rows<Q8_0_ELEMS, Q8_0_BYTES, decode_q8_0>(blocks, rows, out, I, scale);
}

extern "C" __global__ void dequantize_rows_q5_0(const unsigned char* __restrict__ blocks,
                                                const long long* __restrict__ rows,
                                                float* __restrict__ out, int I, float scale)
{
    dequantize_rows<Q5_0_ELEMS, Q5_0_BYTES, decode_q5_0>(blocks, rows, out, I, scale);
}

extern "C" __global__ void dequantize_rows_q4_0(const unsigned char* __restrict__ blocks,
                                                const long long* __restrict__ rows,
                                                float* __restrict__ out, int I, float scale)
{
    dequantize_rows<Q4_0_ELEMS, Q4_0_BYTES, decode_q4_0>(blocks, rows, out, I, scale);
}

extern "C" __global__ void dequantize_rows_q4_k(const unsigned char* __restrict__ blocks,
                                                const long long* __restrict__ rows,
                                                float* __restrict__ out, int I, float scale)
{
    dequantize_rows<Q4_K_ELEMS, Q4_K_BYTES, decode_q4_k>(blocks, rows, out, I, scale);
}

extern "C" __global__ void dequantize_rows_q6_k(const unsigned char* __restrict__ blocks,
                                                const long long* __restrict__ rows,
                                                float* __restrict__ out, int I, float scale)
{
    dequantize_rows<Q6_K_ELEMS, Q6_K_BYTES, decode_q6_k>(blocks, rows, out, I, scale);
}
