"""Read Gemma GGUF files (llama.cpp's format): hyperparameters and tensors under minigemma's
semantic names (docs/formats.md#gguf).

    read_gguf_hparams(source)  -> a dict of `minigemma.models.config.GemmaConfig` fields
    iter_gguf_tensors(source)  -> (semantic name, value) in file order, value a float32 array
                                  (F32/F16/BF16 tensors) or a QuantizedWeight (block kinds q8_0,
                                  q5_0, q4_0, q4_k, q6_k; the blocks kept as they are)

Both accept a path or an already opened `gguf.GGUFReader` (opening one parses the
262144-entry vocabulary, which takes seconds); `open_gguf` opens one, and `gguf_value` reads a
metadata key, for every GGUF reader of the package (the vocabulary's included).

Shapes. GGUF lists a tensor's dims fastest-first, so `blk.N.attn_q` [640, 1024] is the
row-major matrix [1024, 640] = HF `q_proj` [out, in]: the logical shape is the GGUF dims
reversed, and a quantized matrix's bytes are already [O, row_bytes].

Norm gains. Gemma's RMSNorm computes x / rms(x) * (1 + w); minigemma stores the full gain
g = 1 + w. llama.cpp's converter (`convert_hf_to_gguf.py`, Gemma/Gemma2/Gemma3
`modify_tensors`: `if name.endswith("norm.weight"): data_torch = data_torch + 1`) stores 1 + w
for every HF tensor ending in `norm.weight`, and llama.cpp multiplies by the stored weight
directly. So GGUF norms are taken exactly as stored: all seven kinds, `attn_norm`,
`post_attention_norm`, `ffn_norm`, `post_ffw_norm`, `attn_q_norm`, `attn_k_norm` and
`output_norm`, the per-head q/k norms included (docs/numerics.md#gguf-norms).

How this was verified (Gemma 3 270M Q4_K_M, transformers 5.24, gguf 0.19): HF transformers
loaded the same GGUF (`AutoModelForCausalLM.from_pretrained(dir, gguf_file=...,
dtype=torch.float32)`). Its GGUF loader (`modeling_gguf_pytorch_utils.py`,
`Gemma2TensorProcessor`, used for `gemma2` and `gemma3`) subtracts 1 from every tensor whose
GGUF name contains `norm.weight`. Compared tensor by tensor with the GGUF: every norm of all
seven kinds (incl. `attn_q_norm` / `attn_k_norm`) satisfied hf == gguf - 1 bitwise, and every
other tensor (`token_embd` and all projections) hf == dequant(gguf) bitwise. Functionally,
HF's `Gemma3RMSNorm` (x / rms * (1 + w_hf)) applied to random inputs equals x / rms * g_gguf
to 1e-7 relative, for the final norm and a q_norm. The stored values look like full gains too
(`output_norm` mean 26.3, `attn_norm` of block 0 in [7.4, 62.5], q/k norms mean ~1.97). Note
that HF's loader does not subtract 1 for the `gemma` (Gemma 1) architecture, although
llama.cpp's Gemma 1 converter adds it as well.
"""
import re
import warnings

import numpy as np

from minigemma.formats.files import regular_file
from minigemma.formats.gguf.blocks import BLOCK_FORMATS, QuantizedWeight
from minigemma.formats.gguf.layout import check_layout
from minigemma.models.config import (
    FAMILY_DEFAULTS,
    MAX_LAYERS,
    GemmaConfig,
    RopeScaling,
    default_layer_types,
    field_defaults,
)

# GGUF tensor name (without ".weight"; "{i}" = block index) -> minigemma semantic name.
GGUF_TO_SEMANTIC = {
    "token_embd": "embedding",  # [V, D]; the output projection is tied to it
    "output_norm": "final_norm",  # [D]
    "blk.{i}.attn_norm": "layers.{i}.pre_attn_norm",  # [D]
    "blk.{i}.attn_q": "layers.{i}.q_proj",  # [N*H, D]
    "blk.{i}.attn_k": "layers.{i}.k_proj",  # [K*H, D]
    "blk.{i}.attn_v": "layers.{i}.v_proj",  # [K*H, D]
    "blk.{i}.attn_output": "layers.{i}.o_proj",  # [D, N*H]
    "blk.{i}.attn_q_norm": "layers.{i}.q_norm",  # [H]      (Gemma 3)
    "blk.{i}.attn_k_norm": "layers.{i}.k_norm",  # [H]      (Gemma 3)
    "blk.{i}.post_attention_norm": "layers.{i}.post_attn_norm",  # [D] (Gemma 2/3)
    "blk.{i}.ffn_norm": "layers.{i}.pre_mlp_norm",  # [D]
    "blk.{i}.post_ffw_norm": "layers.{i}.post_mlp_norm",  # [D]   (Gemma 2/3)
    "blk.{i}.ffn_gate": "layers.{i}.gate_proj",  # [F, D]
    "blk.{i}.ffn_up": "layers.{i}.up_proj",  # [F, D]
    "blk.{i}.ffn_down": "layers.{i}.down_proj",  # [D, F]
}

FAMILIES = ("gemma", "gemma2", "gemma3")  # GGUF general.architecture values we read
# llama.cpp's RoPE base when a file has no rope.freq_base, whatever the architecture.
LLAMA_CPP_ROPE_BASE = 10_000.0

_GLOBAL_NAMES = {k: v for k, v in GGUF_TO_SEMANTIC.items() if "{i}" not in k}
_BLOCK_NAMES = {
    k.removeprefix("blk.{i}."): v for k, v in GGUF_TO_SEMANTIC.items() if "{i}" in k
}
_BLOCK_RE = re.compile(r"^blk\.(\d{1,9})\.(.+)$")


def open_gguf(source):
    """A `gguf.GGUFReader` for a path, or the reader itself when given one.

    FileNotFoundError when there is no file; ValueError naming the file, and the key or tensor,
    when it is not a sound GGUF file (`minigemma.formats.gguf.layout.check_layout` runs first).
    """
    import gguf

    if isinstance(source, gguf.GGUFReader):
        return source
    path = regular_file(source, "GGUF file")
    check_layout(path)
    try:
        reader = gguf.GGUFReader(path, "r")
    except Exception as err:  # the layout is sound, so this is a case check_layout misses
        raise ValueError(f"{path}: cannot read GGUF file ({type(err).__name__}: {err})") from None
    reader.minigemma_path = path  # for messages
    return reader


def source_name(reader):
    """The file an open reader reads, for messages."""
    return getattr(reader, "minigemma_path", None) or "GGUF file"


_REQUIRED = object()


def gguf_value(reader, key, default=_REQUIRED):
    """The metadata value at `key` as a Python value (str, int, float, bool or list);
    `default` when the file lacks the key, ValueError when there is no default."""
    field = reader.fields.get(key)
    if field is None:
        if default is _REQUIRED:
            raise ValueError(f"{source_name(reader)}: GGUF metadata lacks the required key "
                             f"{key!r}")
        return default
    try:
        return field.contents()
    except (ValueError, IndexError, TypeError) as e:  # a string that is not UTF-8, …
        raise ValueError(f"{source_name(reader)}: GGUF key {key!r} cannot be read ({e})") from None


def _typed(reader, key, value, types, what):
    if isinstance(value, bool) and bool not in types or not isinstance(value, types):
        raise ValueError(f"{source_name(reader)}: GGUF key {key!r} must be {what}, got "
                         f"{value!r}")
    return value


def _get_int(reader, key, default=_REQUIRED):
    value = gguf_value(reader, key, default)
    if isinstance(value, list):  # some keys may be per-layer arrays
        if not value or len(set(value)) != 1:
            raise ValueError(f"{source_name(reader)}: GGUF key {key!r} varies per layer "
                             f"({value[:8]}); not supported")
        value = value[0]
    return value if value is None else _typed(reader, key, value, (int,), "an integer")


def _get_float(reader, key, default=_REQUIRED):
    value = gguf_value(reader, key, default)
    if value is None:
        return None
    _typed(reader, key, value, (int, float), "a number")
    # GGUF stores float32: give the shortest decimal that round-trips through float32
    # (the stored 1e-6 reads back as 9.99999997e-07 otherwise).
    return float(str(np.float32(value)))


def _get_str(reader, key, default=_REQUIRED):
    value = gguf_value(reader, key, default)
    return value if value is None else _typed(reader, key, value, (str,), "a string")


def _architecture(reader):
    arch = _get_str(reader, "general.architecture", None)
    if arch not in FAMILIES:
        raise ValueError(
            f"{source_name(reader)}: unsupported GGUF architecture {arch!r}: minigemma reads "
            f"{', '.join(FAMILIES)}"
        )
    return arch


def read_gguf_hparams(source):
    """minigemma config fields (`minigemma.models.config.GemmaConfig`) from GGUF metadata.

    Keys: family, vocab_size, d_model, num_layers, num_heads, num_kv_heads, head_dim,
    ffn_dim, layer_types, sliding_window, rope_base_global, rope_base_local,
    rope_scaling_global, rope_scaling_local, query_pre_attn_scalar, attn_softcap,
    final_softcap, qk_norm, post_norms, rms_eps, max_position, bos_id, eos_id, pad_id.

    What the file leaves out follows llama.cpp (`llama-model.cpp`, `load_hparams`), which
    agrees with the family defaults of `minigemma.models.config.FAMILY_DEFAULTS`:

    * the layer pattern is `default_layer_types`: Gemma 1 all global, Gemma 2 even layers
      local, Gemma 3 layer i global iff (i + 1) % 6 == 0, all global when the file has no
      sliding window (0 means none);
    * Gemma 2: window 4096 and soft-caps 50 / 30 unless the file says otherwise (a cap of 0
      turns it off); one RoPE base for all layers, as in Gemma 1;
    * Gemma 3: local layers use RoPE base 10000 (hard-coded in llama.cpp; a
      `gemma3.rope.freq_base_swa` key is honoured if present); no attention soft-cap (an
      `attn_logit_softcapping` key is ignored with a warning, as llama.cpp reads none); a final
      soft-cap only if `gemma3.final_logit_softcapping` is present; linear RoPE scaling
      (`rope.scaling.type == "linear"`, Gemma 3 4B+) applies to global layers only (llama.cpp
      sets the local layers' scale to 1), to every layer in Gemma 1 / 2; other scaling types
      are refused by name;
    * the global RoPE base is 10000 when the file has none (llama.cpp's rule for every model);
    * query_pre_attn_scalar (the score scale is its -1/2 power): head_dim, except for the 27B
      models (46 blocks for Gemma 2, 62 for Gemma 3) where llama.cpp, following gemma_pytorch,
      uses d_model / num_heads.

    block_count must match the blocks the tensors hold; it is checked before anything is built
    from it. Ranges are checked by GemmaConfig.
    """
    r = open_gguf(source)
    arch = _architecture(r)
    a = arch + "."
    family = FAMILY_DEFAULTS[arch]
    config_defaults = field_defaults(GemmaConfig)

    d_model = _get_int(r, a + "embedding_length")
    num_layers = _get_int(r, a + "block_count")
    if not 1 <= num_layers <= MAX_LAYERS:
        raise ValueError(f"{source_name(r)}: {a}block_count must be in [1, {MAX_LAYERS}], got "
                         f"{num_layers}")
    blocks = {int(m.group(1)) for m in (_BLOCK_RE.match(t.name) for t in r.tensors) if m}
    held = max(blocks) + 1 if blocks else 0
    if r.tensors and num_layers != held:
        raise ValueError(f"{source_name(r)}: {a}block_count is {num_layers} but the tensors "
                         f"hold {held} blocks (blk.0 … blk.{held - 1})")
    num_heads = _get_int(r, a + "attention.head_count")
    if not isinstance(num_heads, int) or num_heads <= 0:
        raise ValueError(f"{source_name(r)}: {a}attention.head_count must be positive, got "
                         f"{num_heads}")
    num_kv_heads = _get_int(r, a + "attention.head_count_kv", num_heads)
    head_dim = _get_int(r, a + "attention.key_length", d_model // num_heads)
    value_dim = _get_int(r, a + "attention.value_length", head_dim)
    if value_dim != head_dim:
        raise ValueError(f"{source_name(r)}: {a}attention.key_length {head_dim} != "
                         f"{a}attention.value_length {value_dim}: not supported")

    rope_base_global = _get_float(r, a + "rope.freq_base", LLAMA_CPP_ROPE_BASE)
    rope_base_local = rope_base_global
    if family["rope_base_local"] is not None:  # Gemma 3: a base of its own for local layers
        rope_base_local = _get_float(r, a + "rope.freq_base_swa", family["rope_base_local"])
    factor = 1.0
    scaling = _get_str(r, a + "rope.scaling.type", None)
    if scaling not in (None, "none"):
        factor = _get_float(r, a + "rope.scaling.factor", 1.0)
        if scaling != "linear" and factor != 1.0:
            raise ValueError(f"{source_name(r)}: RoPE scaling {scaling!r} is not supported "
                             f"(only linear)")
    if gguf_value(r, a + "rope.scale_linear", None) is not None:  # older spelling of the factor
        factor = _get_float(r, a + "rope.scale_linear")
    scaling_global = RopeScaling("linear", factor) if factor != 1.0 else None
    scaling_local = None if arch == "gemma3" else scaling_global

    attn_softcap = _get_float(r, a + "attn_logit_softcapping", family["attn_softcap"])
    if arch == "gemma3" and attn_softcap:
        warnings.warn(f"{source_name(r)}: {a}attn_logit_softcapping={attn_softcap} is ignored: "
                      f"Gemma 3 has no attention soft-cap (llama.cpp and HF read none)",
                      stacklevel=2)
        attn_softcap = None
    final_softcap = _get_float(r, a + "final_logit_softcapping", family["final_softcap"])
    sliding_window = _get_int(r, a + "attention.sliding_window", None) or family["sliding_window"]
    layer_types = default_layer_types(arch, num_layers, windowed=sliding_window is not None)
    if "local" not in layer_types:  # Gemma 1, or no window: a window would mean nothing
        sliding_window = None

    is_27b = (arch, num_layers) in (("gemma2", 46), ("gemma3", 62))
    query_pre_attn_scalar = float(d_model // num_heads if is_27b else head_dim)

    return {
        "family": arch,
        "vocab_size": _vocab_size(r, arch),
        "d_model": d_model,
        "num_layers": num_layers,
        "num_heads": num_heads,
        "num_kv_heads": num_kv_heads,
        "head_dim": head_dim,
        "ffn_dim": _get_int(r, a + "feed_forward_length"),
        "layer_types": layer_types,
        "sliding_window": sliding_window,
        "rope_base_global": rope_base_global,
        "rope_base_local": rope_base_local,
        "rope_scaling_global": scaling_global,
        "rope_scaling_local": scaling_local,
        "query_pre_attn_scalar": query_pre_attn_scalar,
        "attn_softcap": attn_softcap or None,  # 0: no cap
        "final_softcap": final_softcap or None,
        "qk_norm": family["qk_norm"],
        "post_norms": family["post_norms"],
        "rms_eps": _get_float(r, a + "attention.layer_norm_rms_epsilon",
                              config_defaults["rms_eps"]),
        "max_position": _get_int(r, a + "context_length"),
        "bos_id": _get_int(r, "tokenizer.ggml.bos_token_id", config_defaults["bos_id"]),
        "eos_id": _get_int(r, "tokenizer.ggml.eos_token_id", config_defaults["eos_id"]),
        "pad_id": _get_int(r, "tokenizer.ggml.padding_token_id", config_defaults["pad_id"]),
    }


def _vocab_size(r, arch):
    size = _get_int(r, arch + ".vocab_size", None)
    if size is not None:
        return size
    for t in r.tensors:
        if t.name == "token_embd.weight":
            return int(t.shape[-1])  # GGUF dims [D, V]
    tokens = r.fields.get("tokenizer.ggml.tokens")
    if tokens is not None:
        return len(tokens.data)
    raise ValueError(f"{source_name(r)}: cannot tell the vocabulary size: no token_embd tensor "
                     f"and no vocab")


def semantic_name(gguf_name):
    """The minigemma name of a GGUF tensor name (`blk.3.attn_q.weight` -> `layers.3.q_proj`);
    ValueError for a tensor minigemma does not know."""
    base = gguf_name.removesuffix(".weight")
    if base in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[base]
    m = _BLOCK_RE.match(base)
    if m and m.group(2) in _BLOCK_NAMES:
        return _BLOCK_NAMES[m.group(2)].format(i=int(m.group(1)))
    hint = ""
    if base == "output":
        hint = " (an untied output matrix; minigemma ties the output to token_embd)"
    raise ValueError(f"unknown GGUF tensor {gguf_name!r}{hint}")


def _float_value(t, shape, copy):
    kind = t.tensor_type.name
    raw = np.asarray(t.data)
    if kind == "F32":
        value = raw.view(np.float32).reshape(shape)
        return value.copy() if copy else value
    if kind == "F16":
        return raw.view(np.float16).reshape(shape).astype(np.float32)
    if kind == "BF16":
        bits = raw.view(np.uint16).reshape(shape).astype(np.uint32) << 16
        return bits.view(np.float32)
    raise AssertionError(kind)


def iter_gguf_tensors(source, *, copy=True):
    """Yield (semantic name, value) for every tensor of a Gemma GGUF, in file order.

    value is a float32 array in HF orientation ([out, in] matrices, [n] vectors) for
    F32/F16/BF16 tensors, or a QuantizedWeight of logical shape [O, I] with blocks uint8
    [O, row_bytes] for the block kinds of BLOCK_FORMATS. Norm gains are yielded exactly as
    stored (they are already 1 + w; see the module docstring). copy=False yields read-only
    views into the memory-mapped file instead of copies.

    Raises ValueError naming the tensor for an unknown tensor name, a duplicate, or an
    unsupported storage type.
    """
    r = open_gguf(source)
    _architecture(r)
    where = source_name(r)
    seen = set()
    for t in r.tensors:
        try:
            name = semantic_name(t.name)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        if name in seen:
            raise ValueError(f"{where}: GGUF tensor {t.name!r}: {name} appears twice")
        seen.add(name)
        shape = tuple(int(n) for n in reversed(t.shape.tolist()))  # HF / row-major order
        ggml_type = t.tensor_type.name
        kind = ggml_type.lower()
        if ggml_type in ("F32", "F16", "BF16"):
            yield name, _float_value(t, shape, copy)
        elif kind in BLOCK_FORMATS:
            if len(shape) != 2:
                raise ValueError(f"{where}: GGUF tensor {t.name!r}: quantized tensor of shape "
                                 f"{shape}, expected a matrix")
            blocks = np.asarray(t.data).view(np.uint8).reshape(shape[0], -1)
            if copy:
                blocks = blocks.copy()
            yield name, QuantizedWeight(kind, blocks, shape)
        else:
            raise ValueError(
                f"{where}: GGUF tensor {t.name!r} has storage type {ggml_type}, which minigemma "
                f"does not read (supported: F32, F16, BF16, "
                f"{', '.join(k.upper() for k in BLOCK_FORMATS)})"
            )


def gguf_tensor_types(source):
    """{semantic name: storage} with storage "f32" / "f16" / "bf16" or a block kind ("q8_0",
    …), without reading any tensor data."""
    r = open_gguf(source)
    return {semantic_name(t.name): t.tensor_type.name.lower() for t in r.tensors}


if __name__ == "__main__":  # quick inspection: python -m minigemma.formats.gguf.reader FILE
    import sys

    for key, value in read_gguf_hparams(sys.argv[1]).items():
        print(f"{key:24s} {value}")
