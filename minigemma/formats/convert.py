"""`minigemma convert SRC DST`: any supported source into minigemma's format.

Sources: an HF safetensors folder (Gemma, Gemma 2, Gemma 3 text, RecurrentGemma), a llama.cpp
GGUF file, or an official `recurrentgemma` PyTorch `.pt` state dict. The tensors are converted
and written one at a time, with a progress bar.
"""
import os

from tqdm import tqdm

from minigemma.formats.hf import hf_tensors
from minigemma.formats.native import write_checkpoint

STORAGE_CHOICES = ("f32", "bf16", "q8_0", "q4_0")


def convert(src, dst, dtype="f32", progress=True, overwrite=False, extra_meta=None):
    """Convert `src` into a minigemma checkpoint folder at `dst`; returns dst."""
    if dtype not in STORAGE_CHOICES:  # (GGUF sources keep their own block kinds)
        raise ValueError(f"dtype must be one of {STORAGE_CHOICES}, got {dtype!r}")
    src = os.fspath(src)
    if os.path.isdir(src):
        if _hf_model_type(src) == "recurrent_gemma":
            from minigemma.formats.hf_griffin import hf_griffin_tensors
            config, embedding_dtype, tensors, tokenizer_bytes = hf_griffin_tensors(src, dtype)
        else:
            config, embedding_dtype, tensors, tokenizer_bytes = hf_tensors(src, dtype)
        source = f"hf:{os.path.abspath(src)}"
    elif src.endswith(".pt") and os.path.isfile(src):
        from minigemma.formats.recurrentgemma import official_tensors
        config, embedding_dtype, tensors, tokenizer_bytes = official_tensors(src, dtype)
        source = f"recurrentgemma-torch:{os.path.basename(src)}"
    elif src.endswith(".gguf") and os.path.isfile(src):
        from minigemma.formats.gguf.convert import gguf_tensors
        config, embedding_dtype, tensors, tokenizer_bytes = gguf_tensors(src)
        source = f"gguf:{os.path.basename(src)}"
    else:
        raise ValueError(f"{src}: not a supported source (expected an HF model folder, a "
                         f".gguf file or an official recurrentgemma .pt file)")
    bar = tqdm(total=len(tensors), desc="converting", unit="tensor", disable=not progress)

    def counted(produce):
        def run():
            array = produce()
            bar.update(1)
            return array
        return run
    tensors = [(name, shape, storage, counted(produce)) for name, shape, storage, produce in tensors]
    try:
        return write_checkpoint(dst, config, tensors, embedding_dtype=embedding_dtype,
                                source=source, tokenizer_bytes=tokenizer_bytes, extra_meta=extra_meta,
                                overwrite=overwrite)
    finally:
        bar.close()


def _hf_model_type(src):
    """The model_type of an HF folder's config.json (None if it has none)."""
    import json
    path = os.path.join(src, "config.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f).get("model_type")
