// elementwise.cu — GeGLU and soft-capping, each one pass over memory.
//
// References: minigemma.ops.mlp.geglu and minigemma.ops.softcap.softcap (float32, same order of
// operations; tanhf differs from NumPy's tanh by a few units in the last place):
//
//     geglu:    out = gelu_tanh(gate) · up,
//               gelu_tanh(z) = 0.5 · z · (1 + tanh(√(2/π) · (z + 0.044715 · z³)))
//     softcap:  out = cap · tanh(x / cap)
//
// Launch: block (ELEMENTWISE_THREADS), any grid: a grid-stride loop covers the n elements (the
// host launches ceil(n / ELEMENTWISE_THREADS) blocks, capped). Arrays: float32 [n],
// C-contiguous; out may not alias the inputs.
#include "common.cuh"

#define ELEMENTWISE_THREADS 256
#define SQRT_2_OVER_PI 0.7978845608028654f
#define GELU_CUBIC 0.044715f

extern "C" __global__ void geglu(const float* __restrict__ gate, const float* __restrict__ up,
                                 float* __restrict__ out, long long n)
{
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const float z = gate[i];
        const float gelu = 0.5f * z * (1.0f + tanhf(SQRT_2_OVER_PI * (z + GELU_CUBIC * z * z * z)));
        out[i] = gelu * up[i];
    }
}

extern "C" __global__ void softcap(const float* __restrict__ x, float* __restrict__ out,
                                   float cap, long long n)
{
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        out[i] = cap * tanhf(x[i] / cap);
}
