"""The fuzz campaign of issue 12: corrupted checkpoints, GGUF files, configs and tokenizer files,
and bad arguments to the API and the CLI, each one judged.

A case is (seed, index): everything about it is drawn from `np.random.default_rng([seed, index])`,
so any case can be replayed alone (`python scripts/fuzz.py --seed S --only I`). Its target:

    native     a converted folder (config.json, model.safetensors, tokenizer.model), damaged,
               then load + logits + a few generated tokens
    gguf       a Gemma 3 GGUF (header, metadata, tensor infos, data, vocabulary), damaged,
               then convert + load + logits
    hf         an HF Gemma 3 folder (config.json, safetensors, index, tokenizer.model), damaged,
               then convert + load + logits
    tokenizer  a tokenizer.model damaged, then Tokenizer.from_file + encode / decode
    api        a bad argument to load, convert, logits, generate, stream, chat, encode, decode
    cli        a bad command line for `minigemma` (main() in-process)

Outcomes. Clean: success whose numbers are finite (text for text), or an exception of a clean
type (ValueError, TypeError, or an OSError about a path: FileNotFoundError, FileExistsError, …)
whose message names the file (for file cases) and, where the case knows it, the field, key,
tensor or argument; argparse's usage error for the CLI. Anything else fails the campaign:

    bad-type    another exception type (KeyError, IndexError, AttributeError, RuntimeError, …)
    unnamed     a clean type whose message does not name what it must
    accepted    success on an input that must be refused (a structural corruption)
    non-finite  success with NaN or Inf in the results
    memory      MemoryError (the worker runs under an address-space limit)
    hang        no answer within the case's time limit (the worker is killed)
    crash       the worker died (a segfault, an abort)

The runner (`run_campaign`) feeds cases in batches to worker subprocesses, each limited in
memory (RLIMIT_AS) and in time per case; a hang or crash kills only its worker, which is
replaced, and the batch goes on from the next case.
"""
import contextlib
import io
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass

import numpy as np

CLEAN_TYPES = (ValueError, TypeError, FileNotFoundError, FileExistsError, NotADirectoryError,
               IsADirectoryError, PermissionError)
KINDS = {"native": 0.24, "gguf": 0.30, "hf": 0.20, "tokenizer": 0.06, "api": 0.14, "cli": 0.06}
FAILURES = ("bad-type", "unnamed", "accepted", "non-finite", "memory", "hang", "crash")
MEMORY_LIMIT = 3 * 2**30  # address space of a worker
CASE_SECONDS = 30  # time limit of one case


@dataclass
class Outcome:
    index: int
    kind: str
    mutation: str
    status: str  # "ok", "clean", or one of FAILURES
    detail: str = ""

    @property
    def failed(self):
        return self.status in FAILURES


class Case:
    """What a case does, drawn from its own generator; filled in by the case's builder."""

    def __init__(self, seed, index):
        self.seed, self.index = seed, index
        self.rng = np.random.default_rng([seed, index])
        kinds, weights = zip(*KINDS.items())
        self.kind = kinds[self.rng.choice(len(kinds), p=np.array(weights) / sum(weights))]
        self.mutation = ""
        self.must_fail = False  # a structural corruption: success is "accepted"
        self.files = []  # one of these must be named in an error
        self.names = []  # ... and one of these, when given

    def pick(self, options):
        return options[int(self.rng.integers(len(options)))]


# --- values that a field should not take ----------------------------------------------------

BAD_VALUES = [None, -1, 0, 1, -(2**31), 2**31, 2**63, 2**64 + 5, 10**12, -1.0, 0.0, 1e-320,
              5e-324, 1e308, float("nan"), float("inf"), -float("inf"), 0.5, 2.5, "", "x",
              "1", "true", True, False, [], [1], [[1]], {}, {"a": 1}, "\udcff", "a" * 5000]


def bad_value(case):
    return case.pick(BAD_VALUES)


def json_safe(value):
    """JSON text for a value; NaN / Inf as Python's json writes them (json.loads reads them)."""
    try:
        return json.dumps(value)
    except (UnicodeEncodeError, ValueError):
        return json.dumps(str(value).encode("utf-8", "backslashreplace").decode())


# --- templates: the tiny artefacts every case starts from -----------------------------------

class Templates:
    """Tiny artefacts built once per worker: a native folder, a GGUF, an HF folder."""

    def __init__(self, root):
        from helpers.tiny_artefacts import write_tiny_gguf, write_tiny_hf, write_tiny_native
        self.root = root
        self.native = write_tiny_native(os.path.join(root, "native"))
        self.gguf = write_tiny_gguf(os.path.join(root, "model.gguf"))
        self.hf = write_tiny_hf(os.path.join(root, "hf"))
        self._model = None

    def model(self):
        if self._model is None:
            import minigemma
            self._model = minigemma.load(self.native, backend="numpy")
        return self._model


# --- running one case -----------------------------------------------------------------------

def run_case(seed, index, templates, workdir):
    case = Case(seed, index)
    try:
        check = BUILDERS[case.kind](case, templates, workdir)
    except Exception as e:  # the generator itself failed: a bug in the campaign, not in minigemma
        return Outcome(index, case.kind, case.mutation, "crash", f"building the case: {e!r}")
    try:
        result = check()
    except MemoryError:
        return Outcome(index, case.kind, case.mutation, "memory", "MemoryError")
    except CLEAN_TYPES as e:
        message = str(e)
        missing = unnamed(case, message)
        if missing:
            return Outcome(index, case.kind, case.mutation, "unnamed",
                           f"{type(e).__name__}: {message[:300]} (names no {missing})")
        return Outcome(index, case.kind, case.mutation, "clean",
                       f"{type(e).__name__}: {message[:160]}")
    except Exception as e:
        return Outcome(index, case.kind, case.mutation, "bad-type",
                       f"{type(e).__name__}: {str(e)[:300]}")
    if result is not True and result:  # a builder's own verdict ("non-finite", "accepted")
        return Outcome(index, case.kind, case.mutation, result[0], result[1])
    if case.must_fail:
        return Outcome(index, case.kind, case.mutation, "accepted", "no error")
    return Outcome(index, case.kind, case.mutation, "ok")


def unnamed(case, message):
    """What the message fails to name: "" when it names a file of case.files (if any) and one of
    case.names (if any)."""
    if case.files and not any(f in message for f in case.files):
        return f"file of {case.files}"
    if case.names and not any(n in message for n in case.names):
        return f"one of {case.names}"
    return ""


def finite(*arrays):
    for a in arrays:
        if not np.all(np.isfinite(np.asarray(a, dtype=np.float64))):
            return ("non-finite", "results hold NaN or Inf")
    return True


def use_model(folder):
    """load + logits + a few generated tokens: the numbers must be finite."""
    import minigemma
    model = minigemma.load(folder, backend="numpy")
    if model.config.max_position < 6:  # a legal model too short for the probe below
        return finite(model.logits([2]))
    logits = model.logits([2, 290, 291, 292, 5])
    if model.tokenizer is not None:
        text = model.generate("the cat", max_new_tokens=3)
        if not isinstance(text, str):
            return ("bad-type", f"generate returned {type(text).__name__}")
    return finite(logits)


# --- native folders -------------------------------------------------------------------------

CONFIG_FIELDS = ["family", "vocab_size", "d_model", "num_layers", "num_heads", "num_kv_heads",
                 "head_dim", "ffn_dim", "layer_types", "sliding_window", "rope_base_global",
                 "rope_base_local", "rope_scaling_global", "rope_scaling_local",
                 "query_pre_attn_scalar", "attn_softcap", "final_softcap", "qk_norm",
                 "post_norms", "gelu_approximate", "rms_eps", "max_position", "bos_id",
                 "eos_id", "pad_id", "unknown"]
META_KEYS = ["format", "format_version", "architecture", "config", "embedding_dtype",
             "quantized", "source", "files"]
# A value a config accepts may still not fit the tensors: then the message names tensors or the
# layer list instead of the field.
FITS = ["tensor '", "tensors", "layer_types", "vocabulary", "token ids", "pieces"]
SPECIAL_JSON = [b"[1, 2]", b"\xef\xbb\xbf{}", b'{"a": "\xff"}', b"", b"null", b"1e999",
                b"[" * 50000 + b"]" * 50000, b'{"a": 1, "a": 2}', b"{" * 3, b'"text"',
                b"\x00" * 64]


def native_case(case, t, workdir):
    folder = os.path.join(workdir, "native")
    shutil.copytree(t.native, folder)
    config_path = os.path.join(folder, "config.json")
    weights = os.path.join(folder, "model.safetensors")
    tokenizer = os.path.join(folder, "tokenizer.model")
    case.files = [folder]
    what = case.pick(["config_value", "meta_value", "config_bytes", "config_special",
                      "weights_truncate", "weights_header", "weights_data", "weights_special",
                      "weights_header", "weights_data", "tokenizer_file", "config_value"])
    case.mutation = f"native.{what}"
    meta = json.loads(open(config_path).read())
    if case.rng.random() < 0.5:
        meta.pop("files")  # the size check alone would catch a truncation: go past it too
    if what == "config_value":
        field = case.pick(CONFIG_FIELDS)
        value = bad_value(case)
        meta["config"][field] = value
        case.names = [field, *FITS]
        case.mutation += f".{field}={str(value)[:20]}"
    elif what == "meta_value":
        key = case.pick(META_KEYS)
        meta[key] = bad_value(case)
        case.names = [key]
        case.mutation += f".{key}"
    write_json(config_path, meta)
    if what == "config_bytes":
        flip_bytes(case, config_path)
    elif what == "config_special":
        with open(config_path, "wb") as f:
            f.write(case.pick(SPECIAL_JSON))
        case.must_fail = True
    elif what.startswith("weights"):
        damage_safetensors(case, weights, what)
    elif what == "tokenizer_file":
        damage_tokenizer(case, tokenizer)
    return lambda: use_model(folder)


def write_json(path, value):
    with open(path, "w") as f:
        f.write(json_text(value))


def json_text(value):
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json_safe(k)}: {json_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(json_text(v) for v in value) + "]"
    return json_safe(value)


def flip_bytes(case, path, start=0, end=None):
    data = bytearray(open(path, "rb").read())
    end = len(data) if end is None else min(end, len(data))
    if end <= start:
        return
    for _ in range(int(case.rng.integers(1, 6))):
        data[int(case.rng.integers(start, end))] = int(case.rng.integers(256))
    open(path, "wb").write(bytes(data))


def truncate(case, path, start=0):
    size = os.path.getsize(path)
    cut = int(case.rng.integers(start, size)) if size > start else 0
    with open(path, "r+b") as f:
        f.truncate(cut)
    case.mutation += f"@{cut}/{size}"


DAMAGED = ["the checkpoint is damaged", "the checkpoint is incomplete"]  # config.json's sizes


def damage_safetensors(case, path, what):
    case.files = [path, os.path.dirname(path)] + [f for f in case.files if f.endswith("out")]
    data = open(path, "rb").read()
    n = struct.unpack("<Q", data[:8])[0]
    header, body = json.loads(data[8:8 + n]), data[8 + n:]
    if what == "weights_truncate":
        truncate(case, path)
        case.must_fail = True
        return
    if what == "weights_special":
        os.remove(path)
        kind = case.pick(["fifo", "dir", "empty", "missing", "symlink-dir"])
        case.mutation += f".{kind}"
        if kind == "fifo":
            os.mkfifo(path)
        elif kind == "dir":
            os.mkdir(path)
        elif kind == "empty":
            open(path, "wb").close()
        elif kind == "symlink-dir":
            os.symlink(os.path.dirname(path), path)
        case.must_fail = True
        return
    names = sorted(k for k in header if k != "__metadata__")
    name = case.pick(names)
    entry = header[name]
    if what == "weights_data":  # NaN / Inf must be refused naming the tensor; others may pass
        begin, end = entry["data_offsets"]
        data = bytearray(data)
        at = 8 + n + begin + 4 * int(case.rng.integers(max(1, (end - begin) // 4)))
        kind = case.pick(["nan", "inf", "random", "huge"])
        value = {"nan": struct.pack("<f", float("nan")), "inf": struct.pack("<f", float("-inf")),
                 "random": bytes(case.rng.integers(0, 256, 4).astype(np.uint8)),
                 "huge": struct.pack("<f", 3e38)}[kind]
        data[at:at + 4] = value
        open(path, "wb").write(bytes(data))
        case.mutation += f".{kind}.{name}"
        if kind in ("nan", "inf"):
            case.must_fail = True
            case.names = [name, semantic_name_of(name)]
        elif kind == "huge":  # finite weights that overflow the forward pass: named where loaded
            case.files.append(os.path.join(os.path.dirname(os.path.dirname(path)), "out"))
        return
    edit = case.pick(["shift", "overlap", "negative", "relabel", "shape", "duplicate", "drop",
                      "rename", "add", "dtype-list", "shape-str", "no-offsets", "length",
                      "garbage", "list"])
    case.mutation += f".{edit}"
    case.must_fail = True
    blob = None
    if edit == "shift":
        step = 4 * int(case.rng.integers(1, 4))
        entry["data_offsets"] = [x + step for x in entry["data_offsets"]]
    elif edit == "overlap":
        other = case.pick([k for k in names if k != name])
        entry["data_offsets"] = list(header[other]["data_offsets"])
    elif edit == "negative":
        entry["data_offsets"][0] = -int(case.rng.integers(1, 100))
    elif edit == "relabel":
        entry["dtype"] = case.pick(["I32", "U32", "F16", "BF16", "U8", "F64", "I64", "BOOL",
                                    "F8_E4M3", "XYZ"])
        case.names = [name, entry["dtype"], *DAMAGED]
    elif edit == "shape":
        entry["shape"] = [int(x) for x in case.rng.integers(0, 200, size=len(entry["shape"]))]
    elif edit == "duplicate":
        text = json.dumps(header)
        dup = json.dumps({name: dict(entry, data_offsets=[0, 0])})[1:-1]
        blob = (text[:-1] + ", " + dup + "}").encode()
    elif edit == "drop":
        del header[name]
    elif edit == "rename":
        header[name + ".x"] = header.pop(name)
    elif edit == "add":
        end = max(v["data_offsets"][1] for k, v in header.items() if k != "__metadata__")
        header["extra"] = {"dtype": "F32", "shape": [1], "data_offsets": [end, end + 4]}
    elif edit == "dtype-list":
        entry["dtype"] = [entry["dtype"]]
    elif edit == "shape-str":
        entry["shape"] = "big"
    elif edit == "no-offsets":
        del entry["data_offsets"]
    elif edit == "list":
        header = [header]
    if blob is None:
        blob = json.dumps(header).encode()
    length = len(blob)
    if edit == "length":
        length += int(case.pick([-8, -3, -1, 1, 2, 7, 10**9, 2**63]))
    if edit == "garbage":
        blob = bytearray(blob)
        for _ in range(3):
            blob[int(case.rng.integers(len(blob)))] = int(case.rng.integers(256))
        blob = bytes(blob)
        case.must_fail = False  # a flipped letter inside a name or a digit can stay valid
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", length & (2**64 - 1)) + blob + body)


def semantic_name_of(name):
    """minigemma's name of an HF tensor name (errors at conversion use minigemma's names)."""
    from helpers.tiny_artefacts import HF_LAYER_NAMES
    ours = {"model.embed_tokens.weight": "embedding", "model.norm.weight": "final_norm"}
    ours.update({f"model.layers.{i}.{hf}.weight": f"layers.{i}.{mg}"
                 for i in range(8) for mg, hf in HF_LAYER_NAMES.items()})
    return ours.get(name, name)


def damage_tokenizer(case, path):
    from helpers.tiny_artefacts import toy_tokenizer_bytes
    kind = case.pick(["truncate", "flip", "empty", "random", "gguf", "missing", "fifo",
                      "big-vocab", "proto-edit"])
    case.mutation += f".{kind}"
    if kind == "truncate":
        truncate(case, path, 1)
    elif kind == "flip":
        flip_bytes(case, path)
    elif kind == "empty":
        open(path, "wb").close()
        case.must_fail = True
    elif kind == "random":
        open(path, "wb").write(bytes(case.rng.integers(0, 256, 512).astype(np.uint8)))
    elif kind == "gguf":
        open(path, "wb").write(b"GGUF" + b"\0" * 64)
        case.must_fail = True
    elif kind == "missing":
        os.remove(path)
    elif kind == "fifo":
        os.remove(path)
        os.mkfifo(path)
        case.must_fail = True
    elif kind in ("big-vocab", "proto-edit"):
        from sentencepiece import sentencepiece_model_pb2 as pb
        proto = pb.ModelProto.FromString(toy_tokenizer_bytes())
        if kind == "big-vocab":
            for i in range(int(case.rng.integers(1, 40))):
                p = proto.pieces.add()
                p.piece, p.score, p.type = f"extra{i}", -50.0, 1
            case.must_fail = True
        else:
            field = case.pick(["unk_id", "bos_id", "eos_id", "pad_id"])
            setattr(proto.trainer_spec, field, int(case.pick([-1, 0, 5, 10**6, -5])))
        open(path, "wb").write(proto.SerializeToString())


# --- GGUF -------------------------------------------------------------------------------------

HPARAM_KEYS = {"gemma3.block_count": "num_layers", "gemma3.embedding_length": "d_model",
               "gemma3.feed_forward_length": "ffn_dim",
               "gemma3.attention.head_count": "num_heads",
               "gemma3.attention.head_count_kv": "num_kv_heads",
               "gemma3.attention.key_length": "head_dim",
               "gemma3.attention.value_length": "value_length",
               "gemma3.context_length": "max_position",
               "gemma3.attention.sliding_window": "sliding_window",
               "gemma3.rope.freq_base": "rope_base_global",
               "gemma3.attention.layer_norm_rms_epsilon": "rms_eps",
               "gemma3.final_logit_softcapping": "final_softcap",
               "gemma3.attn_logit_softcapping": "attn_softcap",
               "gemma3.rope.scaling.type": "rope", "gemma3.rope.scaling.factor": "rope",
               "gemma3.vocab_size": "vocab_size",
               "tokenizer.ggml.bos_token_id": "bos_id", "tokenizer.ggml.eos_token_id": "eos_id",
               "tokenizer.ggml.padding_token_id": "pad_id",
               "tokenizer.ggml.unknown_token_id": "unknown_token_id",
               "tokenizer.ggml.tokens": "tokens", "tokenizer.ggml.scores": "scores",
               "tokenizer.ggml.token_type": "token_type", "tokenizer.ggml.model": "model",
               "tokenizer.ggml.add_space_prefix": "add_space_prefix",
               "general.architecture": "architecture", "general.alignment": "alignment"}
GGUF_VALUES = [("add_uint32", 0), ("add_uint32", 1), ("add_uint32", 2**32 - 1),
               ("add_uint64", 2**63), ("add_uint64", 2**64 - 1), ("add_int32", -1),
               ("add_int32", -(2**31)), ("add_float32", -1.0), ("add_float32", float("nan")),
               ("add_float32", float("inf")), ("add_float32", 0.0), ("add_float32", 3e38),
               ("add_float64", 1e308), ("add_string", ""), ("add_string", "gemma3"),
               ("add_string", "linear"), ("add_string", "yarn"), ("add_bool", True),
               ("add_array", []), ("add_array", [1, 2, 3]), ("add_array", ["a", "b"]),
               ("add_array", [0.5] * 10), ("add_uint8", 255), ("add_int8", -128)]


def gguf_walk(data):
    """Positions in a GGUF header: [(key, key_pos, type_pos, value_pos)], [(name, info_pos,
    dims_pos, n_dims, type_pos, offset_pos)], for the structured mutations."""
    pos = 24
    n_tensors, n_kv = struct.unpack_from("<QQ", data, 8)
    kvs = []
    sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}

    def skip(vtype, pos):
        if vtype in sizes:
            return pos + sizes[vtype]
        if vtype == 8:
            return pos + 8 + struct.unpack_from("<Q", data, pos)[0]
        item, count = struct.unpack_from("<IQ", data, pos)
        pos += 12
        for _ in range(count):
            pos = skip(item, pos)
        return pos
    for _ in range(n_kv):
        n = struct.unpack_from("<Q", data, pos)[0]
        key = data[pos + 8:pos + 8 + n].decode()
        type_pos = pos + 8 + n
        vtype = struct.unpack_from("<I", data, type_pos)[0]
        kvs.append((key, pos, type_pos, type_pos + 4))
        pos = skip(vtype, type_pos + 4)
    infos = []
    for _ in range(n_tensors):
        n = struct.unpack_from("<Q", data, pos)[0]
        name = data[pos + 8:pos + 8 + n].decode()
        dims_pos = pos + 8 + n + 4
        n_dims = struct.unpack_from("<I", data, pos + 8 + n)[0]
        type_pos = dims_pos + 8 * n_dims
        infos.append((name, pos, dims_pos, n_dims, type_pos, type_pos + 4))
        pos = type_pos + 12
    return kvs, infos, pos


def gguf_case(case, t, workdir):
    from helpers.tiny_artefacts import write_tiny_gguf
    path = os.path.join(workdir, "model.gguf")
    out = os.path.join(workdir, "out")
    case.files = [path, out]  # out: the converted folder, named by errors found at load
    what = case.pick(["truncate", "truncate", "header_bytes", "struct", "struct", "struct",
                      "metadata", "metadata", "metadata", "drop_key", "data", "special"])
    case.mutation = f"gguf.{what}"
    if what in ("metadata", "drop_key"):
        extra, skip = {}, ()
        key = case.pick(list(HPARAM_KEYS))
        if what == "metadata":
            method, value = case.pick(GGUF_VALUES)
            if key == "general.architecture":
                key = "gemma3.embedding_length"  # the writer sets the architecture itself
            extra[key] = (method, value)
            case.mutation += f".{key}={method}:{str(value)[:12]}"
        else:
            skip = (key,)
            case.mutation += f".{key}"
        case.names = [key, HPARAM_KEYS[key], *FITS]
        try:
            write_tiny_gguf(path, extra=extra, skip_keys=skip)
        except Exception:  # gguf's writer refuses the value itself: draw a truncation instead
            shutil.copy(t.gguf, path)
            truncate(case, path)
            case.names, case.must_fail = [], True
    else:
        shutil.copy(t.gguf, path)
        data = bytearray(open(path, "rb").read())
        kvs, infos, header_end = gguf_walk(bytes(data))
        if what == "truncate":
            start = 0 if case.rng.random() < 0.5 else header_end
            truncate(case, path, start)
            case.must_fail = True
        elif what == "header_bytes":
            flip_bytes(case, path, 0, header_end)
        elif what == "data":
            damage_gguf_data(case, path, data, infos)
        elif what == "special":
            kind = case.pick(["empty", "dir", "fifo", "missing", "not-gguf", "magic-only"])
            case.mutation += f".{kind}"
            os.remove(path)
            if kind == "empty":
                open(path, "wb").close()
            elif kind == "dir":
                os.mkdir(path)
            elif kind == "fifo":
                os.mkfifo(path)
            elif kind == "not-gguf":
                open(path, "wb").write(b"PK\x03\x04" + bytes(100))
            elif kind == "magic-only":
                open(path, "wb").write(b"GGUF")
            case.must_fail = True
        else:
            struct_edit(case, path, data, kvs, infos)

    def check():
        import minigemma
        folder = minigemma.convert(path, out, progress=False)
        return use_model(folder)
    return check


def struct_edit(case, path, data, kvs, infos):
    edit = case.pick(["kv_type", "str_len", "arr_len", "key_byte", "dup_key", "dims", "n_dims",
                      "tensor_type", "offset", "offset_shift", "counts", "magic", "version"])
    case.mutation += f".{edit}"
    case.must_fail = edit not in ("key_byte",)
    key, key_pos, type_pos, value_pos = case.pick(kvs)
    name, info_pos, dims_pos, n_dims, ttype_pos, offset_pos = case.pick(infos)
    if edit == "kv_type":
        struct.pack_into("<I", data, type_pos, int(case.pick([13, 99, 2**31, 2**32 - 1])))
        case.names = [key]
    elif edit == "str_len":  # the key's own length, or a string value's
        at = key_pos if case.rng.random() < 0.5 else value_pos
        struct.pack_into("<Q", data, at, int(case.pick([2**63, 2**64 - 1, 10**9, 1000])))
        case.must_fail = False  # 1000 may land inside the file and read on as garbage
        case.names = [key, "metadata key", "tensor"]  # what follows is read misaligned
    elif edit == "arr_len":
        arrays = [k for k in kvs if struct.unpack_from("<I", data, k[2])[0] == 9]
        key, key_pos, type_pos, value_pos = case.pick(arrays)
        struct.pack_into("<Q", data, value_pos + 4, int(case.pick([2**64 - 1, 2**40, 10**7, 3])))
        case.names = [key, "metadata key", "tensor"]
        case.must_fail = False  # a shorter array leaves bytes that may parse as something
    elif edit == "key_byte":
        n = struct.unpack_from("<Q", data, key_pos)[0]
        data[key_pos + 8 + int(case.rng.integers(n))] = int(case.pick([0xFF, 0xC0, 0x80, 0x00]))
    elif edit == "dup_key":
        same = [k for k in kvs if k[0] != key and len(k[0]) == len(key)]
        if same:
            other = case.pick(same)
            n = len(key)
            data[other[1] + 8:other[1] + 8 + n] = key.encode()
            case.names = [key]
        else:
            struct.pack_into("<Q", data, 16, 2**64 - 1)
    elif edit == "dims":
        d = int(case.rng.integers(n_dims))
        struct.pack_into("<Q", data, dims_pos + 8 * d, int(case.pick([0, 1, 2**40, 2**63,
                                                                       2**64 - 1, 3])))
        case.names = [name, semantic(name)]
    elif edit == "n_dims":
        struct.pack_into("<I", data, dims_pos - 4, int(case.pick([0, 5, 2**31, 2**32 - 1])))
        case.names = []
    elif edit == "tensor_type":
        struct.pack_into("<I", data, ttype_pos, int(case.pick([3, 5, 99, 2**31, 10, 13, 0, 1])))
        case.names = [name, semantic(name), *FITS]
        case.must_fail = False  # F32 / F16 of the same data size would be read (and pass)
    elif edit == "offset":
        struct.pack_into("<Q", data, offset_pos, int(case.pick([2**64 - 1, 2**64 - 32, 2**63,
                                                                10**12, 32])))
        case.names = [name]
    elif edit == "offset_shift":
        old = struct.unpack_from("<Q", data, offset_pos)[0]
        shifted = (old + 32 * int(case.pick([1, 2, -1]))) & (2**64 - 1)
        struct.pack_into("<Q", data, offset_pos, shifted)
        case.names = [name]
    elif edit == "counts":
        struct.pack_into("<Q", data, int(case.pick([8, 16])),
                         int(case.pick([0, 2**63, 2**64 - 1, 10**6])))
        case.must_fail = False  # a kv count of 0 leaves tensor infos that may parse
    elif edit == "magic":
        data[0:4] = case.pick([b"GGUX", b"FUGG", b"\0\0\0\0"])
    elif edit == "version":
        struct.pack_into("<I", data, 4, int(case.pick([0, 1, 4, 2**24, 2**32 - 1])))
    open(path, "wb").write(bytes(data))


def damage_gguf_data(case, path, data, infos):
    import gguf
    reader = gguf.GGUFReader(path)
    tensor = case.pick(list(reader.tensors))
    ours = semantic(tensor.name)
    kind = case.pick(["nan", "inf-scale", "random"])
    case.mutation += f".{kind}.{tensor.name}"
    at = tensor.data_offset
    if tensor.tensor_type.name == "F32":
        value = struct.pack("<f", float("nan")) if kind != "random" else \
            bytes(case.rng.integers(0, 256, 4).astype(np.uint8))
        at += 4 * int(case.rng.integers(tensor.n_elements))
        data[at:at + 4] = value
    else:  # q8_0: the fp16 scale of a block, then 32 int8
        block = int(case.rng.integers(tensor.n_bytes // 34))
        at += 34 * block
        value = struct.pack("<H", case.pick([0x7C00, 0xFC00, 0x7E00])) if kind != "random" \
            else bytes(case.rng.integers(0, 256, 2).astype(np.uint8))
        data[at:at + 2] = value
    if kind != "random":
        case.must_fail = True
        case.names = [ours]
    open(path, "wb").write(bytes(data))


def semantic(gguf_name):
    from minigemma.formats.gguf.reader import semantic_name
    return semantic_name(gguf_name)


# --- HF folders ---------------------------------------------------------------------------------

HF_KEYS = {"vocab_size": "vocab_size", "hidden_size": "d_model", "intermediate_size": "ffn_dim",
           "num_hidden_layers": "num_layers", "num_attention_heads": "num_heads",
           "num_key_value_heads": "num_kv_heads", "head_dim": "head_dim",
           "sliding_window": "sliding_window", "layer_types": "layer_types",
           "query_pre_attn_scalar": "query_pre_attn_scalar",
           "max_position_embeddings": "max_position", "rms_norm_eps": "rms_eps",
           "hidden_activation": "hidden_activation", "bos_token_id": "bos",
           "eos_token_id": "eos", "pad_token_id": "pad", "tie_word_embeddings": "tie",
           "rope_parameters": "rope", "rope_scaling": "rope", "rope_theta": "rope",
           "rope_local_base_freq": "rope", "model_type": "model_type",
           "attn_logit_softcapping": "softcap", "final_logit_softcapping": "softcap",
           "attention_bias": "attention_bias", "sliding_window_pattern": "sliding_window",
           "use_bidirectional_attention": "bidirectional", "text_config": "text_config"}
ROPE_VALUES = [{"full_attention": {"rope_type": "yarn", "factor": 4.0}},
               {"full_attention": {"rope_type": "dynamic", "factor": 2.0}},
               {"full_attention": {"rope_type": "linear"}},
               {"full_attention": {"rope_type": "linear", "factor": -2.0}},
               {"full_attention": {"rope_type": "linear", "factor": "2"}},
               {"full_attention": [], "sliding_attention": 5},
               {"full_attention": {"rope_type": "yarn", "factor": 4.0, "beta_fast": -1.0,
                                   "original_max_position_embeddings": 16}},
               {"rope_type": "linear", "factor": 2.0}, {"full_attention": {"rope_theta": 0}}]


def hf_case(case, t, workdir):
    folder = os.path.join(workdir, "hf")
    shutil.copytree(t.hf, folder)
    out = os.path.join(workdir, "out")
    config_path = os.path.join(folder, "config.json")
    weights = os.path.join(folder, "model.safetensors")
    case.files = [folder, out]
    what = case.pick(["config_value", "config_value", "config_value", "config_bytes",
                      "config_special", "weights_truncate", "weights_header", "weights_data",
                      "weights_special", "tensors", "index", "tokenizer_file"])
    case.mutation = f"hf.{what}"
    config = json.loads(open(config_path).read())
    if what == "config_value":
        key = case.pick(list(HF_KEYS))
        value = case.pick(ROPE_VALUES) if key == "rope_parameters" and case.rng.random() < 0.6 \
            else bad_value(case)
        config[key] = value
        case.names = [key, HF_KEYS[key], *FITS]
        case.mutation += f".{key}={str(value)[:20]}"
        write_json(config_path, config)
    elif what == "config_bytes":
        flip_bytes(case, config_path)
    elif what == "config_special":
        open(config_path, "wb").write(case.pick(SPECIAL_JSON))
        case.must_fail = True
    elif what.startswith("weights"):
        damage_safetensors(case, weights, what)
    elif what == "tensors":
        from safetensors.numpy import load_file, save_file
        tensors = load_file(weights)
        name = case.pick(sorted(tensors))
        edit = case.pick(["drop", "add", "int", "float16", "bfloat16", "reshape", "float64",
                          "head"])
        case.mutation += f".{edit}.{name}"
        case.must_fail = edit in ("drop", "add", "int", "reshape", "float64")
        if edit == "drop":
            del tensors[name]
        elif edit == "add":
            tensors["model.layers.9.extra.weight"] = np.ones(3, np.float32)
        elif edit == "int":
            tensors[name] = tensors[name].astype(np.int32)
            case.names = [name]
        elif edit == "float16":
            tensors[name] = tensors[name].astype(np.float16)
        elif edit == "bfloat16":
            import ml_dtypes
            tensors[name] = tensors[name].astype(ml_dtypes.bfloat16)
        elif edit == "reshape":
            tensors[name] = tensors[name].reshape(-1)[:-1] if tensors[name].size > 1 else \
                np.ones((2, 2), np.float32)
        elif edit == "float64":
            tensors[name] = tensors[name].astype(np.float64)
            case.names = [name]
        elif edit == "head":
            tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"] * \
                case.pick([1.0, 1.0001])
            case.must_fail = tensors["lm_head.weight"][0, 0] != tensors[
                "model.embed_tokens.weight"][0, 0]
        save_file(tensors, weights)
    elif what == "index":
        shard_hf(case, folder)
    elif what == "tokenizer_file":
        damage_tokenizer(case, os.path.join(folder, "tokenizer.model"))
        case.files = [os.path.join(folder, "tokenizer.model"), folder]

    def check():
        import minigemma
        return use_model(minigemma.convert(folder, out, progress=False))
    return check


def shard_hf(case, folder):
    from safetensors.numpy import load_file, save_file
    path = os.path.join(folder, "model.safetensors")
    tensors = load_file(path)
    os.remove(path)
    names = sorted(tensors)
    shards = {"a.safetensors": names[::2], "b.safetensors": names[1::2]}
    for shard, part in shards.items():
        save_file({n: tensors[n] for n in part}, os.path.join(folder, shard))
    weight_map = {n: s for s, part in shards.items() for n in part}
    edit = case.pick(["fine", "missing-shard", "traversal", "wrong-shard", "extra-name", "types",
                      "no-map", "absolute"])
    case.mutation += f".{edit}"
    case.must_fail = edit != "fine"
    name = case.pick(names)
    if edit == "missing-shard":
        os.remove(os.path.join(folder, "b.safetensors"))
    elif edit == "traversal":
        weight_map[name] = "../" + weight_map[name]
    elif edit == "wrong-shard":
        weight_map[name] = "b.safetensors" if weight_map[name] == "a.safetensors" else \
            "a.safetensors"
    elif edit == "extra-name":
        weight_map["ghost.weight"] = "a.safetensors"
    elif edit == "types":
        weight_map[name] = 5
    elif edit == "absolute":
        weight_map[name] = os.path.join(folder, weight_map[name])
    index = {"weight_map": weight_map} if edit != "no-map" else {"metadata": {}}
    write_json(os.path.join(folder, "model.safetensors.index.json"), index)


# --- tokenizer files ----------------------------------------------------------------------------

def tokenizer_case(case, t, workdir):
    path = os.path.join(workdir, "tokenizer.model")
    shutil.copy(os.path.join(t.native, "tokenizer.model"), path)
    case.mutation = "tokenizer"
    damage_tokenizer(case, path)
    case.files = [path]
    if case.mutation.endswith(("big-vocab", "proto-edit", "missing")):
        case.must_fail = case.mutation.endswith("missing")

    def check():
        from minigemma.text.tokenizer import Tokenizer
        tok = Tokenizer.from_file(path)
        ids = tok.encode("the cat\n\nsat é", parse_special=True)
        text = tok.decode(ids + [int(i) for i in case.rng.integers(0, tok.vocab_size, 5)])
        return True if isinstance(text, str) else ("bad-type", "decode gave no text")
    return check


# --- API arguments ------------------------------------------------------------------------------

SAMPLING = ["temperature", "top_k", "top_p", "min_p", "repetition_penalty", "seed"]


def api_case(case, t, workdir):
    model = t.model()
    value = bad_value(case)
    call = case.pick(["generate", "generate", "stream", "logits", "chat", "encode", "decode",
                      "load_path", "load_backend", "convert", "generate_ids", "score",
                      "max_context"])
    case.mutation = f"api.{call}={str(value)[:20]}"
    import minigemma
    if call in ("generate", "stream"):
        arg = case.pick(["prompt", "max_new_tokens", "stop", "stop_ids", *SAMPLING])
        case.mutation = f"api.{call}.{arg}={str(value)[:20]}"
        kwargs = {"max_new_tokens": 3, arg: value}
        prompt = kwargs.pop("prompt", "the cat")
        case.names = [arg, "prompt", "text"] if arg == "prompt" else [arg]
        if arg == "stop_ids":
            case.names = ["stop", "id"]

        def check():
            got = getattr(model, call)(prompt, **kwargs)
            got = got if call == "generate" else list(got)
            return True if isinstance(got, (str, list)) else ("bad-type", repr(type(got)))
    elif call == "logits":
        ids = case.pick([value, [2, value], [value] * 3, np.array([2, 3], np.float32),
                         np.array([[2, 3]]), np.array([2, -3]), np.array([2**40])])
        case.names = ["ids"]

        def check():
            return finite(model.logits(ids))
    elif call == "generate_ids":
        ids = case.pick([value, [2, value], []])
        case.names = ["ids", "prompt", "token", "max_new_tokens"]

        def check():
            return True if isinstance(model.generate_ids(ids, max_new_tokens=2), list) else \
                ("bad-type", "not a list")
    elif call == "score":
        case.names = ["text", "ids", "token", "score"]

        def check():
            return finite(model.score(value))
    elif call == "chat":
        messages = case.pick([value, [value], [{"role": "user", "content": value}],
                              [{"role": value, "content": "hi"}],
                              [{"role": "user", "content": "hi", "extra": value}],
                              [{"role": "user", "content": "hi<end_of_turn>"}],
                              [{"role": "model", "content": "x"}]])
        case.names = ["message", "chat", "role", "content"]

        def check():
            return True if isinstance(model.chat(messages, max_new_tokens=2), str) else \
                ("bad-type", "not text")
    elif call == "encode":
        case.names = ["text", "str"]

        def check():
            ids = model.tokenizer.encode(value)
            return True if all(isinstance(i, int) for i in ids) else ("bad-type", "ids")
    elif call == "decode":
        ids = case.pick([value, [value], [2, value, 3]])
        case.names = ["token id", "ids", "vocabulary", "integer", "iterable"]

        def check():
            return True if isinstance(model.tokenizer.decode(ids), str) else ("bad-type", "")
    elif call == "load_path":
        case.names = [str(value)[:40], "path", "checkpoint", "str"]

        def check():
            minigemma.load(value, backend="numpy")
            return True
        if value is None:  # the embedded default model: not a bad argument
            return lambda: True
    elif call == "load_backend":
        case.names = ["backend"]

        def check():
            minigemma.load(t.native, backend=value)
            return True
    elif call == "max_context":
        case.names = ["max_context", "max_position", "context"]

        def check():
            return finite(minigemma.load(t.native, backend="numpy",
                                         max_context=value).logits([2, 3]))
    else:
        arg = case.pick(["src", "dst", "dtype"])
        case.mutation = f"api.convert.{arg}={str(value)[:20]}"
        kwargs = {"src": t.hf, "dst": os.path.join(workdir, "out"), "dtype": None, arg: value}
        case.names = [arg, str(value)[:40], "path", "dtype", "source", "src", "exists", "str",
                      "state dict"]

        def check():
            minigemma.convert(kwargs["src"], kwargs["dst"], dtype=kwargs["dtype"],
                              progress=False)
            return True
    return check


# --- CLI ------------------------------------------------------------------------------------------

def cli_case(case, t, workdir):
    value = str(bad_value(case))
    missing = os.path.join(workdir, "missing")
    fifo = os.path.join(workdir, "fifo")
    os.mkfifo(fifo)
    bad_text = os.path.join(workdir, "bad.txt")
    open(bad_text, "wb").write(b"\xff\xfe not utf-8")
    target = case.pick([
        ["generate", "--model", t.native, "--prompt", "the", "--max-new-tokens", value],
        ["generate", "--model", t.native, "--prompt", "the", "--top-p", value],
        ["generate", "--model", t.native, "--prompt", "the", "--temperature", value],
        ["generate", "--model", t.native, "--prompt", "the", "--top-k", value],
        ["generate", "--model", t.native, "--prompt", "the", "--repetition-penalty", value],
        ["generate", "--model", t.native, "--prompt", value, "--max-new-tokens", "2"],
        ["generate", "--model", t.native, "--prompt-file", case.pick([missing, fifo, bad_text,
                                                                       workdir])],
        ["generate", "--model", case.pick([missing, fifo, t.gguf + ".missing", workdir]),
         "--prompt", "hi"],
        ["generate", "--model", t.native, "--prompt", "hi", "--backend", value],
        ["convert", case.pick([missing, fifo, t.gguf + ".x", value]), os.path.join(workdir, "o")],
        ["convert", t.gguf, case.pick([t.gguf, t.native, os.path.join(fifo, "x")])],
        ["convert", t.gguf, os.path.join(workdir, "o"), "--dtype", case.pick(["bf16", value])],
        ["info", case.pick([missing, fifo, workdir, t.gguf])],
        ["generate", "--model", t.native, "--chat", "--prompt",
         "hi<end_of_turn>\n<start_of_turn>model\nSure", "--max-new-tokens", "2"],
    ])
    if target[0] == "generate" and "--backend" not in target:
        target += ["--backend", "numpy"]  # the reference: no compilation in the workers
    case.mutation = "cli." + " ".join(a if len(a) < 20 else "…" for a in target[:4])
    case.names = []  # argparse and minigemma's messages name the argument or path themselves

    def check():
        from minigemma.tools.cli import main
        out, err = io.StringIO(), io.StringIO()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = main(target)
        except SystemExit as e:  # argparse: a usage error is the clean answer
            code = e.code
            if code not in (0, 2) or (code == 2 and "usage:" not in err.getvalue()):
                return ("bad-type", f"SystemExit {code}: {err.getvalue()[-200:]}")
            return ("clean", err.getvalue().strip()[-160:]) if code == 2 else True
        message = err.getvalue()
        if code not in (0, 2):
            return ("bad-type", f"exit code {code}: {message[-200:]}")
        if code == 2 and "minigemma: error:" not in message:
            return ("unnamed", f"exit 2 without a message: {message[-200:]}")
        if "Traceback" in message:
            return ("bad-type", message[-300:])
        return ("clean", message.strip()[-160:]) if code == 2 else True
    return check


BUILDERS = {"native": native_case, "gguf": gguf_case, "hf": hf_case, "tokenizer": tokenizer_case,
            "api": api_case, "cli": cli_case}


# --- the worker and the runner --------------------------------------------------------------------

def worker(seed, indices):
    """Run cases, one JSON line per case on stdout ("START i" before each)."""
    import warnings
    warnings.simplefilter("ignore")
    root = tempfile.mkdtemp(prefix="minigemma-fuzz-")
    try:
        templates = Templates(os.path.join(root, "templates"))
        print("READY", flush=True)
        for index in indices:
            print(f"START {index}", flush=True)
            workdir = os.path.join(root, f"case-{index}")
            os.makedirs(workdir)
            os.chdir(workdir)  # relative paths a case draws land in its own folder
            outcome = run_case(seed, index, templates, workdir)
            os.chdir(root)
            shutil.rmtree(workdir, ignore_errors=True)
            print("RESULT " + json.dumps(asdict(outcome)), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _limit_memory():
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def _start_worker(seed, indices):
    tests = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([tests] + [p for p in os.environ.get(
                   "PYTHONPATH", "").split(os.pathsep) if p]))
    code = ("import sys; from helpers.fuzz_campaign import worker; "
            "worker(int(sys.argv[1]), [int(i) for i in sys.argv[2].split(',')])")
    return subprocess.Popen([sys.executable, "-c", code, str(seed), ",".join(map(str, indices))],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
                            preexec_fn=_limit_memory, start_new_session=True)


class _Lines:
    """The lines a worker writes, read from its pipe's file descriptor with a deadline (a
    buffered reader would hold lines that select() no longer sees)."""

    def __init__(self, proc):
        self.fd, self.buffer = proc.stdout.fileno(), b""

    def next(self, deadline):
        """The next line; "" when the worker has closed its pipe (it died), None when the
        deadline passed (it hangs)."""
        import select
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                return None
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:
                return ""
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode("utf-8", "replace")


def _kill(proc):
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def run_batch(seed, indices, case_seconds=CASE_SECONDS):
    """Outcomes of `indices`, in one worker while it lives; a hang or a crash is recorded for
    its case and a new worker takes the rest."""
    outcomes, todo = [], list(indices)
    while todo:
        proc = _start_worker(seed, todo)
        lines = _Lines(proc)
        line = lines.next(time.monotonic() + 120)  # imports and templates
        if not line or not line.startswith("READY"):
            _kill(proc)
            outcomes += [Outcome(i, Case(seed, i).kind, "", "crash", "the worker did not start")
                         for i in todo]
            return outcomes
        current = None
        while True:
            line = lines.next(time.monotonic() + case_seconds)
            if not line:
                hang = line is None
                break
            if line.startswith("START"):
                current = int(line.split()[1])
            elif line.startswith("RESULT"):
                outcome = Outcome(**json.loads(line[len("RESULT "):]))
                outcomes.append(outcome)
                todo.remove(outcome.index)
                current = None
                if not todo:
                    break
        if not todo:
            _kill(proc)
            break
        _kill(proc)
        if current is None:  # died between cases
            current = todo[0]
        detail = (f"no answer in {case_seconds} s" if hang else
                  f"the worker died (exit {proc.returncode})")
        outcomes.append(Outcome(current, Case(seed, current).kind, "",
                                "hang" if hang else "crash", detail))
        todo.remove(current)
    return outcomes


def run_campaign(seed, indices, jobs=2, batch=60, case_seconds=CASE_SECONDS, progress=None):
    """Outcomes of every case in `indices`, `jobs` workers at a time."""
    from concurrent.futures import ThreadPoolExecutor
    batches = [indices[i:i + batch] for i in range(0, len(indices), batch)]
    outcomes = []
    with ThreadPoolExecutor(jobs) as pool:
        for done in pool.map(lambda b: run_batch(seed, b, case_seconds), batches):
            outcomes += done
            if progress:
                progress(len(outcomes), len(indices))
    return sorted(outcomes, key=lambda o: o.index)


def summary(outcomes):
    """{"cases": n, "by_kind": {kind: {status: n}}, "by_status": {status: n}}."""
    by_kind, by_status = {}, {}
    for o in outcomes:
        by_kind.setdefault(o.kind, {}).setdefault(o.status, 0)
        by_kind[o.kind][o.status] += 1
        by_status[o.status] = by_status.get(o.status, 0) + 1
    return {"cases": len(outcomes), "by_status": dict(sorted(by_status.items())),
            "by_kind": {k: dict(sorted(v.items())) for k, v in sorted(by_kind.items())}}
