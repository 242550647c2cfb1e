"""GGUF file -> minigemma checkpoint: config from the metadata, tensors kept as stored.

Quantized matrices keep their llama.cpp blocks (the NumPy backend dequantizes them at load,
faster backends multiply them directly); float tensors are stored as float32. Norm gains are
already 1 + w in GGUF files (see gguf_import). The tokenizer is rebuilt from the GGUF
vocabulary and saved as tokenizer.model. The embedding scale uses float32 √D, as llama.cpp does
and as HF does on the dequantized float32 weights.
"""
import gguf

from minigemma.formats.gguf.reader import iter_gguf_tensors, read_gguf_hparams
from minigemma.models.config import GemmaConfig
from minigemma.models.gemma import parameter_shapes


def gguf_tensors(path):
    """(config, embedding dtype, tensor list for `write_checkpoint`, tokenizer bytes)."""
    from minigemma.text.tokenizer import Tokenizer
    reader = gguf.GGUFReader(path)
    config = GemmaConfig(**read_gguf_hparams(reader))
    values = dict(iter_gguf_tensors(reader, copy=False))  # memory-mapped views, nothing read yet
    shapes = parameter_shapes(config)
    missing = [n for n in shapes if n not in values]
    extra = [n for n in values if n not in shapes]
    if missing or extra:
        raise ValueError(f"{path}: GGUF tensors do not fit the config: missing {missing[:5]}, "
                         f"unexpected {extra[:5]}")
    tensors = []
    for name, shape in shapes.items():
        value = values[name]
        if tuple(value.shape) != tuple(shape):
            raise ValueError(f"{path}: tensor {name!r} has shape {tuple(value.shape)}, the "
                             f"config needs {tuple(shape)}")
        storage = getattr(value, "kind", "f32")
        tensors.append((name, shape, storage, lambda value=value: value))
    tokenizer_bytes = Tokenizer.from_gguf(reader).serialized_model()
    return config, "float32", tensors, tokenizer_bytes
