// ggml_blocks.cuh — decoding one element of a GGML block, for every block kind minigemma reads.
//
// The byte layouts are documented once, in minigemma/formats/gguf/blocks.py (one
// `dequantize_<kind>` each). decode_<kind>(block, e) is element e of the block that starts at
// `block`, computed with the reference's float32 operations in the reference's order; the _rn
// intrinsics keep the compiler from fusing a multiply and an add, so the value is bit-identical
// to `dequantize_<kind>(block)[e]`.
//
//   kind   elements / bytes   element e
//   q8_0   32 / 34            d · q_e                      q_e int8
//   q5_0   32 / 22            d · (q_e − 16)               q_e = 4 low bits | bit e of qh << 4
//   q4_0   32 / 18            d · (q_e − 8)                q_e 4 bits
//   q4_k   256 / 144          (d · sc_s) · q_e − dmin · m_s   sub-block s = e / 32, 6-bit sc, m
//   q6_k   256 / 210          (d · scale_k) · (q_e − 32)   k = e / 16, scale int8
//
// Multi-byte numbers are little-endian and read byte by byte: blocks of 34, 22, 18 and 210 bytes
// leave their fp16 and uint32 fields at addresses of any alignment.
#ifndef MINIGEMMA_GGML_BLOCKS_CUH
#define MINIGEMMA_GGML_BLOCKS_CUH

#define Q8_0_ELEMS 32
#define Q8_0_BYTES 34
#define Q5_0_ELEMS 32
#define Q5_0_BYTES 22
#define Q4_0_ELEMS 32
#define Q4_0_BYTES 18
#define Q4_K_ELEMS 256
#define Q4_K_BYTES 144
#define Q6_K_ELEMS 256
#define Q6_K_BYTES 210

// IEEE binary16 bits -> float32, exactly (every fp16 value is a float32 value).
__device__ __forceinline__ float half_to_float(unsigned int h)
{
    const unsigned int sign = (h & 0x8000u) << 16;
    const unsigned int exponent = (h >> 10) & 0x1fu, mantissa = h & 0x3ffu;
    if (exponent == 0) {  // zero or subnormal: mantissa · 2^−24
        const float magnitude = (float)mantissa * 5.9604644775390625e-8f;
        return sign ? -magnitude : magnitude;
    }
    if (exponent == 31)  // infinity or NaN
        return __int_as_float(sign | 0x7f800000u | (mantissa << 13));
    return __int_as_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));  // rebias 15 -> 127
}

__device__ __forceinline__ float fp16_at(const unsigned char* p)
{
    return half_to_float((unsigned int)p[0] | ((unsigned int)p[1] << 8));
}

__device__ __forceinline__ unsigned int u32_at(const unsigned char* p)
{
    return (unsigned int)p[0] | ((unsigned int)p[1] << 8) | ((unsigned int)p[2] << 16) |
           ((unsigned int)p[3] << 24);
}

// The low nibble of byte j holds element j, the high nibble element j + half (the _0 kinds).
__device__ __forceinline__ int nibble(const unsigned char* packed, int e, int half)
{
    return e < half ? (packed[e] & 0x0F) : (packed[e - half] >> 4);
}

__device__ __forceinline__ float decode_q8_0(const unsigned char* block, int e)
{
    return __fmul_rn((float)(signed char)block[2 + e], fp16_at(block));
}

__device__ __forceinline__ float decode_q5_0(const unsigned char* block, int e)
{
    const int high = (u32_at(block + 2) >> e) & 1;
    const int q = (nibble(block + 6, e, 16) | (high << 4)) - 16;
    return __fmul_rn(fp16_at(block), (float)q);
}

__device__ __forceinline__ float decode_q4_0(const unsigned char* block, int e)
{
    return __fmul_rn(fp16_at(block), (float)(nibble(block + 2, e, 16) - 8));
}

// Scale and min of sub-block s (0…7) from the 12 packed bytes at block + 4:
//   bytes 0…3: [sc4…7 bits 4-5][sc0…3]   4…7: [m4…7 bits 4-5][m0…3]   8…11: [m4…7 low][sc4…7 low]
__device__ __forceinline__ void q4_k_scale_min(const unsigned char* block, int s, int* sc, int* m)
{
    const unsigned char* p = block + 4;
    if (s < 4) {
        *sc = p[s] & 63;
        *m = p[s + 4] & 63;
    } else {
        *sc = (p[s + 4] & 0x0F) | ((p[s - 4] >> 6) << 4);
        *m = (p[s + 4] >> 4) | ((p[s] >> 6) << 4);
    }
}

__device__ __forceinline__ float decode_q4_k(const unsigned char* block, int e)
{
    const int s = e / 32, l = e % 32;  // sub-block 2g in the low nibbles of group g, 2g + 1 high
    const int byte = block[16 + 32 * (s / 2) + l];
    const int q = s % 2 == 0 ? (byte & 0x0F) : (byte >> 4);
    int sc, m;
    q4_k_scale_min(block, s, &sc, &m);
    const float scale = __fmul_rn(fp16_at(block), (float)sc);
    const float offset = __fmul_rn(fp16_at(block + 2), (float)m);
    return __fsub_rn(__fmul_rn(scale, (float)q), offset);
}

// Half h = e / 128 reads ql[64h …] and qh[32h …]; within it element 32·part + l takes
// the (part / 2)-th nibble of ql[l + 32·(part % 2)] and bits 2·part of qh[l].
__device__ __forceinline__ float decode_q6_k(const unsigned char* block, int e)
{
    const int h = e / 128, part = (e % 128) / 32, l = e % 32;
    const int low = (block[64 * h + l + 32 * (part % 2)] >> (4 * (part / 2))) & 0x0F;
    const int high = (block[128 + 32 * h + l] >> (2 * part)) & 3;
    const int q = (low | (high << 4)) - 32;
    const float scale = __fmul_rn(fp16_at(block + 208), (float)(signed char)block[192 + e / 16]);
    return __fmul_rn(scale, (float)q);
}

#endif  // MINIGEMMA_GGML_BLOCKS_CUH
