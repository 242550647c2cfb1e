// rope.cu — rotary position embedding, half-split pairs (i, i + d/2) of the first d dims.
//
// Reference: minigemma.ops.rope.rope. For row (b, t, n) at position p = positions[b, t] and
// i = 0 … d/2 − 1 (d = rot_dim):
//
//     θ_i = (float(p) / scale) · inv_freq[i]           inv_freq[i] = 1 / base^(2i/d), float32
//     out[i]       = x[i] · cos θ_i − x[i + d/2] · sin θ_i
//     out[i + d/2] = x[i + d/2] · cos θ_i + x[i] · sin θ_i
//     out[j]       = x[j]                               j ≥ d
//
// The host computes inv_freq with the reference's own float32 formula (rope.rope_angles), so the
// angles are the reference's; cosf / sinf differ from NumPy's by a few units in the last place.
//
// Launch: block (ROPE_THREADS), any grid: a grid-stride loop over the n = B·T·N·H elements, one
// thread per output element. Arrays (C-contiguous): x, out float32 [B, T, N, H]; positions
// int64 [B, T]; inv_freq float32 [d/2].
#include "common.cuh"

#define ROPE_THREADS 256

extern "C" __global__ void rope(const float* __restrict__ x,
                                const long long* __restrict__ positions,
                                const float* __restrict__ inv_freq, float* __restrict__ out,
                                int N, int H, int rot_dim, float scale, long long n)
{
    const int half = rot_dim / 2;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += stride) {
        const long long row = e / H;  // (b, t, n) flattened
        const int j = (int)(e % H);
        if (j >= rot_dim) {
            out[e] = x[e];
            continue;
        }
        const float theta = ((float)positions[row / N] / scale) * inv_freq[j % half];
        const float c = cosf(theta), s = sinf(theta);
        const float* x_row = x + row * H;
        out[e] = j < half ? x_row[j] * c - x_row[j + half] * s
                          : x_row[j] * c + x_row[j - half] * s;
    }
}
