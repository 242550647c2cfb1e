"""Backend registry: which backends exist, which work here, and why the others do not.

Selection is by name (`get_backend("numba")`, `load(..., backend="numba")`); there is no global
switch. "auto", the default of `load()` and of the CLI, is the fastest backend that works here:
CuPy on a working GPU, else Numba, else the NumPy reference. Optional backends are probed lazily,
so `import minigemma` imports neither Numba nor CuPy.
"""
import importlib

# name -> (module, class, probe). A probe returns None when the backend can run here, or a
# sentence saying why not. It may import the optional dependency; nothing else does before it.
_REGISTRY = {
    "numpy": ("minigemma.backends.reference", "NumpyBackend", None),
    "numba": ("minigemma.backends.numba.backend", "NumbaBackend", "probe"),
    "cupy": ("minigemma.backends.cupy.backend", "CupyBackend", "probe"),
}
_instances = {}
AUTO_ORDER = ("cupy", "numba", "numpy")  # fastest first; "auto" takes the first that works


def _unavailable_reason(name):
    module_name, _, probe = _REGISTRY[name]
    if probe is None:
        return None
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:  # the backend's own module failed to import
        return f"cannot import {module_name}: {e}"
    return getattr(module, probe)()


def available_backends():
    """{name: None if usable here, else the reason it is not} for every known backend."""
    return {name: _unavailable_reason(name) for name in _REGISTRY}


def backend_class(name):
    """The class of the backend called `name`, imported but not instantiated: this works where
    the backend is unavailable too (its module imports its optional dependency only on use)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown backend {name!r}; known backends: {', '.join(_REGISTRY)}")
    module_name, class_name, _ = _REGISTRY[name]
    return getattr(importlib.import_module(module_name), class_name)


def auto_backend_name():
    """The name "auto" stands for: the first of AUTO_ORDER that works here."""
    return next(name for name in AUTO_ORDER if _unavailable_reason(name) is None)


def get_backend(name="auto"):
    """The backend called `name` ("auto": the fastest that works here, see AUTO_ORDER), or a
    ValueError saying why it cannot be used."""
    if not isinstance(name, str):
        return name  # already a backend object
    if name == "auto":
        name = auto_backend_name()
    if name not in _REGISTRY:
        raise ValueError(f"unknown backend {name!r}; known backends: "
                         f"{', '.join(_REGISTRY)}, or auto")
    if name not in _instances:
        reason = _unavailable_reason(name)
        if reason is not None:
            raise ValueError(f"backend {name!r} is not available here: {reason}")
        _instances[name] = backend_class(name)()
    return _instances[name]
