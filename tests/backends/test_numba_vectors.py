"""The eight-lane vector values of the Numba kernels (`minigemma.backends.numba.vectors`),
against NumPy's own conversions and sums."""
import numpy as np
import pytest

pytest.importorskip("numba")

from numba import njit

from minigemma.backends.numba import vectors as V


@njit
def _lanes(raw, x, off, i):
    """Each load at byte `off` (floats at element i) and each operation, written out lane by
    lane: out [10, 8]; sums [3]."""
    out = np.empty((10, 8), np.float32)
    loads = (V.load_i8(raw, off), V.load_nibbles(raw, off, 0), V.load_nibbles(raw, off, 4),
             V.load_f32(x, i), V.splat(V.load_f16(raw, off)))
    a, b = loads[0], loads[3]
    done = loads + (V.fma(a, b, loads[1]), V.mul(a, b), V.add(a, b), V.sub(a, b), V.zeros())
    for r in range(10):
        for k in range(8):
            out[r, k] = _lane(done[r], k)
    V.prefetch(raw, raw.shape[0] + 4096)  # a hint past the end never faults
    return out, np.array([V.hsum(a), V.hsum(V.mul(a, b)), V.hsum(V.zeros())], np.float32)


@njit(inline="always")
def _lane(v, k):
    """Lane k of v, through a vector sum of v with one-hot lanes (only the public operations)."""
    onehot = np.zeros(8, np.float32)
    onehot[k] = 1
    return V.hsum(V.mul(v, V.load_f32(onehot, 0)))


@pytest.mark.parametrize("off", [0, 3, 17])
def test_lanes_match_numpy(off):
    rng = np.random.default_rng(off)
    raw = rng.integers(0, 256, 40, dtype=np.uint8)
    raw[off:off + 2] = np.array([rng.standard_normal()], "<f2").view(np.uint8)
    x = rng.standard_normal(24).astype(np.float32)
    i = off % 16
    out, sums = _lanes(raw, x, off, i)
    q = raw[off:off + 8]
    i8 = q.view(np.int8).astype(np.float32)
    xs = x[i:i + 8]
    d = raw[off:off + 2].view("<f2")[0].astype(np.float32)
    expected = [i8, (q & 15).astype(np.float32), (q >> 4).astype(np.float32), xs,
                np.full(8, d, np.float32), i8 * xs + (q & 15), i8 * xs, i8 + xs, i8 - xs,
                np.zeros(8, np.float32)]
    for name, got, want in zip(["load_i8", "low nibbles", "high nibbles", "load_f32",
                                "splat(load_f16)", "fma", "mul", "add", "sub", "zeros"],
                               out, expected):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(sums, [i8.sum(), (i8.astype(np.float64) * xs).sum(), 0],
                               rtol=1e-6, atol=1e-5)


def test_loads_refuse_what_they_cannot_read():
    """A float32 array where bytes are expected (or the reverse) is a typing error, not a
    reinterpretation of its memory."""
    from numba.core.errors import TypingError

    @njit
    def bytes_of_floats(x):
        return V.hsum(V.load_i8(x, 0))

    @njit
    def floats_of_bytes(raw):
        return V.hsum(V.load_f32(raw, 0))
    with pytest.raises(TypingError):
        bytes_of_floats(np.zeros(8, np.float32))
    with pytest.raises(TypingError):
        floats_of_bytes(np.zeros(32, np.uint8))
