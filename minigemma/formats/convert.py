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
import json
import os

from tqdm import tqdm

from minigemma.formats.native import write_checkpoint

STORAGE_CHOICES = ("f32", "bf16", "q8_0", "q4_0")


def convert(src, dst, dtype="f32", progress=True, overwrite=False, extra_meta=None,
            **source_args):
    """Convert `src` into a minigemma checkpoint folder at `dst`; returns dst.

    src: an HF folder, a .gguf file, a .pt official state dict or such a state dict itself.
    dtype: the storage of the matrices (GGUF sources keep their own block kinds).
    source_args: for official state dicts only (see the module docstring).
    """
    if dtype not in STORAGE_CHOICES:
        raise ValueError(f"dtype must be one of {STORAGE_CHOICES}, got {dtype!r}")
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


def read_source(src, dtype="f32", **source_args):
    """The ConvertedModel of `src`, by the converter of its kind (nothing is written)."""
    if hasattr(src, "items"):  # an official state dict in memory
        from minigemma.formats.recurrentgemma import official_tensors
        return official_tensors(src, dtype, **source_args)
    src = os.fspath(src)
    if src.endswith(".pt") and os.path.isfile(src):
        from minigemma.formats.recurrentgemma import official_tensors
        return official_tensors(src, dtype, **source_args)
    if source_args:
        raise ValueError(f"{src}: {', '.join(sorted(source_args))} apply only to official "
                         f"recurrentgemma state dicts; this source records its own config")
    if os.path.isdir(src):
        if _hf_model_type(src) == "recurrent_gemma":
            from minigemma.formats.hf_griffin import hf_griffin_tensors
            return hf_griffin_tensors(src, dtype)
        from minigemma.formats.hf import hf_tensors
        return hf_tensors(src, dtype)
    if src.endswith(".gguf") and os.path.isfile(src):
        from minigemma.formats.gguf.convert import gguf_tensors
        return gguf_tensors(src)
    raise ValueError(f"{src}: not a supported source (expected an HF model folder, a "
                     f".gguf file or an official recurrentgemma .pt file)")


def _hf_model_type(src):
    """The model_type of an HF folder's config.json (None if it has none)."""
    path = os.path.join(src, "config.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f).get("model_type")
