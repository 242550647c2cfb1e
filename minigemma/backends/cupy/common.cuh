// common.cuh — what every kernel of this folder shares: constants, bit casts, and sums and maxima
// over a warp and over a thread block.
//
// The kernels are plain CUDA C with no headers of their own (NVRTC has no standard library), so
// they also compile with g++ and cpu_shim.h, which runs them on CPU threads under sanitizers.
//
//   warp_sum(v) / warp_max(v)    the sum / max of v over the 32 lanes, returned to every lane
//   block_sum(v) / block_max(v)  the same over the whole thread block (every thread must call
//                                it: it holds two __syncthreads), returned to every thread
//
// Block reductions need blockDim.x · blockDim.y · blockDim.z to be a multiple of 32.
#ifndef MINIGEMMA_COMMON_CUH
#define MINIGEMMA_COMMON_CUH

#define WARP_SIZE 32
#define FULL_MASK 0xffffffffu

__device__ __forceinline__ float positive_infinity() { return __int_as_float(0x7f800000); }
__device__ __forceinline__ float quiet_nan() { return __int_as_float(0x7fc00000); }

__device__ __forceinline__ int thread_rank()  // this thread's index in its block, 0 … n − 1
{
    return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
}

__device__ __forceinline__ int block_threads()
{
    return blockDim.x * blockDim.y * blockDim.z;
}

template <typename T>
__device__ __forceinline__ T warp_sum(T v)
{
    for (int offset = WARP_SIZE / 2; offset > 0; offset /= 2)  // butterfly: every lane ends with Σ
        v += __shfl_xor_sync(FULL_MASK, v, offset);
    return v;
}

template <typename T>
__device__ __forceinline__ T warp_max(T v)
{
    for (int offset = WARP_SIZE / 2; offset > 0; offset /= 2) {
        T other = __shfl_xor_sync(FULL_MASK, v, offset);
        v = other > v ? other : v;
    }
    return v;
}

// The partial results of the warps meet in shared memory; the trailing __syncthreads lets the
// next reduction reuse `partial` only after every thread has read it.
template <typename T>
__device__ T block_sum(T v)
{
    __shared__ T partial[WARP_SIZE];
    const int warp = thread_rank() / WARP_SIZE, warps = block_threads() / WARP_SIZE;
    v = warp_sum(v);
    if (thread_rank() % WARP_SIZE == 0)
        partial[warp] = v;
    __syncthreads();
    T total = 0;
    for (int w = 0; w < warps; ++w)
        total += partial[w];
    __syncthreads();
    return total;
}

template <typename T>
__device__ T block_max(T v)
{
    __shared__ T partial[WARP_SIZE];
    const int warp = thread_rank() / WARP_SIZE, warps = block_threads() / WARP_SIZE;
    v = warp_max(v);
    if (thread_rank() % WARP_SIZE == 0)
        partial[warp] = v;
    __syncthreads();
    T top = partial[0];
    for (int w = 1; w < warps; ++w)
        top = partial[w] > top ? partial[w] : top;
    __syncthreads();
    return top;
}

#endif  // MINIGEMMA_COMMON_CUH
