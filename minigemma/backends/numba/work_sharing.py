"""Threads that share a parallel loop's work by claiming chunks of it, one atomic add each.

Numba's parallel loop hands each thread a fixed run of iterations (static scheduling). A thread
that starts late (a worker woken from sleep: median 9, 90th percentile 30 µs in a decode step)
or is descheduled by the host then holds the whole loop up while the other waits, and the
waiting thread may itself fall asleep at the loop's end and need waking. Instead, the loop has
one iteration per thread and each run of the work is a list of chunks with a counter:

    thread t: claim chunks of run t until it is done, then of runs t+1, t+2, … (mod T)
    from run r: c ← counters[r], counters[r] ← c + 1 (one atomic step); chunk c if c < end
    of r, else the next run is tried (`claim`)

so no chunk is done twice or left out, whichever thread reaches it and whatever the schedule
(a serial loop does every run itself), and the threads finish within about one chunk of each
other. With the counter of each run on its own cache line a claim costs a few nanoseconds.
"""
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

LINE = 8  # int64 counters per 64-byte cache line: each run's counter has a line to itself


@intrinsic
def fetch_add(typingctx, counters, i):
    """counters[i] += 1 as one atomic step (any thread may run it at the same time as
    another); returns the value before. counters: a C-contiguous int64 array."""
    if not (isinstance(counters, types.Array) and counters.dtype == types.int64
            and counters.layout == "C" and isinstance(i, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        index = context.cast(builder, args[1], sig.args[1], types.intp)
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        one = ir.Constant(ir.IntType(64), 1)
        # "monotonic": each claim sees a different count; the chunks' results are published
        # by the loop's end, where the threads join
        return builder.atomic_rmw("add", builder.gep(data, [index]), one, "monotonic")
    return types.int64(counters, i), codegen


@njit(inline="always")
def claim(counters, starts, t):
    """The index of thread t's next chunk: an unclaimed one of its own run t (chunks
    starts[t]..starts[t + 1]) while any is left, then of runs t + 1, t + 2, … (mod T); -1 when
    every chunk has been claimed. A run's counter may pass its end; only claims below it count."""
    T = starts.shape[0] - 1
    for k in range(T):
        r = (t + k) % T
        c = fetch_add(counters, LINE * r)
        if c < starts[r + 1]:
            return c
    return -1


def fresh_counters(starts):
    """The counters for one call over runs starts [T + 1]: run r's claims begin at starts[r]."""
    counters = np.zeros(LINE * (len(starts) - 1), np.int64)
    counters[::LINE] = starts[:-1]
    return counters
