"""`minigemma convert SRC DST`: any supported source into minigemma's format, one entry point.

Sources, each read by its converter into a ConvertedModel (`minigemma.formats.conversion`):

    an HF safetensors folder     Gemma, Gemma 2, Gemma 3 text (hf), RecurrentGemma (hf_griffin)
    a llama.cpp .gguf file       Gemma, Gemma 2, Gemma 3 (gguf/convert)
    an official recurrentgemma   a .pt state dict, or one already in memory (recurrentgemma);
    state dict                   it does not record every hyperparameter, so `convert` takes
                                 them as keyword arguments: attention_window, final_softcap,
                                 max_position, tokenizer_path

`minigemma.formats.native.write_checkpoint` then writes the folder, one tensor at a time, with a
progress bar; nothing else writes checkpoints.
"""
import os

from tqdm import tqdm

from minigemma.formats.files import read_json, regular_file
from minigemma.formats.native import prepare_destination, write_checkpoint

STORAGE_CHOICES = ("f32", "bf16", "q8_0", "q4_0")


def convert(src, dst, dtype=None, progress=True, overwrite=False, extra_meta=None,
            **source_args):
    """Convert `src` into a minigemma checkpoint folder at `dst`; returns dst.

    src: an HF folder, a .gguf file, a .pt official state dict or such a state dict itself.
    dtype: the storage of the matrices of an HF or official source ("f32" when None); a GGUF
    file keeps its own storage, so it takes no dtype.
    source_args: for official state dicts only (see the module docstring).
    The destination is checked first, before anything is read.
    """
    if dtype is not None and dtype not in STORAGE_CHOICES:
        raise ValueError(f"dtype must be one of {STORAGE_CHOICES}, got {dtype!r}")
    prepare_destination(dst, overwrite)
    converted = read_source(src, dtype, **source_args)
    bar = tqdm(total=len(converted.tensors), desc="converting", unit="tensor",
               disable=not progress)

    def counted(produce):
        def run():
            array = produce()
            bar.update(1)
            return array
        return run
    tensors = [(name, shape, storage, counted(produce))
               for name, shape, storage, produce in converted.tensors]
    try:
        return write_checkpoint(dst, converted.config, tensors,
                                embedding_dtype=converted.embedding_dtype,
                                source=converted.source,
                                tokenizer_bytes=converted.tokenizer_bytes,
                                extra_meta=extra_meta, overwrite=overwrite)
    finally:
        bar.close()


def read_source(src, dtype=None, **source_args):
    """The ConvertedModel of `src`, by the converter of its kind (nothing is written)."""
    if hasattr(src, "items"):  # an official state dict in memory
        from minigemma.formats.recurrentgemma import official_tensors
        return official_tensors(src, dtype or "f32", **source_args)
    if not isinstance(src, (str, os.PathLike)):
        raise TypeError(f"src must be a path or a state dict, got {type(src).__name__}")
    src = os.fspath(src)
    if not os.path.lexists(src):
        raise FileNotFoundError(f"{src}: no such file or folder")
    if src.endswith(".pt") and not os.path.isdir(src):
        from minigemma.formats.recurrentgemma import official_tensors
        return official_tensors(regular_file(src, "official recurrentgemma state dict"),
                                dtype or "f32", **source_args)
    if source_args:
        raise ValueError(f"{src}: {', '.join(sorted(source_args))} apply only to official "
                         f"recurrentgemma state dicts; this source records its own config")
    if os.path.isdir(src):
        if _hf_model_type(src) == "recurrent_gemma":
            from minigemma.formats.hf_griffin import hf_griffin_tensors
            return hf_griffin_tensors(src, dtype or "f32")
        from minigemma.formats.hf import hf_tensors
        return hf_tensors(src, dtype or "f32")
    if src.endswith(".gguf"):
        if dtype is not None:
            raise ValueError(f"{src}: a GGUF file keeps its own storage (its block kinds); "
                             f"--dtype / dtype={dtype!r} applies to HF and recurrentgemma "
                             f"sources only")
        from minigemma.formats.gguf.convert import gguf_tensors
        return gguf_tensors(regular_file(src, "GGUF file"))
    raise ValueError(f"{src}: not a supported source (expected an HF model folder, a "
                     f".gguf file or an official recurrentgemma .pt file)")


def _hf_model_type(src):
    """The model_type of an HF folder's config.json (None if it has none)."""
    path = os.path.join(src, "config.json")
    if not os.path.lexists(path):
        return None
    return read_json(path, "config.json of an HF folder").get("model_type")
