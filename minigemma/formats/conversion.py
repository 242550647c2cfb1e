"""What every converter shares: its result, and the one strict check of the tensors it read.

A converter (HF, HF RecurrentGemma, GGUF, official recurrentgemma) turns a source into a
ConvertedModel; `minigemma.formats.convert.convert` hands that to
`minigemma.formats.native.write_checkpoint`, the only code that writes a checkpoint folder.
Before anything is produced, the converter checks the source's tensors against what the config
needs with check_tensor_names, and the checkpoint reader checks a folder the same way
(docs/formats.md says what each format holds). check_finite refuses a non-finite weight, at
conversion (`write_checkpoint`, on every tensor it writes) and at load (`read_checkpoint`).
"""
from dataclasses import dataclass

import numpy as np

from minigemma.formats.gguf.blocks import QuantizedWeight, non_finite_scales

SHOWN = 5  # names listed per kind of problem; the rest are counted


@dataclass(frozen=True)
class ConvertedModel:
    """A source read by a converter, ready to be written.

    config           GemmaConfig or GriffinConfig
    tensors          list of (name, shape, storage, produce) in minigemma's names: storage
                     "f32" / "bf16" with produce() returning a float32 array, or a block kind
                     ("q8_0", "q4_k", …) with produce() returning a QuantizedWeight. Nothing is
                     read before produce() is called, so writing holds one tensor at a time.
    embedding_dtype  the dtype the embedding scale √D is rounded to: "float32" or "bfloat16"
                     (docs/numerics.md#embedding-scale-dtype)
    tokenizer_bytes  the SentencePiece model (a tokenizer.model's content), or None
    source           where it came from, recorded in config.json, e.g. "gguf:model.gguf"
    """
    config: object
    tensors: list
    embedding_dtype: str
    tokenizer_bytes: bytes | None
    source: str


def check_tensor_names(source, found_shapes, expected_shapes, what):
    """Strictness, the same for every format: ValueError unless `found_shapes` {name: shape}
    (what the file holds) has exactly the names of `expected_shapes` {name: shape} (what the
    config needs), each with its shape.

    source names the file in the message; `what` names who needs the tensors, e.g. "the gemma2
    converter". One error lists every problem: the missing tensors, the unexpected ones and
    each wrong shape with both shapes.

        check_tensor_names("m.gguf", {"a": (2, 3)}, {"a": (3, 2)}, "the gemma config")
        ValueError: m.gguf: tensor 'a' has shape (2, 3), the gemma config needs (3, 2)
    """
    missing = [name for name in expected_shapes if name not in found_shapes]
    unexpected = [name for name in found_shapes if name not in expected_shapes]
    wrong = [(name, tuple(found_shapes[name]), tuple(shape))
             for name, shape in expected_shapes.items()
             if name in found_shapes and tuple(found_shapes[name]) != tuple(shape)]
    problems = []
    if missing:
        problems.append(f"missing tensors {_few(missing)}")
    if unexpected:
        problems.append(f"unexpected tensors, which {what} does not know: {_few(unexpected)}")
    for name, found, expected in wrong[:SHOWN]:
        problems.append(f"tensor {name!r} has shape {found}, {what} needs {expected}")
    if len(wrong) > SHOWN:
        problems.append(f"… and {len(wrong) - SHOWN} more tensors of the wrong shape")
    if len(problems) == 1:
        raise ValueError(f"{source}: {problems[0]}")
    if problems:
        raise ValueError(f"{source}: the tensors do not fit {what}:\n  "
                         + "\n  ".join(problems))


def _few(names):
    """The first SHOWN names, and how many more there are."""
    more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
    return f"{names[:SHOWN]}{more}"


def check_finite(source, name, weight):
    """ValueError naming `source` and the tensor `name` unless every value of `weight` (a float
    array or a QuantizedWeight) is finite. Blocks are judged by their fp16 scales
    (`non_finite_scales`); an array by its sum first (one pass; any Inf or NaN makes it
    non-finite), and counted only when the sum is not finite, which large finite values can
    also cause."""
    if isinstance(weight, QuantizedWeight):
        bad = non_finite_scales(weight)
        if bad:
            raise ValueError(f"{source}: tensor {name!r} ({weight.kind}) has {bad} block "
                             f"scales that are Inf or NaN; a model's weights must be finite")
        return
    if np.isfinite(np.sum(weight)):
        return
    bad = int(np.size(weight) - np.count_nonzero(np.isfinite(weight)))
    if bad:
        raise ValueError(f"{source}: tensor {name!r} has {bad} values that are Inf or NaN; a "
                         f"model's weights must be finite")


TOKENIZER_LIMIT = 256 * 1024 * 1024  # a tokenizer.model larger than this is not one


def read_tokenizer_file(path, config):
    """The bytes of the SentencePiece model at `path` for a converter, or None when there is no
    file: checked to load, and to have no more pieces than `config` embeds (ValueError naming
    the file). A converted folder keeps only tokenizers that pass."""
    import os

    from minigemma.formats.files import read_bytes
    from minigemma.text.tokenizer import Tokenizer
    if path is None or not os.path.lexists(path):
        return None
    data = read_bytes(path, "tokenizer.model", TOKENIZER_LIMIT)
    tokenizer = Tokenizer.from_bytes(data, name=os.fspath(path))
    if tokenizer.vocab_size > config.vocab_size:
        raise ValueError(f"{path}: the tokenizer has {tokenizer.vocab_size} pieces but the model "
                         f"embeds only {config.vocab_size} token ids")
    return data
