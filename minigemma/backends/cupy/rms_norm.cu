// rms_norm.cu — RMSNorm of each row, fused: one read for the sum of squares, one to scale.
//
// Reference: minigemma.ops.norms.rms_norm (gain = 1 + w, added once at load):
//
//     out[r, d] = x[r, d] / sqrt(Σ_d' x[r, d']² / D + eps) · gain[d]
//
// Launch: block (NORM_THREADS), grid (R): one thread block per row; its threads stride over the
// D columns, and block_sum adds their sums of squares. Arrays (C-contiguous): x, out float32
// [R, D], gain float32 [D].
#include "common.cuh"

#define NORM_THREADS 128

extern "C" __global__ void rms_norm(const float* __restrict__ x, const float* __restrict__ gain,
                                    float* __restrict__ out, int D, float eps)
{
    const long long row = blockIdx.x;
    const float* x_row = x + row * D;
    float squares = 0.0f;
    for (int d = thread_rank(); d < D; d += block_threads())
        squares += x_row[d] * x_row[d];
    const float rms = sqrtf(block_sum(squares) / (float)D + eps);
    for (int d = thread_rank(); d < D; d += block_threads())
        out[row * D + d] = x_row[d] / rms * gain[d];
}
