"""minigemma's own checkpoint format: one folder, self-describing, versioned.

    config.json         {"format": "minigemma", "format_version": 1, "architecture": ...,
                         "config": {model config fields}, "embedding_dtype": ...,
                         "quantized": {tensor name: {"kind", "shape"}}, "source": ...,
                         "files": {file name: size in bytes}}
    model.safetensors   tensors under minigemma's semantic names (`parameter_shapes`):
                        float32 / bf16 arrays, or uint8 GGUF-style blocks [O, row_bytes]
                        for the names listed under "quantized"
    tokenizer.model     SentencePiece model, when the source had one

Norm gains are stored as the effective gain 1 + w, in float32. Every weight is checked to be
finite when it is written and when it is read (`conversion.check_finite`).

Interrupted conversions (docs/formats.md#native). A folder is written under a temporary name
(`.minigemma-partial-…`) beside the destination and renamed when complete; a folder it replaces
is first renamed aside, and deleted only once the new one is in place, so neither a kill nor a
crash leaves a folder that looks complete but is not, or loses a good one. Each writer holds a
lock (a `.lock` file with flock) while it works; the next writer in the same parent folder
removes what dead writers left, and puts back a replaced folder that was never succeeded. The
"files" of config.json let a reader tell a whole folder from a damaged one.
"""
import json
import os
import shutil
import tempfile
from contextlib import contextmanager

from minigemma.formats.conversion import check_finite, check_tensor_names
from minigemma.formats.files import read_json, regular_file
from minigemma.formats.gguf.blocks import BLOCK_FORMATS, QuantizedWeight
from minigemma.formats.safetensors import SafetensorsFile, write_safetensors
from minigemma.models.config import GemmaConfig, GriffinConfig

try:
    import fcntl
except ImportError:  # not POSIX: no lock, so no cleanup of other writers' leftovers
    fcntl = None

FORMAT_NAME = "minigemma"
FORMAT_VERSION = 1
CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE = "config.json", "model.safetensors", "tokenizer.model"
STORAGE_DTYPES = {"f32": "F32", "bf16": "BF16"}
EMBEDDING_DTYPES = ("float32", "bfloat16", "float16")
PARTIAL_PREFIX = ".minigemma-partial-"  # + a random stem: the folder being written
LOCK_SUFFIX, REPLACED_SUFFIX = ".lock", ".replaced"  # beside it: its lock, the folder it replaces


ARCHITECTURES = {"gemma": GemmaConfig, "griffin": GriffinConfig}


def config_class(architecture):
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r} in {CONFIG_FILE}; known: "
                         f"{', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[architecture]


def architecture_of(config):
    return next(name for name, cls in ARCHITECTURES.items() if isinstance(config, cls))


def check_destination(dst, overwrite=False):
    """The absolute path of `dst` if a checkpoint may be written there: nothing there, an empty
    folder, or (overwrite=True) a folder to replace. FileExistsError otherwise."""
    dst = os.path.abspath(os.fspath(dst))
    try:
        os.lstat(dst)
    except FileNotFoundError:
        pass
    except OSError as e:  # a name too long, a parent that is a file…
        raise ValueError(f"{dst}: cannot be a destination ({e.strerror})") from None
    if len(os.path.basename(dst)) + len(PARTIAL_PREFIX) + 20 > 255:
        raise ValueError(f"{dst}: the folder name is too long (at most about 220 characters)")
    if os.path.lexists(dst) and not os.path.isdir(dst):
        raise FileExistsError(f"{dst} exists and is not a folder; choose another destination")
    if os.path.isdir(dst) and os.listdir(dst) and not overwrite:
        raise FileExistsError(f"{dst} exists and is not empty; choose another folder or pass "
                              f"overwrite=True (--force)")
    return dst


def prepare_destination(dst, overwrite=False):
    """check_destination, after cleaning up what dead writers left in dst's parent folder
    (a folder they had set aside and put back is a folder that exists); the parent is made."""
    parent = os.path.dirname(os.path.abspath(os.fspath(dst)))
    os.makedirs(parent, exist_ok=True)
    remove_leftovers(parent)
    return check_destination(dst, overwrite)


def write_checkpoint(dst, config, tensors, *, embedding_dtype, source, tokenizer_bytes=None,
                     overwrite=False, extra_meta=None):
    """Write a checkpoint folder at `dst`: the one place a checkpoint is written (converters
    return a ConvertedModel and `minigemma.formats.convert.convert` passes it here).

    tensors: list of (name, shape, storage, produce): storage "f32"/"bf16" with produce()
    returning a float32 array, or "q8_0"/"q4_k"/… with produce() returning a QuantizedWeight.
    Every produced weight must be finite (ValueError naming it otherwise).
    """
    if embedding_dtype not in EMBEDDING_DTYPES:
        raise ValueError(f"embedding_dtype must be one of {EMBEDDING_DTYPES}, got "
                         f"{embedding_dtype!r}")
    with staged_folder(dst, overwrite) as (dst, tmp):
        quantized, entries = {}, []
        for name, shape, storage, produce in tensors:
            if storage in STORAGE_DTYPES:
                entries.append((name, shape, STORAGE_DTYPES[storage],
                                _checked(source, name, produce)))
            else:
                row_bytes = _row_bytes(storage, shape)
                quantized[name] = {"kind": storage, "shape": list(shape)}
                entries.append((name, (shape[0], row_bytes), "U8",
                                lambda p=_checked(source, name, produce): _blocks(p())))
        write_safetensors(os.path.join(tmp, WEIGHTS_FILE), entries,
                          metadata={"format": FORMAT_NAME})
        if tokenizer_bytes is not None:
            with open(os.path.join(tmp, TOKENIZER_FILE), "wb") as f:
                f.write(tokenizer_bytes)
        files = {name: os.path.getsize(os.path.join(tmp, name)) for name in os.listdir(tmp)}
        meta = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
                "architecture": architecture_of(config), "config": config.to_dict(),
                "embedding_dtype": embedding_dtype, "quantized": quantized, "source": source,
                "files": files, **(extra_meta or {})}
        with open(os.path.join(tmp, CONFIG_FILE), "w") as f:
            json.dump(meta, f, indent=2)
    return dst


def _checked(source, name, produce):
    def run():
        weight = produce()
        check_finite(source, name, weight)
        return weight
    return run


@contextmanager
def staged_folder(dst, overwrite=False):
    """with staged_folder(dst) as (dst, tmp): write a folder's files into `tmp`; it becomes
    `dst` whole when the block ends, and is deleted if the block raises. A lock beside `tmp`
    marks it as in progress, so that `remove_leftovers` cleans up only after dead writers."""
    dst = prepare_destination(dst, overwrite)
    lock, tmp = _start(os.path.dirname(dst), dst)
    try:
        yield dst, tmp
        _swap_in(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        _finish(lock)


def _start(parent, dst):
    """(lock, folder): take a lock beside a new temporary folder, then make the folder."""
    fd, lock_path = tempfile.mkstemp(prefix=PARTIAL_PREFIX, suffix=LOCK_SUFFIX, dir=parent)
    lock = os.fdopen(fd, "w")
    lock.path = lock_path
    if fcntl is not None:
        fcntl.flock(lock, fcntl.LOCK_EX)
    lock.write(json.dumps({"destination": dst}))
    lock.flush()
    tmp = lock_path.removesuffix(LOCK_SUFFIX)
    os.mkdir(tmp)
    return lock, tmp


def _swap_in(tmp, dst):
    """Rename the finished folder `tmp` to `dst`; a folder at `dst` is renamed aside first and
    deleted only after the new one is in place."""
    replaced = tmp + REPLACED_SUFFIX
    if os.path.isdir(dst):
        os.replace(dst, replaced)
    os.replace(tmp, dst)  # the folder appears complete, or not at all
    shutil.rmtree(replaced, ignore_errors=True)


def _finish(lock):
    try:
        os.remove(lock.path)
    except FileNotFoundError:  # taken for a dead writer's in the instant before its flock
        pass
    lock.close()  # releases the flock


def remove_leftovers(parent):
    """Clean up after writers in `parent` that died: delete their partial folders, and put a
    folder they had renamed aside back in place when nothing replaced it (else delete it). A
    writer that is alive holds its lock and is left alone."""
    if fcntl is None:
        return
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in names:
        if not (name.startswith(PARTIAL_PREFIX) and name.endswith(LOCK_SUFFIX)):
            continue
        lock_path = os.path.join(parent, name)
        try:
            lock = open(lock_path, "r+")
        except OSError:
            continue
        with lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # its writer is still at work
            try:
                destination = json.loads(lock.read() or "{}").get("destination")
            except ValueError:
                destination = None
            tmp = lock_path.removesuffix(LOCK_SUFFIX)
            shutil.rmtree(tmp, ignore_errors=True)
            replaced = tmp + REPLACED_SUFFIX
            if os.path.isdir(replaced):
                if destination and not os.path.lexists(destination):
                    os.replace(replaced, destination)
                else:
                    shutil.rmtree(replaced, ignore_errors=True)
            os.remove(lock_path)
    for name in os.listdir(parent):  # partial folders without a lock: their writer is gone
        path = os.path.join(parent, name)
        if (name.startswith(PARTIAL_PREFIX) and not name.endswith(LOCK_SUFFIX)
                and os.path.isdir(path)
                and not os.path.exists(path.removesuffix(REPLACED_SUFFIX) + LOCK_SUFFIX)):
            shutil.rmtree(path, ignore_errors=True)


def _row_bytes(kind, shape):
    fmt = BLOCK_FORMATS[kind]
    return shape[1] // fmt.block_elems * fmt.block_bytes


def _blocks(weight):
    if not isinstance(weight, QuantizedWeight):
        raise TypeError("a quantized tensor must be produced as a QuantizedWeight")
    return weight.blocks


def read_meta(path):
    """The parsed, checked config.json of a checkpoint folder: format and version, the type of
    every entry, and that the folder holds every file it lists with its size (a folder damaged
    after it was written is refused, naming the file)."""
    path = os.fspath(path)
    cfg_path = os.path.join(path, CONFIG_FILE)
    if not os.path.lexists(cfg_path):
        raise FileNotFoundError(f"{path} is not a minigemma checkpoint: no {CONFIG_FILE} "
                                f"(convert a model with `minigemma convert SRC DST`)")
    meta = read_json(cfg_path, f"{CONFIG_FILE} of a minigemma checkpoint")
    if meta.get("format") != FORMAT_NAME:
        raise ValueError(f"{cfg_path} is not a minigemma checkpoint (format "
                         f"{meta.get('format')!r}); convert it with `minigemma convert`")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{cfg_path}: format_version {meta.get('format_version')!r} is not "
                         f"supported (this minigemma reads version {FORMAT_VERSION})")

    def bad(key, expected):
        raise ValueError(f"{cfg_path}: {key!r} must be {expected}, got {meta.get(key)!r}")
    if not isinstance(meta.get("architecture"), str) or meta["architecture"] not in ARCHITECTURES:
        bad("architecture", f"one of {', '.join(ARCHITECTURES)}")
    if not isinstance(meta.get("config"), dict):
        bad("config", "an object of config fields")
    if meta.get("embedding_dtype", "float32") not in EMBEDDING_DTYPES:
        bad("embedding_dtype", f"one of {', '.join(EMBEDDING_DTYPES)}")
    if not isinstance(meta.get("source", ""), str):
        bad("source", "a string")
    quantized = meta.setdefault("quantized", {})
    if not isinstance(quantized, dict) or not all(_is_block_entry(q) for q in quantized.values()):
        bad("quantized", f"an object {{tensor: {{'kind': one of {sorted(BLOCK_FORMATS)}, "
                         f"'shape': [O, I]}}}} with I a multiple of the kind's block")
    files = meta.get("files", {WEIGHTS_FILE: None})
    if not isinstance(files, dict) or not all(
            isinstance(n, str) and "/" not in n and n not in (".", "..")
            and (s is None or _is_size(s)) for n, s in files.items()):
        bad("files", "an object {file name: size in bytes}")
    for name, size in files.items():
        file = os.path.join(path, name)
        if not os.path.lexists(file):
            raise ValueError(f"{path}: the checkpoint is incomplete: {name} is missing (an "
                             f"interrupted conversion? convert it again)")
        regular_file(file, f"{name} of a minigemma checkpoint")
        if size is not None and os.path.getsize(file) != size:
            raise ValueError(f"{path}: the checkpoint is damaged: {name} has "
                             f"{os.path.getsize(file)} bytes, {CONFIG_FILE} says {size}")
    return meta


def _is_size(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_block_entry(entry):
    if not isinstance(entry, dict) or set(entry) != {"kind", "shape"}:
        return False
    kind, shape = entry["kind"], entry["shape"]
    return (isinstance(kind, str) and kind in BLOCK_FORMATS and isinstance(shape, list)
            and len(shape) == 2
            and all(_is_size(n) for n in shape) and shape[1] % BLOCK_FORMATS[kind].block_elems
            == 0)


def is_complete(path):
    """True when `path` is a checkpoint folder that read_meta accepts."""
    try:
        read_meta(path)
    except (OSError, ValueError):
        return False
    return True


def read_config(path, meta):
    """The config of a checkpoint whose config.json says `meta` (errors name the file)."""
    try:
        return config_class(meta["architecture"]).from_dict(meta["config"])
    except (ValueError, TypeError) as e:
        raise ValueError(f"{os.path.join(path, CONFIG_FILE)}: {e}") from None


def read_checkpoint(path, expected_shapes=None):
    """(meta, config, iterator of (name, host weight)) for a checkpoint folder.

    expected_shapes(config) -> {name: shape} is the network's parameter list (by default the
    `parameter_shapes` of the config's network: Gemma or Griffin).

    Every expected tensor must be present with its shape and storage dtype (F32 or BF16, U8
    blocks for a quantized one), nothing else may be there, and every weight must be finite.
    Weights come back one at a time: float32 arrays, or QuantizedWeight.
    """
    path = os.fspath(path)
    meta = read_meta(path)
    config = read_config(path, meta)
    weights_path = os.path.join(path, WEIGHTS_FILE)
    weights = SafetensorsFile(weights_path, f"{WEIGHTS_FILE} of a minigemma checkpoint")
    quantized = meta["quantized"]
    for name, entry in quantized.items():
        if name not in weights.names():
            raise ValueError(f"{weights_path}: tensor {name!r}, listed as quantized in "
                             f"{CONFIG_FILE}, is missing")
        blocks_shape = (entry["shape"][0], _row_bytes(entry["kind"], entry["shape"]))
        if weights.shape(name) != blocks_shape:
            raise ValueError(f"{weights_path}: tensor {name!r} holds blocks of shape "
                             f"{weights.shape(name)}; {entry['kind']} {entry['shape']} needs "
                             f"{blocks_shape}")
    stored = {name: tuple(quantized[name]["shape"]) if name in quantized else weights.shape(name)
              for name in weights.names()}
    expected = (expected_shapes or _network_shapes)(config)
    check_tensor_names(weights_path, stored, expected,
                       f"the {config.family} config in {CONFIG_FILE}")

    def tensors():
        for name in expected:
            if name in quantized:
                weight = QuantizedWeight(quantized[name]["kind"],
                                         weights.read(name, dtypes=("U8",)),
                                         tuple(quantized[name]["shape"]))
            else:
                weight = weights.read(name, dtypes=("F32", "BF16"))
            check_finite(weights_path, name, weight)
            yield name, weight
    return meta, config, tensors()


def _network_shapes(config):
    if isinstance(config, GemmaConfig):
        from minigemma.models.gemma import parameter_shapes
    else:
        from minigemma.models.griffin import parameter_shapes
    return parameter_shapes(config)


def read_tokenizer(path, config):
    """The checkpoint's Tokenizer, or None when it has no tokenizer.model. A tokenizer with more
    pieces than the model has embedding rows is refused; fewer is fine (Gemma 3 4B+ pads its
    embedding to 262208 rows for 262144 pieces), and generation samples only the pieces."""
    tok_path = os.path.join(os.fspath(path), TOKENIZER_FILE)
    if not os.path.lexists(tok_path):
        return None
    from minigemma.text.tokenizer import Tokenizer
    tokenizer = Tokenizer.from_file(regular_file(tok_path, TOKENIZER_FILE))
    if tokenizer.vocab_size > config.vocab_size:
        raise ValueError(f"{tok_path}: the tokenizer has {tokenizer.vocab_size} pieces but the "
                         f"model embeds only {config.vocab_size} token ids")
    return tokenizer
