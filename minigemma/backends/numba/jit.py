"""How the Numba kernels are compiled: cached, fastmath without nnan/ninf, twice where it pays.

A kernel whose outer loop is independent is written once, as `make(loop)` returning the kernel
with `for i in loop(n)` as that loop, and compiled twice: with `prange` (prefill-sized work
spread over the threads) and with `range` (decode-sized work, where waking the thread pool costs
more than the loop). Passing the loop in, instead of compiling one function twice, also gives
the two versions different keys in Numba's on-disk cache, which are otherwise derived from the
function's code alone.
"""
from numba import njit, prange

# Reassociation (vectorised sums), contraction (FMA) and approximate reciprocals; not "nnan" or
# "ninf": masks use −∞, and NaN results must stay visible.
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}


class Kernel:
    """`make(loop)` compiled as `.parallel` (loop = prange) and `.serial` (loop = range)."""

    def __init__(self, make, fastmath=FASTMATH):
        self.__name__ = make.__name__
        self.parallel = njit(parallel=True, fastmath=fastmath, cache=True)(make(prange))
        self.serial = njit(fastmath=fastmath, cache=True)(make(range))

    def __call__(self, *args, parallel=True):
        return (self.parallel if parallel else self.serial)(*args)

    @property
    def dispatchers(self):
        return self.parallel, self.serial


def kernel(make=None, *, fastmath=FASTMATH):
    """Decorator form of `Kernel`: `@kernel` or `@kernel(fastmath=False)`."""
    if make is None:
        return lambda make: Kernel(make, fastmath)
    return Kernel(make, fastmath)
