// attention_decode.cu — causal, windowed, soft-capped GQA attention for a few query rows, over a
// cache whose slots may sit in any order (a ring buffer).
//
// Reference: minigemma.ops.attention.attention. For query row (b, t, n), reading kv head
// kv = n / G (G = N / K query heads per kv head; the kv heads are never repeated):
//
//     allowed(s) = k_pos[b, s] ≠ EMPTY_SLOT (−1)  and  k_pos[b, s] ≤ p  and  p − k_pos[b, s] < window
//     score_s    = cap · tanh(q · k_s · scale / cap)   (cap = 0: q · k_s · scale)  where allowed
//     out        = Σ_s e_s · v_s / Σ_s e_s,    e_s = exp(score_s − max score), 0 where masked
//
// with p = q_pos[b, t]. The mask comes from positions, never from slot indices. A row with no
// allowed key gets NaN, as the reference's softmax over −∞ only (0 / 0). window = None is passed
// as the largest int64, cap = None as 0.
//
// Launch: block (ATTENTION_THREADS), grid (N, T, B): one thread block per query row.
//   pass 1  one warp per key (keys s = w, w + warps, …): its lanes split the H products, a
//           butterfly adds them, lane 0 stores the score (−∞ where masked) in `weights`; block max
//   pass 2  one thread per key: e_s = exp(score_s − max) back into `weights`; block sum
//   pass 3  one thread per head dimension h: Σ_s e_s · v[s, h] / Σ e
// The block reductions' barriers also publish what pass 1 and 2 wrote to `weights`.
//
// Arrays (C-contiguous): q [B, T, N, H], k/v [B, S, K, H], q_pos [B, T] and k_pos [B, S] int64,
// weights float32 [B, T, N, S] (scratch), out [B, T, N, H].
#include "common.cuh"

#define ATTENTION_THREADS 256
#define EMPTY_SLOT (-1)

extern "C" __global__ void attention_decode(const float* __restrict__ q,
                                            const float* __restrict__ k,
                                            const float* __restrict__ v,
                                            const long long* __restrict__ q_pos,
                                            const long long* __restrict__ k_pos,
                                            float* __restrict__ weights, float* __restrict__ out,
                                            int T, int N, int S, int K, int H, float scale,
                                            long long window, float cap)
{
    const int n = blockIdx.x, t = blockIdx.y, b = blockIdx.z;
    const int kv = n / (N / K);
    const long long row = ((long long)b * T + t) * N + n;  // this query row of q, out, weights
    const float* q_row = q + row * H;
    float* w = weights + row * S;
    const long long p = q_pos[(long long)b * T + t];
    const int lane = thread_rank() % WARP_SIZE, warp = thread_rank() / WARP_SIZE;
    const int warps = block_threads() / WARP_SIZE;

    float top = -positive_infinity();  // pass 1: scores and their max
    for (int s = warp; s < S; s += warps) {
        const long long kp = k_pos[(long long)b * S + s];
        if (kp == EMPTY_SLOT || kp > p || p - kp >= window) {  // the same for the whole warp
            if (lane == 0)
                w[s] = -positive_infinity();
            continue;
        }
        const float* k_row = k + (((long long)b * S + s) * K + kv) * H;
        float dot = 0.0f;
        for (int h = lane; h < H; h += WARP_SIZE)
            dot += q_row[h] * k_row[h];
        float score = warp_sum(dot) * scale;
        if (cap != 0.0f)
            score = cap * tanhf(score / cap);
        if (lane == 0)
            w[s] = score;
        top = fmaxf(top, score);
    }
    top = block_max(top);
    if (top == -positive_infinity()) {  // no key allowed: the reference's 0 / 0
        for (int h = thread_rank(); h < H; h += block_threads())
            out[row * H + h] = quiet_nan();
        return;  // every thread of the block returns here: `top` is the block's
    }

    float total = 0.0f;  // pass 2: unnormalised weights (exp(−∞) = 0 for masked keys)
    for (int s = thread_rank(); s < S; s += block_threads()) {
        const float e = expf(w[s] - top);
        w[s] = e;
        total += e;
    }
    total = block_sum(total);

    for (int h = thread_rank(); h < H; h += block_threads()) {  // pass 3: weighted values
        float acc = 0.0f;
        for (int s = 0; s < S; ++s)
            acc += w[s] * v[(((long long)b * S + s) * K + kv) * H + h];
        out[row * H + h] = acc / total;
    }
}
