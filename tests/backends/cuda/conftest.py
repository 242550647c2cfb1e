"""Fixtures of the CuPy backend's tests: the CPU launchers (the .cu kernels compiled with g++ and
cpu_shim.h), built once per test session (and cached on disk by content hash). The three builds
start together, two compilers at a time, when the first of them is needed."""
import pytest
from cupy_cpu_builds import start_builds


@pytest.fixture(scope="session")
def cpu_builds():
    return start_builds()


@pytest.fixture(scope="session")
def cpu_launcher(cpu_builds):
    """Kernels in this process (ctypes; CUDA threads as fibers), no sanitizer: fast, for the
    host-side tests."""
    return cpu_builds[None].result()


@pytest.fixture(scope="session")
def asan_launcher(cpu_builds):
    """Kernels in a program under AddressSanitizer and UBSan, one run per launch."""
    return cpu_builds["address,undefined"].result()


@pytest.fixture(scope="session")
def tsan_launcher(cpu_builds):
    """Kernels in a program under ThreadSanitizer, one run per launch."""
    return cpu_builds["thread"].result()
