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
    """The ConvertedModel of a Gemma GGUF file (its storage kinds kept). The vocabulary must
    have one piece per embedding row, as llama.cpp requires."""
    from minigemma.text.tokenizer import Tokenizer
    reader = open_gguf(path)
    hparams = read_gguf_hparams(reader)  # its errors name the file
    try:
        config = GemmaConfig(**hparams)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    values = dict(iter_gguf_tensors(reader, copy=False))  # memory-mapped views, nothing read yet
    shapes = parameter_shapes(config)
    check_tensor_names(path, {name: value.shape for name, value in values.items()}, shapes,
                       f"the {config.family} config of its metadata")
    tokenizer = Tokenizer.from_gguf(reader)
    if tokenizer.vocab_size != config.vocab_size:
        raise ValueError(f"{path}: the vocabulary has {tokenizer.vocab_size} tokens but the "
                         f"embedding has {config.vocab_size} rows")
    tensors = [(name, shape, getattr(values[name], "kind", "f32"),
                lambda value=values[name]: value)
               for name, shape in shapes.items()]
    return ConvertedModel(config, tensors, "float32", tokenizer.serialized_model(),
                          source=f"gguf:{os.path.abspath(os.fspath(path))}")
