// rglru_scan.cu — the RG-LRU recurrence: sequential in time, one thread per channel.
//
// Reference: minigemma.ops.rglru.rglru_scan (Griffin, De et al. 2024, §2.4). Per batch row b and
// channel l, for t = 0 … T−1:
//
//     h_t = a_t · h_{t−1} + √(1 − a_t²) · (gate_x_t · x_t)      (h_{−1} = h0)
//     where reset[b, t]: a_t = 0 and √(1 − a_t²) = 1, so h_t = gate_x_t · x_t
//     y_t = h_t,   h_last = h_{T−1}
//
// The state is kept and accumulated in float32, as in the reference.
//
// Launch: block (SCAN_THREADS), grid (ceil(L / SCAN_THREADS), B). Thread i of block (bx, b) owns
// channel l = bx · SCAN_THREADS + i of batch row b and walks its T steps; consecutive threads
// read consecutive channels of each [B, T, L] array.
//
// Arrays (C-contiguous): x, a, gate_x, y float32 [B, T, L]; h0, h_last float32 [B, L];
// reset uint8 [B, T] (1 = a segment starts here).
#include "common.cuh"

#define SCAN_THREADS 256

extern "C" __global__ void rglru_scan(const float* __restrict__ x, const float* __restrict__ a,
                                      const float* __restrict__ gate_x,
                                      const float* __restrict__ h0,
                                      const unsigned char* __restrict__ reset,
                                      float* __restrict__ y, float* __restrict__ h_last, int T,
                                      int L)
{
    const int l = blockIdx.x * SCAN_THREADS + threadIdx.x, b = blockIdx.y;
    if (l >= L)
        return;
    float h = h0[(long long)b * L + l];
    for (int t = 0; t < T; ++t) {
        const long long i = ((long long)b * T + t) * L + l;
        const bool start = reset[(long long)b * T + t] != 0;
        const float decay = start ? 0.0f : a[i];
        const float multiplier = start ? 1.0f : sqrtf(1.0f - a[i] * a[i]);
        h = decay * h + (x[i] * gate_x[i]) * multiplier;
        y[i] = h;
    }
    h_last[(long long)b * L + l] = h;
}
