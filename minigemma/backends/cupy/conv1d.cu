// conv1d.cu — causal depthwise temporal convolution with bias and carried state.
//
// Reference: minigemma.ops.conv1d.conv1d (Griffin's Conv1D). With the window
// u = [state ; x] ([B, W − 1 + T, L]: the last W − 1 inputs seen, then the new ones):
//
//     y[b, t, l]     = b[l] + Σ_{k=0}^{W−1} w[k, l] · u[b, t + k, l]     (taps added in k order)
//     state'[b, j, l] = u[b, T + j, l]                                    j = 0 … W − 2
//
// so w[W − 1] multiplies the current input. One thread per channel walks the T steps.
//
// Launch: block (CONV_THREADS), grid (ceil(L / CONV_THREADS), B). Arrays (C-contiguous):
// x, y float32 [B, T, L]; w [W, L]; bias [L]; state, new_state [B, W − 1, L].
#include "common.cuh"

#define CONV_THREADS 256

// u[b, j, l] of the window [state ; x], for j in 0 … W − 2 + T.
__device__ __forceinline__ float window_at(const float* x, const float* state, int b, int j,
                                           int l, int T, int W, int L)
{
    return j < W - 1 ? state[((long long)b * (W - 1) + j) * L + l]
                     : x[((long long)b * T + (j - (W - 1))) * L + l];
}

extern "C" __global__ void conv1d(const float* __restrict__ x, const float* __restrict__ w,
                                  const float* __restrict__ bias, const float* __restrict__ state,
                                  float* __restrict__ y, float* __restrict__ new_state, int T,
                                  int W, int L)
{
    const int l = blockIdx.x * CONV_THREADS + threadIdx.x, b = blockIdx.y;
    if (l >= L)
        return;
    for (int t = 0; t < T; ++t) {
        float acc = bias[l];
        for (int k = 0; k < W; ++k)
            acc = acc + w[(long long)k * L + l] * window_at(x, state, b, t + k, l, T, W, L);
        y[((long long)b * T + t) * L + l] = acc;
    }
    for (int j = 0; j < W - 1; ++j)
        new_state[((long long)b * (W - 1) + j) * L + l] = window_at(x, state, b, T + j, l, T, W, L);
}
