"""Numba CPU backend (placeholder until its issue lands: reported as unavailable)."""
from .numpy_backend import NumpyBackend


def probe():
    return "not implemented yet (the Numba kernels are a separate issue)"


class NumbaBackend(NumpyBackend):
    name = "numba"
