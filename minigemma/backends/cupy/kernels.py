"""The CUDA C kernels of the CuPy backend: their files, their C signatures, and how they launch.

Each `.cu` file beside this module holds one kernel family, with its equation and launch shape
in its header comment; `common.cuh` and `ggml_blocks.cuh` hold what several share. The backend
launches a kernel through a *launcher*, an object with one method:

    launcher.launch(file, kernel, grid, block, args)     grid, block: tuples of 1 to 3 ints

- `CupyLauncher` compiles each file once per process with NVRTC (`cupy.RawModule`) and runs the
  kernel on the GPU.
- `minigemma.backends.cupy.toolchain.CpuLauncher` compiles the same files with g++ and
  `cpu_shim.h` and runs them on CPU threads, optionally under sanitizers (the tests' launcher).

Both check the arguments against the kernel's C signature, which is read from the `.cu` file
itself (`signature`): a C-contiguous array of the matching dtype for every pointer parameter
(no two of them overlapping: the kernels declare them `__restrict__`), and a number for every
value parameter, converted to the exact C type (the GPU would read a wrong-width value as
garbage, silently).
"""
import functools
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

KERNEL_DIR = Path(__file__).resolve().parent
C_TYPES = {  # the C types the kernels use, as NumPy dtypes
    "float": np.float32, "double": np.float64, "int": np.int32, "unsigned int": np.uint32,
    "long long": np.int64, "unsigned char": np.uint8, "signed char": np.int8,
}
NVRTC_OPTIONS = ("--std=c++17",)


def kernel_files(directory=KERNEL_DIR):
    """The names of the `.cu` files, sorted: one RawModule each."""
    return sorted(p.name for p in Path(directory).glob("*.cu"))


@functools.cache
def source(file, directory=KERNEL_DIR):
    """The text of `file` with its local `#include "x.cuh"` lines replaced by the header's text.

    Expanded here rather than found through `-I`, so that the text NVRTC compiles (and CuPy's
    on-disk cache keys on) is all of it; `#line` directives keep compiler messages pointing at
    the original file and line.
    """
    return _expand(Path(directory) / file, set())


def _expand(path, seen):
    lines = [f'#line 1 "{path.name}"']
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        match = re.match(r'\s*#include\s+"([^"]+)"', line)
        if match is None:
            lines.append(line)
            continue
        header = path.parent / match.group(1)
        if header.name not in seen:
            seen.add(header.name)
            lines.append(_expand(header, seen))
        lines.append(f'#line {number + 1} "{path.name}"')
    return "\n".join(lines)


# --------------------------------------------------------------------------- C signatures

@dataclass(frozen=True)
class Parameter:
    name: str
    ctype: str  # "float", "long long", …
    pointer: bool
    const: bool = False  # a pointer to const: the kernel only reads through it

    @property
    def dtype(self):
        return np.dtype(C_TYPES[self.ctype])


@dataclass(frozen=True)
class Signature:
    file: str
    kernel: str
    parameters: tuple

    def bind(self, args):
        """args -> the tuple to launch with: arrays checked, numbers converted to their C type."""
        if len(args) != len(self.parameters):
            raise TypeError(f"{self.kernel} takes {len(self.parameters)} arguments "
                            f"({', '.join(p.name for p in self.parameters)}), got {len(args)}")
        bound, spans = [], []
        for p, a in zip(self.parameters, args):
            if p.pointer:
                _check_array(self.kernel, p, a)
                spans.append((p.name, _address(a), a.nbytes, p.const))
                bound.append(a)
            else:
                bound.append(_number(self.kernel, p, a))
        _check_no_overlap(self.kernel, spans)
        return tuple(bound)


def _check_array(kernel, p, a):
    dtype, flags = getattr(a, "dtype", None), getattr(a, "flags", None)
    if dtype is None or flags is None:
        raise TypeError(f"{kernel}: {p.name} must be an array of {p.dtype} (it is "
                        f"'{p.ctype}*'), got {type(a).__name__}")
    if dtype != p.dtype:
        raise TypeError(f"{kernel}: {p.name} must be an array of {p.dtype} (it is "
                        f"'{p.ctype}*'), got {dtype}")
    if not flags.c_contiguous:
        raise TypeError(f"{kernel}: {p.name} must be C-contiguous")


def _number(kernel, p, value):
    if hasattr(value, "ndim") and value.ndim != 0:
        raise TypeError(f"{kernel}: {p.name} is a '{p.ctype}' value, got an array")
    if p.dtype.kind in "iu":
        if isinstance(value, (float, np.floating)) or not float(value).is_integer():
            raise TypeError(f"{kernel}: {p.name} is a '{p.ctype}', got {value!r}")
        info = np.iinfo(p.dtype)
        if not info.min <= int(value) <= info.max:
            raise OverflowError(f"{kernel}: {p.name} = {int(value)} does not fit a '{p.ctype}'")
        return p.dtype.type(int(value))
    return p.dtype.type(value)


def _address(a):
    """The device or host address of an array's first byte (CuPy: .data.ptr; NumPy: .ctypes)."""
    data = getattr(a, "data", None)
    return data.ptr if hasattr(data, "ptr") else a.ctypes.data


def _check_no_overlap(kernel, spans):
    """Arrays the kernel writes may not share memory with any other argument (two inputs may)."""
    spans = [(start, start + size, name, const) for name, start, size, const in spans if size]
    for i, (start, end, name, const) in enumerate(spans):
        for other_start, other_end, other, other_const in spans[i + 1:]:
            if (not const or not other_const) and start < other_end and other_start < end:
                raise ValueError(f"{kernel}: {name} and {other} overlap in memory; the kernel "
                                 f"takes them as __restrict__ pointers and writes one")


def _strip_comments(text):
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.DOTALL)
    return re.sub(r"//[^\n]*", " ", text)


@functools.cache
def signatures(file, directory=KERNEL_DIR):
    """{kernel name: Signature} of every `extern "C" __global__` function of `file`."""
    text = _strip_comments((Path(directory) / file).read_text())
    found = {}
    for name, params in re.findall(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(([^)]*)\)',
                                   text):
        parameters = []
        for param in params.split(","):
            words = param.replace("*", " * ").split()
            const = "const" in words
            words = [w for w in words if w not in ("const", "__restrict__")]
            pointer = "*" in words
            words = [w for w in words if w != "*"]
            ctype = " ".join(words[:-1])
            if ctype not in C_TYPES:
                raise ValueError(f"{file}: {name}: parameter {param.strip()!r} has a C type the "
                                 f"launchers do not know ({', '.join(C_TYPES)})")
            parameters.append(Parameter(words[-1], ctype, pointer, const and pointer))
        found[name] = Signature(file, name, tuple(parameters))
    return found


def signature(file, kernel, directory=KERNEL_DIR):
    try:
        return signatures(file, directory)[kernel]
    except KeyError:
        raise ValueError(f"{file} has no kernel {kernel!r}; it has "
                         f"{', '.join(signatures(file, directory)) or 'none'}") from None


# --------------------------------------------------------------------------- the GPU launcher

class CupyLauncher:
    """Launches the kernels on the current CUDA device (needs a GPU; see CupyBackend)."""

    def __init__(self, cupy):
        self._cupy = cupy
        self._functions = {}  # (file, kernel) -> cupy RawKernel

    def function(self, file, kernel):
        key = (file, kernel)
        if key not in self._functions:
            signature(file, kernel)  # a clear error for a name the file lacks
            module = self._cupy.RawModule(code=source(file), options=NVRTC_OPTIONS)
            for name in signatures(file):  # one compilation serves every kernel of the file
                self._functions[(file, name)] = module.get_function(name)
        return self._functions[key]

    def launch(self, file, kernel, grid, block, args):
        self.function(file, kernel)(tuple(grid), tuple(block), signature(file, kernel).bind(args))

    def compile_all(self):
        """Compile every file now (NVRTC, or CuPy's on-disk cache) rather than on first use."""
        for file in kernel_files():
            self.function(file, next(iter(signatures(file))))
