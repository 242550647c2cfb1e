"""bfloat16 without a bfloat16 dtype.

NumPy has no bfloat16. A bf16 number is the top 16 bits of a float32, so we keep bf16 data as
uint16 and convert with bit shifts:

    bf16 -> f32 : bits << 16                          (exact)
    f32 -> bf16 : round to nearest, ties to even, on the 16 bits that are dropped
"""
import numpy as np


def bf16_bits_to_f32(bits):
    """uint16 bf16 bit patterns -> float32 (exact)."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16_bits(x):
    """float32 -> uint16 bf16 bit patterns, round-to-nearest-even (NaN stays NaN)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounding = np.uint32(0x7FFF) + ((u >> 16) & np.uint32(1))
    rounded = ((u + rounding) >> 16).astype(np.uint16)
    nan = np.isnan(np.asarray(x, dtype=np.float32))
    return np.where(nan, np.uint16(0x7FC0), rounded)


def round_to_dtype(value, dtype_name):
    """Round a float32 value to `dtype_name` ("float32", "bfloat16", "float16") and back."""
    x = np.float32(value)
    if dtype_name == "bfloat16":
        return np.float32(bf16_bits_to_f32(f32_to_bf16_bits(np.array([x])))[0])
    if dtype_name == "float16":
        return np.float32(np.float16(x))
    return x
