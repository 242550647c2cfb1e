"""The CPU harness itself: it catches the bugs it exists for, and the launchers check arguments.

Deliberately wrong kernels (in a temporary folder, next to a copy of common.cuh) must fail under
the harness with a message that names the bug and the file and line: a read past the end of an
array (AddressSanitizer), a misaligned 4-byte load (UBSan), a shared-memory read without
__syncthreads (ThreadSanitizer); a __syncthreads that some warps skip, a shuffle that half a
warp skips and a deadlock (the shim's own checks).
"""
import shutil

import numpy as np
import pytest
from cupy_cpu_builds import start_builds

from minigemma.backends.cupy import kernels
from minigemma.backends.cupy.toolchain import KernelFault

BUGGY = r"""// Kernels with one bug each, for the harness's tests.
#include "common.cuh"

extern "C" __global__ void read_past_end(const float* x, float* out, int n)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        out[i] = x[i + 1];  // BUG: the last thread reads x[n]
}

extern "C" __global__ void misaligned_load(const unsigned char* bytes, unsigned int* out)
{
    *out = *(const unsigned int*)(bytes + 2);  // BUG: a q5_0 qh field read as one uint32
}

extern "C" __global__ void missing_syncthreads(const float* x, float* out)
{
    __shared__ float tile[64];
    const int i = threadIdx.x;
    tile[i] = x[i];
    out[i] = tile[(i + 1) % 64];  // BUG: reads a neighbour's write without __syncthreads
}

extern "C" __global__ void divergent_syncthreads(float* out)
{
    if (threadIdx.x < 32)
        return;  // BUG: the first warp leaves before the block's barrier
    __syncthreads();
    out[threadIdx.x] = 1.0f;
}

extern "C" __global__ void half_warp_shuffle(float* out)
{
    if (threadIdx.x < 16)  // BUG: lanes 16..31 never join the shuffle
        out[threadIdx.x] = warp_sum(1.0f);
}

extern "C" __global__ void split_warp(float* out)
{
    if (threadIdx.x < 16)
        out[threadIdx.x] = warp_sum(1.0f);  // BUG: half the warp shuffles, while
    else
        __syncthreads();  // the other half waits for the block: neither barrier fills
}
"""


def line_of(marker):
    return next(i for i, line in enumerate(BUGGY.splitlines(), start=1) if marker in line)


@pytest.fixture(scope="module")
def buggy_builds(tmp_path_factory):
    folder = tmp_path_factory.mktemp("buggy_kernels")
    shutil.copy(kernels.KERNEL_DIR / "common.cuh", folder)
    (folder / "buggy.cu").write_text(BUGGY)
    return start_builds(folder)


@pytest.fixture(scope="module")
def asan(buggy_builds):
    return buggy_builds["address,undefined"].result()


@pytest.fixture(scope="module")
def tsan(buggy_builds):
    return buggy_builds["thread"].result()


@pytest.fixture(scope="module")
def fibers(buggy_builds):
    return buggy_builds[None].result()  # in this process: a fault must not abort it


def test_asan_catches_a_read_past_the_end(asan):
    x, out = np.ones(40, np.float32), np.zeros(40, np.float32)
    with pytest.raises(KernelFault) as fault:
        asan.launch("buggy.cu", "read_past_end", (2,), (32,), (x, out, 40))
    message = str(fault.value)
    assert "heap-buffer-overflow" in message
    assert f"buggy.cu:{line_of('BUG: the last thread')}" in message


def test_ubsan_catches_a_misaligned_load(asan):
    with pytest.raises(KernelFault) as fault:
        asan.launch("buggy.cu", "misaligned_load", (1,), (1,),
                    (np.arange(8, dtype=np.uint8), np.zeros(1, np.uint32)))
    assert "misaligned address" in str(fault.value)
    assert f"buggy.cu:{line_of('BUG: a q5_0')}" in str(fault.value)


def test_tsan_catches_a_missing_syncthreads(tsan):
    x, out = np.arange(64, dtype=np.float32), np.zeros(64, np.float32)
    with pytest.raises(KernelFault) as fault:
        tsan.launch("buggy.cu", "missing_syncthreads", (1,), (64,), (x, out))
    message = str(fault.value)
    assert "ThreadSanitizer: data race" in message
    assert f"buggy.cu:{line_of('BUG: reads a neighbour')}" in message


def test_the_shim_stops_a_divergent_syncthreads(asan):
    with pytest.raises(KernelFault, match=r"divergent barrier in divergent_syncthreads, block "
                                          r"\(0, 0, 0\).*__syncthreads.*the end of the kernel"):
        asan.launch("buggy.cu", "divergent_syncthreads", (1,), (64,), (np.zeros(64, np.float32),))


def test_the_shim_stops_a_shuffle_half_a_warp_skips(asan):
    with pytest.raises(KernelFault, match=r"divergent barrier in half_warp_shuffle.*a warp "
                                          r"shuffle, others at the end of the kernel"):
        asan.launch("buggy.cu", "half_warp_shuffle", (1,), (32,), (np.zeros(32, np.float32),))


def test_the_shim_stops_a_deadlock(asan, monkeypatch):
    monkeypatch.setenv("CPU_SHIM_TIMEOUT_S", "2")
    with pytest.raises(KernelFault, match="split_warp: no thread passed a barrier for 2 s: a "
                                          "deadlock"):
        asan.launch("buggy.cu", "split_warp", (1,), (32,), (np.zeros(32, np.float32),))


def test_in_process_fibers_report_divergence_and_deadlock_as_errors(fibers):
    out = np.zeros(64, np.float32)
    with pytest.raises(KernelFault, match=r"divergent barrier in divergent_syncthreads"):
        fibers.launch("buggy.cu", "divergent_syncthreads", (1,), (64,), (out,))
    with pytest.raises(KernelFault, match=r"split_warp, block \(0, 0, 0\).*: a deadlock"):
        fibers.launch("buggy.cu", "split_warp", (1,), (32,), (out[:32],))
    with pytest.raises(KernelFault, match=r"a block of 2048 threads \(CUDA allows 1…1024\)"):
        fibers.launch("buggy.cu", "divergent_syncthreads", (1,), (2048,), (out,))
    x = np.arange(64, dtype=np.float32)
    fibers.launch("buggy.cu", "read_past_end", (2,), (32,), (x, out, 63))  # still usable
    np.testing.assert_array_equal(out[:63], x[1:])


def test_a_correct_launch_of_the_same_file_runs(asan):
    x, out = np.arange(64, dtype=np.float32), np.zeros(64, np.float32)
    asan.launch("buggy.cu", "read_past_end", (1,), (64,), (x, out, 63))  # n = 63: in bounds
    np.testing.assert_array_equal(out[:63], x[1:])


# --------------------------------------------------------------------------- argument checks

def test_arguments_are_checked_against_the_c_signature(cpu_launcher):
    ok = (np.zeros((1, 34), np.uint8), np.zeros((1, 32), np.float32), np.zeros((1, 1), np.float32))
    launch = lambda *args: cpu_launcher.launch("matvec_blocks.cu", "matvec_q8_0", (1,), (32, 4),
                                               args)
    launch(*ok, 1, 32, 1)
    with pytest.raises(TypeError, match=r"matvec_q8_0: x must be an array of float32 \(it is "
                                        r"'float\*'\), got float64"):
        launch(ok[0], ok[1].astype(np.float64), ok[2], 1, 32, 1)
    with pytest.raises(TypeError, match="blocks must be C-contiguous"):
        launch(np.zeros((1, 68), np.uint8)[:, ::2], *ok[1:], 1, 32, 1)
    with pytest.raises(OverflowError, match="O = 4294967296 does not fit a 'int'"):
        launch(*ok, 2**32, 32, 1)
    with pytest.raises(TypeError, match="I is a 'int', got 32.5"):
        launch(*ok, 1, 32.5, 1)
    with pytest.raises(ValueError, match="x and out overlap in memory"):
        buf = np.zeros(64, np.float32)
        launch(ok[0], buf[:32].reshape(1, 32), buf[31:32].reshape(1, 1), 1, 32, 1)
    with pytest.raises(TypeError, match="takes 6 arguments"):
        launch(*ok, 1, 32)


def test_the_c_side_checks_sizes_too(cpu_launcher):
    """A Python signature that disagreed with the C one (an int passed as 8 bytes) is caught."""
    args = (np.zeros((1, 34), np.uint8), np.zeros((1, 32), np.float32),
            np.zeros((1, 1), np.float32), np.int64(1), np.int32(32), np.int32(1))
    with pytest.raises(KernelFault, match="argument 3: the kernel takes a value of 4 bytes, got a "
                                          "value of 8 bytes"):
        cpu_launcher._call("matvec_q8_0", (1, 1, 1), (32, 4, 1), args)


def test_signatures_are_read_from_the_cu_files():
    sig = kernels.signature("attention_decode.cu", "attention_decode")
    assert [(p.name, p.ctype, p.pointer) for p in sig.parameters][:2] == [
        ("q", "float", True), ("k", "float", True)]
    assert [p.ctype for p in sig.parameters if not p.pointer] == [
        "int", "int", "int", "int", "int", "float", "long long", "float"]
    with pytest.raises(ValueError, match="has no kernel 'nope'"):
        kernels.signature("attention_decode.cu", "nope")
