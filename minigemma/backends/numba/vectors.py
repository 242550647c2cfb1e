"""Eight float32 lanes as one Numba value: the vector arithmetic of the one-row dot products.

LLVM vectorises a plain loop over one block (32 weights) well, but a dot product of blocks
then ends every block with a horizontal sum of its partial sums, and the loop exits and entry
checks around it: ~40 instructions per 32 multiply-adds, 4.5 G multiply-adds/s on one core,
half the memory's speed. Written with eight-lane values instead, the sum over the blocks stays
in one vector and is reduced once per row,

    acc ← acc + d_b · Σ_k q_bk ⊙ x_bk        (k: the four 8-lane quarters of block b)
    Σ_b d_b Σ_j q_bj x_bj = Σ_lanes acc,

17 instructions per block. One core, q8_0: 4.5 -> 8.0–8.7 G multiply-adds/s; two cores, with
`prefetch`, read a head-sized matrix (178 MB of random blocks) in 8.8–10.6 ms, near the 9.1 ms
of a plain byte scan (docs/benchmarks.md).

    zeros()                     0 in every lane
    splat(s)                    s in every lane
    load_f32(a, i)              a[i:i + 8] of a float32 array
    load_i8(a, i)               bytes a[i:i + 8] of a uint8 array read as int8, to float32
    load_nibbles(a, i, shift)   (a[i:i + 8] >> shift) & 15 of a uint8 array (shift 0: the low
                                4 bits, 4: the high), to float32
    load_f16(a, i)              the little-endian fp16 at bytes a[i:i + 2], as a float32 scalar
                                (F16C's conversion: the 256 KB lookup table of `blocks.fp16_at`
                                cost the head 12.9 against 10.0 ms, missing L1 on real scales)
    fma(a, b, c), mul(a, b), add(a, b), sub(a, b)     a · b + c, a · b, a + b, a − b, lane by lane
    hsum(v)                     Σ of the eight lanes, a float32
    prefetch(a, i)              ask for the cache line of byte i of a (beyond the end is fine:
                                a prefetch never faults)

The loads read the arrays' memory directly, without bounds checks, as Numba's own indexing
does; the arrays must be C-contiguous (rows of row-major arrays are). The arithmetic carries
LLVM's "fast" flags, as the kernels' `fastmath` does: a · b + c may fuse, sums may reassociate.
"""
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, models, register_model

_F32, _I8, _I32 = ir.FloatType(), ir.IntType(8), ir.IntType(32)
_LANES = 8
_V = ir.VectorType(_F32, _LANES)
_BYTES = ir.VectorType(_I8, _LANES)
_FAST = ("fast",)


class Float32x8(types.Type):
    """The Numba type of an eight-lane float32 vector (LLVM's <8 x float>)."""

    def __init__(self):
        super().__init__(name="float32x8")


float32x8 = Float32x8()


@register_model(Float32x8)
class _Float32x8Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _V)


def _reads(a, dtype, i):
    """Typing: `a` is a C-contiguous array of `dtype` and `i` an integer index."""
    return (isinstance(a, types.Array) and a.layout == "C" and a.dtype == dtype
            and isinstance(i, types.Integer))


def _pointer(context, builder, sig, args, element):
    """A pointer to element args[1] of the C-contiguous array args[0], as `element`*."""
    index = context.cast(builder, args[1], sig.args[1], types.intp)
    data = context.make_array(sig.args[0])(context, builder, args[0]).data
    return builder.gep(builder.bitcast(data, element.as_pointer()), [index])


def _load(context, builder, sig, args, element, value, align):
    """The `value` (an LLVM type) stored at element args[1] of args[0] (elements `element`)."""
    p = _pointer(context, builder, sig, args, element)
    return builder.load(builder.bitcast(p, value.as_pointer()), align=align)


def _splat_of(builder, value, vector_type):
    lane0 = builder.insert_element(ir.Constant(vector_type, ir.Undefined), value,
                                   ir.Constant(_I32, 0))
    return builder.shuffle_vector(lane0, lane0, ir.Constant(ir.VectorType(_I32, _LANES),
                                                            [0] * _LANES))


@intrinsic
def zeros(typingctx):
    def codegen(context, builder, sig, args):
        return ir.Constant(_V, None)
    return float32x8(), codegen


@intrinsic
def splat(typingctx, s):
    if s != types.float32:
        return None

    def codegen(context, builder, sig, args):
        return _splat_of(builder, args[0], _V)
    return float32x8(types.float32), codegen


@intrinsic
def load_f32(typingctx, a, i):
    if not _reads(a, types.float32, i):
        return None

    def codegen(context, builder, sig, args):
        return _load(context, builder, sig, args, _F32, _V, 4)
    return float32x8(a, i), codegen


@intrinsic
def load_i8(typingctx, a, i):
    if not _reads(a, types.uint8, i):
        return None

    def codegen(context, builder, sig, args):
        return builder.sitofp(_load(context, builder, sig, args, _I8, _BYTES, 1), _V)
    return float32x8(a, i), codegen


@intrinsic
def load_nibbles(typingctx, a, i, shift):
    if not (_reads(a, types.uint8, i) and isinstance(shift, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        q = _load(context, builder, sig, args, _I8, _BYTES, 1)
        by = builder.trunc(context.cast(builder, args[2], sig.args[2], types.int32), _I8)
        q = builder.lshr(q, _splat_of(builder, by, _BYTES))
        q = builder.and_(q, ir.Constant(_BYTES, [15] * _LANES))
        return builder.uitofp(q, _V)
    return float32x8(a, i, shift), codegen


@intrinsic
def load_f16(typingctx, a, i):
    if not _reads(a, types.uint8, i):
        return None

    def codegen(context, builder, sig, args):
        half = _load(context, builder, sig, args, _I8, ir.HalfType(), 1)
        return builder.fpext(half, _F32)  # exact
    return types.float32(a, i), codegen


@intrinsic
def fma(typingctx, a, b, c):
    def codegen(context, builder, sig, args):
        return builder.fadd(builder.fmul(args[0], args[1], flags=_FAST), args[2], flags=_FAST)
    return float32x8(float32x8, float32x8, float32x8), codegen


def _lanewise(instruction, name):
    """The intrinsic `name`(a, b): the IRBuilder's `instruction` (fmul, fadd, …) lane by lane."""
    def op(typingctx, a, b):
        def codegen(context, builder, sig, args):
            return getattr(builder, instruction)(args[0], args[1], flags=_FAST)
        return float32x8(float32x8, float32x8), codegen
    op.__name__ = op.__qualname__ = name
    return intrinsic(op)


mul, add, sub = _lanewise("fmul", "mul"), _lanewise("fadd", "add"), _lanewise("fsub", "sub")


@intrinsic
def hsum(typingctx, v):
    def codegen(context, builder, sig, args):
        lanes = [builder.extract_element(args[0], ir.Constant(_I32, k)) for k in range(_LANES)]
        while len(lanes) > 1:  # a balanced tree: (0 + 1) + (2 + 3), ...
            lanes = [builder.fadd(lanes[k], lanes[k + 1], flags=_FAST)
                     for k in range(0, len(lanes), 2)]
        return lanes[0]
    return types.float32(float32x8), codegen


@intrinsic
def prefetch(typingctx, a, i):
    if not _reads(a, types.uint8, i):
        return None

    def codegen(context, builder, sig, args):
        p = _pointer(context, builder, sig, args, _I8)
        fn = builder.module.declare_intrinsic(
            "llvm.prefetch", fnty=ir.FunctionType(ir.VoidType(), [_I8.as_pointer()] + [_I32] * 3))
        builder.call(fn, [p, ir.Constant(_I32, 0), ir.Constant(_I32, 3), ir.Constant(_I32, 1)])
        return context.get_dummy_value()  # (read, keep in all cache levels, data)
    return types.none(a, i), codegen
