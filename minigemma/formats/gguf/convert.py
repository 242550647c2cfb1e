"""GGUF file -> minigemma checkpoint: config from the metadata, tensors kept as stored.

Quantized matrices keep their llama.cpp blocks (the NumPy backend dequantizes them at load,
faster backends multiply them directly); float tensors are stored as float32. Norm gains are
already 1 + w in GGUF files (see `minigemma.formats.gguf.reader`). The tokenizer is rebuilt from
the GGUF vocabulary (`minigemma.formats.gguf.vocabulary`) and saved as tokenizer.model. The
embedding scale uses float32 √D, as llama.cpp does and as HF does on the dequantized float32
weights.
"""
import os

from minigemma.formats.conversion import ConvertedModel, check_tensor_names
from minigemma.formats.gguf.reader import iter_gguf_tensors, open_gguf, read_gguf_hparams
from minigemma.models.config import GemmaConfig
from minigemma.models.gemma import parameter_shapes


def gguf_tensors(path):
    """The ConvertedModel of a Gemma GGUF file (its storage kinds kept)."""
    from minigemma.text.tokenizer import Tokenizer
    reader = open_gguf(path)
    config = GemmaConfig(**read_gguf_hparams(reader))
    values = dict(iter_gguf_tensors(reader, copy=False))  # memory-mapped views, nothing read yet
    shapes = parameter_shapes(config)
    check_tensor_names(path, {name: value.shape for name, value in values.items()}, shapes,
                       f"the {config.family} config of its metadata")
    tensors = [(name, shape, getattr(values[name], "kind", "f32"),
                lambda value=values[name]: value)
               for name, shape in shapes.items()]
    tokenizer_bytes = Tokenizer.from_gguf(reader).serialized_model()
    return ConvertedModel(config, tensors, "float32", tokenizer_bytes,
                          source=f"gguf:{os.path.basename(os.fspath(path))}")
