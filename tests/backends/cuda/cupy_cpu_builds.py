"""Building the CPU launchers of the CuPy kernels for the tests: the three builds (no sanitizer,
AddressSanitizer + UBSan, ThreadSanitizer) start together, two compilers at a time."""
import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest

SANITIZERS = (None, "address,undefined", "thread")


def start_builds(directory=None):
    """{sanitize: future of the CpuLauncher} for the three builds of the kernels in `directory`."""
    if shutil.which("g++") is None:
        pytest.skip("g++ is not installed: the CUDA C kernels cannot run on the CPU here")
    from minigemma.backends.cupy import kernels
    from minigemma.backends.cupy.toolchain import CpuLauncher
    pool = ThreadPoolExecutor(max_workers=2)
    futures = {s: pool.submit(CpuLauncher, s, directory or kernels.KERNEL_DIR) for s in SANITIZERS}
    pool.shutdown(wait=False)
    return futures
