"""minigemma's own checkpoint format: one folder, self-describing, versioned.

    config.json         {"format": "minigemma", "format_version": 1, "architecture": ...,
                         "config": {model config fields}, "embedding_dtype": ...,
                         "quantized": {tensor name: block kind}, "source": ...}
    model.safetensors   tensors under minigemma's semantic names (`parameter_shapes`):
                        float32 / bf16 arrays, or uint8 GGUF-style blocks [O, row_bytes]
                        for the names listed under "quantized"
    tokenizer.model     SentencePiece model, when the source had one

Norm gains are stored as the effective gain 1 + w, in float32. A folder is written under a
temporary name and renamed when complete, so an interrupted conversion never leaves a folder
that looks finished.
"""
import json
import os
import shutil
import tempfile

from minigemma.formats.conversion import check_tensor_names
from minigemma.formats.gguf.blocks import BLOCK_FORMATS, QuantizedWeight
from minigemma.formats.safetensors import SafetensorsFile, write_safetensors
from minigemma.models.config import GemmaConfig, GriffinConfig

FORMAT_NAME = "minigemma"
FORMAT_VERSION = 1
CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE = "config.json", "model.safetensors", "tokenizer.model"
STORAGE_DTYPES = {"f32": "F32", "bf16": "BF16"}


ARCHITECTURES = {"gemma": GemmaConfig, "griffin": GriffinConfig}


def config_class(architecture):
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r} in {CONFIG_FILE}; known: "
                         f"{', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[architecture]


def architecture_of(config):
    return next(name for name, cls in ARCHITECTURES.items() if isinstance(config, cls))


def write_checkpoint(dst, config, tensors, *, embedding_dtype, source, tokenizer_bytes=None,
                     overwrite=False, extra_meta=None):
    """Write a checkpoint folder at `dst`: the one place a checkpoint is written (converters
    return a ConvertedModel and `minigemma.formats.convert.convert` passes it here).

    tensors: list of (name, shape, storage, produce): storage "f32"/"bf16" with produce()
    returning a float32 array, or "q8_0"/"q4_k"/… with produce() returning a QuantizedWeight.
    """
    dst = os.path.abspath(os.fspath(dst))
    if os.path.exists(dst) and os.listdir(dst) and not overwrite:
        raise FileExistsError(f"{dst} exists and is not empty; choose another folder or pass "
                              f"overwrite=True (--force)")
    parent = os.path.dirname(dst)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".minigemma-partial-", dir=parent)
    try:
        quantized, entries = {}, []
        for name, shape, storage, produce in tensors:
            if storage in STORAGE_DTYPES:
                entries.append((name, shape, STORAGE_DTYPES[storage], produce))
            else:
                row_bytes = _row_bytes(storage, shape)
                quantized[name] = {"kind": storage, "shape": list(shape)}
                entries.append((name, (shape[0], row_bytes), "U8",
                                lambda produce=produce: _blocks(produce())))
        write_safetensors(os.path.join(tmp, WEIGHTS_FILE), entries,
                          metadata={"format": FORMAT_NAME})
        if tokenizer_bytes is not None:
            with open(os.path.join(tmp, TOKENIZER_FILE), "wb") as f:
                f.write(tokenizer_bytes)
        meta = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
                "architecture": architecture_of(config), "config": config.to_dict(),
                "embedding_dtype": embedding_dtype, "quantized": quantized, "source": source,
                **(extra_meta or {})}
        with open(os.path.join(tmp, CONFIG_FILE), "w") as f:
            json.dump(meta, f, indent=2)
        if os.path.exists(dst):
            shutil.rmtree(dst)
        os.replace(tmp, dst)  # the folder appears complete, or not at all
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dst


def _row_bytes(kind, shape):
    fmt = BLOCK_FORMATS[kind]
    return shape[1] // fmt.block_elems * fmt.block_bytes


def _blocks(weight):
    if not isinstance(weight, QuantizedWeight):
        raise TypeError("a quantized tensor must be produced as a QuantizedWeight")
    return weight.blocks


def read_meta(path):
    """The parsed config.json of a checkpoint folder, checked for format and version."""
    cfg_path = os.path.join(path, CONFIG_FILE)
    if not os.path.isfile(cfg_path):
        raise FileNotFoundError(f"{path} is not a minigemma checkpoint: no {CONFIG_FILE} "
                                f"(convert a model with `minigemma convert SRC DST`)")
    with open(cfg_path) as f:
        meta = json.load(f)
    if meta.get("format") != FORMAT_NAME:
        raise ValueError(f"{cfg_path} is not a minigemma checkpoint (format "
                         f"{meta.get('format')!r}); convert it with `minigemma convert`")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{cfg_path}: format version {meta.get('format_version')} is not "
                         f"supported (this minigemma reads version {FORMAT_VERSION})")
    return meta


def read_checkpoint(path, expected_shapes=None):
    """(meta, config, iterator of (name, host weight)) for a checkpoint folder.

    expected_shapes(config) -> {name: shape} is the network's parameter list; by default, that
    of the network the config describes (Transformer or Griffin).

    Every expected tensor must be present with its shape, and nothing else may be there.
    Weights come back one at a time: float32 arrays, or QuantizedWeight.
    """
    path = os.fspath(path)
    meta = read_meta(path)
    config = config_class(meta.get("architecture")).from_dict(meta["config"])
    if expected_shapes is None:
        from minigemma.model import network_class  # the models import this module
        expected_shapes = network_class(config).parameter_shapes
    expected = expected_shapes(config)
    weights = SafetensorsFile(os.path.join(path, WEIGHTS_FILE))
    quantized = meta.get("quantized", {})
    stored = {name: tuple(quantized[name]["shape"]) if name in quantized else weights.shape(name)
              for name in weights.names()}
    check_tensor_names(path, stored, expected, f"the {config.family} config in {CONFIG_FILE}")

    def tensors():
        for name in expected:
            if name in quantized:
                yield name, QuantizedWeight(quantized[name]["kind"], weights.read(name),
                                            tuple(quantized[name]["shape"]))
            else:
                yield name, weights.read(name)
    return meta, config, tensors()
