"""CuPy GPU backend (placeholder until its issue lands: reported as unavailable).

The NumPy reference ops are written against `xp`, so this backend will start as NumpyBackend
with `xp = cupy` and replace ops with custom kernels where the GPU needs them.
"""
import importlib.util

from minigemma.backends.reference import NumpyBackend


def probe():
    if importlib.util.find_spec("cupy") is None:
        return "CuPy is not installed (pip install minigemma[cupy] on a machine with CUDA)"
    return "not implemented yet (the CuPy backend is a separate issue)"


class CupyBackend(NumpyBackend):
    name = "cupy"
