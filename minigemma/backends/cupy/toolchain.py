"""The kernels without a GPU: compiled for the GPU by nvcc or NVRTC, and run on the CPU by g++.

    nvcc_compile(file, arch, out_dir)     nvcc -cubin for sm_<arch>, warnings as errors
    nvrtc_compile(file, arch)             the same text through NVRTC (what CuPy runs), if present
    CpuLauncher(sanitize=None)            the kernels compiled with g++ and cpu_shim.h

A compile failure raises CompileError with the compiler's messages, which name the file and line
(`matvec_blocks.cu(42): error: …`).

CpuLauncher is a launcher as in `kernels` (`launch(file, kernel, grid, block, args)` with NumPy
arrays): the backend's own host code can run on it, with NumPy standing in for CuPy. Every
kernel runs from the text the GPU path compiles (`kernels.source`), all files in one C++
translation unit. Three builds:

    sanitize=None                  a shared library, called in this process through ctypes;
                                   the CUDA threads of a block are fibers of one OS thread
    sanitize="address,undefined"   a program run once per launch, its buffers in heap blocks of
    sanitize="thread"              exactly their size: AddressSanitizer sees a read one element
                                   past an array; ThreadSanitizer a race between the threads of
                                   a block (a missing __syncthreads)

A sanitizer's report becomes a KernelFault. Builds are cached under
$MINIGEMMA_KERNEL_BUILD_DIR (default ~/.cache/minigemma/cuda-on-cpu), keyed by a hash of the
sources, the flags and the compiler.
"""
import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import numpy as np

from minigemma.backends.cupy import kernels

ARCHS = ("80", "90")  # Ampere (A100), Hopper (H100 / H200)
NVCC_FLAGS = ("-std=c++17", "-Werror", "all-warnings", "-Xcompiler", "-Werror")
GXX_FLAGS = ("-std=c++20", "-g", "-O1", "-ffp-contract=off", "-fno-omit-frame-pointer", "-pthread",
             "-Wall", "-Wextra", "-Werror", "-Wno-unknown-pragmas")
SANITIZER_FLAGS = {
    None: ("-DCPU_SHIM_FIBERS", "-fPIC", "-shared"),
    "address,undefined": ("-DCPU_SHIM_MAIN", "-fsanitize=address,undefined",
                          "-fno-sanitize-recover=all"),
    "thread": ("-DCPU_SHIM_MAIN", "-fsanitize=thread"),
}
SANITIZER_ENV = {
    "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0:halt_on_error=1:exitcode=66",
    "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1:exitcode=66",
    "TSAN_OPTIONS": "halt_on_error=1:exitcode=66:report_signal_unsafe=0",
}
LAUNCH_TIMEOUT_S = 300


class CompileError(RuntimeError):
    """A kernel file did not compile; the message holds the compiler's, with file and line."""


class KernelFault(RuntimeError):
    """A kernel run on the CPU failed: a sanitizer's report, or a shim check (e.g. a divergent
    __syncthreads), or a signature mismatch."""


def nvcc_path():
    return shutil.which("nvcc") or (
        "/usr/local/cuda/bin/nvcc" if os.path.exists("/usr/local/cuda/bin/nvcc") else None)


def nvcc_compile(path, arch, out_dir, nvcc=None):
    """Compile the .cu file at `path` to a cubin for sm_<arch>; return the cubin's path."""
    path, out_dir = Path(path), Path(out_dir)
    nvcc = nvcc or nvcc_path()
    if nvcc is None:
        raise CompileError("nvcc is not installed")
    out = out_dir / f"{path.stem}.sm_{arch}.cubin"
    cmd = [nvcc, f"-arch=sm_{arch}", "-cubin", *NVCC_FLAGS, "-o", str(out), path.name]
    proc = subprocess.run(cmd, cwd=path.parent, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or proc.stderr.strip():  # warnings are errors; say why it failed
        raise CompileError(f"nvcc -arch=sm_{arch} {path.name} failed:\n"
                           f"{(proc.stderr + proc.stdout).strip()}")
    return out


def nvrtc_available():
    """None if NVRTC can be called through CuPy's bindings here, else the reason why not."""
    try:
        from cupy_backends.cuda.libs import nvrtc
        nvrtc.getVersion()
    except Exception as e:  # noqa: BLE001 (ImportError, a missing library: any reason is the answer)
        return f"NVRTC is not usable here ({type(e).__name__}: {e})"
    return None


def nvrtc_compile(file, arch, directory=kernels.KERNEL_DIR):
    """Compile kernels.source(file) with NVRTC for sm_<arch>; return the cubin bytes.

    CuPy's own compile path asks the driver which device it runs on; NVRTC itself needs no
    device, so this calls it directly (no GPU, no driver).
    """
    from cupy_backends.cuda.libs import nvrtc
    program = nvrtc.createProgram(kernels.source(file, directory), file, (), ())
    try:
        try:
            nvrtc.compileProgram(program, [*kernels.NVRTC_OPTIONS, f"--gpu-architecture=sm_{arch}"])
        except nvrtc.NVRTCError as e:
            raise CompileError(f"NVRTC sm_{arch} {file} failed ({e}):\n"
                               f"{nvrtc.getProgramLog(program).strip()}") from None
        return nvrtc.getCUBIN(program)
    finally:
        nvrtc.destroyProgram(program)


# --------------------------------------------------------------------------- the CPU launcher

def _gxx():
    gxx = shutil.which("g++")
    if gxx is None:
        raise CompileError("g++ is not installed: the kernels cannot run on the CPU here")
    return gxx


def harness_source(directory=kernels.KERNEL_DIR):
    """The C++ translation unit: the shim, every kernel file's text, and the kernel table."""
    parts = [f'#include "{kernels.KERNEL_DIR / "cpu_shim.h"}"']
    table = []
    for file in kernels.kernel_files(directory):
        parts.append(kernels.source(file, directory))
        table += [f"CPU_SHIM_KERNEL({name})" for name in kernels.signatures(file, directory)]
    return "\n".join(parts + ["#line 1 \"kernel_table\""] + table) + "\n"


def build_dir():
    return Path(os.environ.get("MINIGEMMA_KERNEL_BUILD_DIR") or
                Path.home() / ".cache" / "minigemma" / "cuda-on-cpu")


_build_lock = threading.Lock()


def build(sanitize=None, directory=kernels.KERNEL_DIR):
    """Compile the harness of the .cu files in `directory` (once per content hash); return the
    path of the library (sanitize=None) or program."""
    if sanitize not in SANITIZER_FLAGS:
        raise ValueError(f"sanitize must be one of {list(SANITIZER_FLAGS)}, got {sanitize!r}")
    gxx = _gxx()
    text = harness_source(directory)
    shim = (kernels.KERNEL_DIR / "cpu_shim.h").read_text()
    flags = [*GXX_FLAGS, *SANITIZER_FLAGS[sanitize]]
    version = subprocess.run([gxx, "--version"], capture_output=True, text=True,
                             check=False).stdout
    key = hashlib.sha256("\0".join([text, shim, *flags, version]).encode()).hexdigest()[:16]
    suffix = ".so" if sanitize is None else ""
    target = build_dir() / f"kernels-{(sanitize or 'plain').replace(',', '-')}-{key}{suffix}"
    with _build_lock:
        if target.exists():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            src = Path(tmp) / "kernels_on_cpu.cpp"
            src.write_text(text)
            partial = Path(tmp) / target.name
            proc = subprocess.run([gxx, *flags, "-o", str(partial), str(src)],
                                  capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise CompileError(f"g++ ({sanitize or 'no sanitizer'}) failed:\n"
                                   f"{proc.stderr.strip()}")
            os.replace(partial, target)  # whole or absent: never a half-written build
    return target


class CpuLauncher:
    """Runs the kernels on CPU threads (see the module docstring); arrays are NumPy arrays."""

    def __init__(self, sanitize=None, directory=kernels.KERNEL_DIR):
        self.sanitize = sanitize
        self.directory = directory
        self.path = build(sanitize, directory)
        self.launches = []  # (file, kernel, grid, block) of every launch, for tests
        if sanitize is None:
            self._lib = ctypes.CDLL(str(self.path))
            self._lib.cpu_shim_launch.restype = ctypes.c_int

    def launch(self, file, kernel, grid, block, args):
        args = kernels.signature(file, kernel, self.directory).bind(args)
        grid, block = _dim3(grid), _dim3(block)
        self.launches.append((file, kernel, grid, block))
        if self.sanitize is None:
            self._call(kernel, grid, block, args)
        else:
            self._run(kernel, grid, block, args)

    def _call(self, kernel, grid, block, args):
        n = len(args)
        slots, keep = (ctypes.c_void_p * n)(), []
        kinds, sizes = (ctypes.c_int * n)(), (ctypes.c_longlong * n)()
        for i, a in enumerate(args):
            if isinstance(a, np.ndarray):
                pointer = ctypes.c_void_p(a.ctypes.data)
                keep.append(pointer)
                slots[i] = ctypes.cast(ctypes.pointer(pointer), ctypes.c_void_p)
                kinds[i], sizes[i] = 1, a.itemsize
            else:
                value = np.array(a)  # the scalar's bytes, as the C type's
                keep.append(value)
                slots[i] = value.ctypes.data
                kinds[i], sizes[i] = 0, value.itemsize
        error = ctypes.create_string_buffer(1024)
        status = self._lib.cpu_shim_launch(kernel.encode(), (ctypes.c_uint * 3)(*grid),
                                           (ctypes.c_uint * 3)(*block), slots, n, kinds, sizes,
                                           error, len(error))
        if status != 0:
            raise KernelFault(error.value.decode())

    def _run(self, kernel, grid, block, args):
        with tempfile.TemporaryDirectory(prefix="minigemma-kernel-") as tmp:
            lines = [f"kernel {kernel}", "grid {} {} {}".format(*grid),
                     "block {} {} {}".format(*block)]
            buffers = []
            for i, a in enumerate(args):
                if isinstance(a, np.ndarray):
                    path = os.path.join(tmp, f"arg{i}.bin")
                    a.tofile(path)
                    buffers.append((a, path))
                    lines.append(f"pointer {a.itemsize} {path}")
                else:
                    lines.append(f"value {a.itemsize} {a.tobytes().hex()}")
            job = os.path.join(tmp, "job.txt")
            with open(job, "w") as f:
                f.write("\n".join(lines) + "\n")
            proc = subprocess.run([str(self.path), job], capture_output=True, text=True,
                                  env={**os.environ, **SANITIZER_ENV}, timeout=LAUNCH_TIMEOUT_S,
                                  check=False)
            if proc.returncode != 0 or "WARNING: ThreadSanitizer" in proc.stderr:
                raise KernelFault(f"{kernel} under {self.sanitize} (exit code "
                                  f"{proc.returncode}):\n{proc.stderr.strip()}")
            for a, path in buffers:
                if a.flags.writeable:
                    a[...] = np.fromfile(path, dtype=a.dtype).reshape(a.shape)


def _dim3(shape):
    shape = tuple(int(s) for s in shape)
    if not 1 <= len(shape) <= 3:
        raise ValueError(f"a launch shape has 1 to 3 dimensions, got {shape}")
    return shape + (1,) * (3 - len(shape))
