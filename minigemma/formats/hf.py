"""Import of HF transformers safetensors folders (GemmaForCausalLM, Gemma2ForCausalLM,
Gemma3ForCausalLM, and the text tower of Gemma3ForConditionalGeneration): the only place HF
tensor names appear (docs/formats.md#hf-gemma).

The converter is strict: every source tensor must be consumed and every shape must match the
config; tensors must be stored as F32, F16 or BF16. Norm gains get their + 1 here, once, in
float32 (HF adds it at run time, in float32).
"""
import os
import re

import numpy as np

from minigemma.formats.conversion import ConvertedModel, check_tensor_names, read_tokenizer_file
from minigemma.formats.files import read_json
from minigemma.formats.gguf.blocks import BLOCK_FORMATS, quantize
from minigemma.formats.hf_config import config_from_hf
from minigemma.formats.safetensors import SafetensorsFile
from minigemma.models.gemma import is_norm, parameter_shapes

# HF name inside `model.layers.{i}.` -> minigemma name inside `layers.{i}.`
LAYER_NAMES = {
    "input_layernorm.weight": "pre_attn_norm",
    "self_attn.q_proj.weight": "q_proj",
    "self_attn.k_proj.weight": "k_proj",
    "self_attn.v_proj.weight": "v_proj",
    "self_attn.o_proj.weight": "o_proj",
    "self_attn.q_norm.weight": "q_norm",
    "self_attn.k_norm.weight": "k_norm",
    # Gemma 1 calls its pre-MLP norm "post_attention_layernorm"; Gemma 2/3 use that name for the
    # norm of the attention output and add "pre_feedforward_layernorm" (docs/numerics.md#norm-names).
    "post_attention_layernorm.weight": {"gemma": "pre_mlp_norm", "gemma2": "post_attn_norm",
                                        "gemma3": "post_attn_norm"},
    "pre_feedforward_layernorm.weight": {"gemma": None, "gemma2": "pre_mlp_norm",
                                         "gemma3": "pre_mlp_norm"},
    "post_feedforward_layernorm.weight": "post_mlp_norm",
    "mlp.gate_proj.weight": "gate_proj",
    "mlp.up_proj.weight": "up_proj",
    "mlp.down_proj.weight": "down_proj",
}
GLOBAL_NAMES = {"model.embed_tokens.weight": "embedding", "model.norm.weight": "final_norm"}
TIED_HEAD = "lm_head.weight"


def name_table(config):
    """{HF tensor name: minigemma name} for every parameter of `config`."""
    table = dict(GLOBAL_NAMES)
    for i in range(config.num_layers):
        for hf_name, ours in LAYER_NAMES.items():
            if isinstance(ours, dict):
                ours = ours[config.family]
            if ours is None:
                continue
            table[f"model.layers.{i}.{hf_name}"] = f"layers.{i}.{ours}"
    wanted = parameter_shapes(config)
    return {hf: ours for hf, ours in table.items() if ours in wanted}


# Gemma3ForConditionalGeneration (multimodal Gemma 3): its text tower's names, as saved by
# transformers 4.50+ and by 5.x's save_pretrained, map onto the names above; the vision tower
# and the projector are not part of the language model and are left out, by name.
TEXT_TOWER_PREFIXES = {"language_model.model.": "model.", "model.language_model.": "model.",
                       "language_model.lm_head.": "lm_head."}
VISION_PREFIXES = ("vision_tower.", "multi_modal_projector.", "model.vision_tower.",
                   "model.multi_modal_projector.")


def open_hf_folder(src):
    """(config dict, {tensor name: SafetensorsFile}) of an HF folder, single file or sharded.
    The names of a multimodal Gemma 3's text tower come back as the text models' names, and
    its vision tensors are left out."""
    src = os.fspath(src)
    cfg_path = os.path.join(src, "config.json")
    if not os.path.lexists(cfg_path):
        raise FileNotFoundError(f"{src}: no config.json — not an HF model folder")
    hf_config = read_json(cfg_path, "config.json of an HF folder")
    index_path = os.path.join(src, "model.safetensors.index.json")
    single = os.path.join(src, "model.safetensors")
    if os.path.lexists(index_path):
        index = read_json(index_path, "safetensors index")
        weight_map = index.get("weight_map")
        if not isinstance(weight_map, dict) or not all(
                isinstance(n, str) and isinstance(f, str) and _plain_file_name(f)
                for n, f in weight_map.items()):
            raise ValueError(f"{index_path}: 'weight_map' must map tensor names to file names "
                             f"in the folder")
        files = {shard: SafetensorsFile(os.path.join(src, shard), "safetensors shard")
                 for shard in sorted(set(weight_map.values()))}
        located = {}
        for shard, st in files.items():
            for name in st.names():
                if weight_map.get(name) != shard:
                    raise ValueError(f"{os.path.join(src, shard)}: tensor {name!r} is not in "
                                     f"the index under this file")
                located[name] = st
        missing = sorted(set(weight_map) - set(located))
        if missing:
            raise ValueError(f"{index_path}: the index lists tensors no shard holds: "
                             f"{missing[:5]}")
    elif os.path.lexists(single):
        st = SafetensorsFile(single, "model.safetensors of an HF folder")
        located = {name: st for name in st.names()}
    else:
        raise FileNotFoundError(f"{src}: no model.safetensors or model.safetensors.index.json")
    return hf_config, _text_tower(located)


def _plain_file_name(name):
    return name not in ("", ".", "..") and "/" not in name and "\\" not in name


def _text_tower(located):
    """Multimodal names -> text-model names; vision tensors dropped (see TEXT_TOWER_PREFIXES)."""
    renamed = {}
    for name, st in located.items():
        if name.startswith(VISION_PREFIXES):
            continue
        ours = next((new + name[len(old):] for old, new in TEXT_TOWER_PREFIXES.items()
                     if name.startswith(old)), name)
        renamed[ours] = _Renamed(st, name) if ours != name else st
    return renamed


class _Renamed:
    """A SafetensorsFile seen under other tensor names (shape and read by the new name)."""

    def __init__(self, st, name):
        self.st, self.name, self.path = st, name, st.path

    def shape(self, _):
        return self.st.shape(self.name)

    def read(self, _, **kw):
        return self.st.read(self.name, **kw)


def hf_tensors(src, storage="f32"):
    """The ConvertedModel of an HF Gemma folder, matrices stored as `storage`."""
    src = os.fspath(src)
    hf_config, located = open_hf_folder(src)
    try:
        config = config_from_hf(hf_config)
    except ValueError as e:
        raise ValueError(f"{os.path.join(src, 'config.json')}: {e}") from None
    check_layer_count(src, located, config.num_layers)
    table = name_table(config)
    shapes = parameter_shapes(config)
    check_source(src, located, {hf: shapes[ours] for hf, ours in table.items()},
                 f"the {config.family} converter")
    quantized = storage in BLOCK_FORMATS
    if quantized:
        block = BLOCK_FORMATS[storage].block_elems
        for ours, shape in shapes.items():
            if not is_norm(ours) and shape[1] % block:
                raise ValueError(f"cannot store {ours} {shape} as {storage}: its {shape[1]} "
                                 f"inputs are not a multiple of the {block}-element block")

    def produce(hf, ours):
        array = located[hf].read(hf)
        if is_norm(ours):
            return array + np.float32(1.0)  # zero-centred gain -> effective gain 1 + w
        return quantize(array, storage) if quantized else array

    by_ours = {ours: hf for hf, ours in table.items()}
    tensors = [(ours, shape, "f32" if is_norm(ours) else storage,
                lambda hf=by_ours[ours], ours=ours: produce(hf, ours))
               for ours, shape in shapes.items()]
    # √D is rounded to the dtype the embedding is stored in (quantized: dequantized to f32).
    embedding_dtype = {"bf16": "bfloat16"}.get(storage, "float32")
    return ConvertedModel(config, tensors, embedding_dtype, tokenizer_bytes(src, config),
                          source=f"hf:{os.path.abspath(src)}")


def check_layer_count(src, located, num_layers):
    """Refuse a config whose layer count the tensors do not have, before anything is built
    from it (a config that says 10⁶ layers would otherwise build a table of 10⁷ names)."""
    indices = {int(m.group(1)) for m in map(_LAYER_RE.match, located) if m}
    found = max(indices) + 1 if indices else 0
    if found != num_layers:
        raise ValueError(f"{src}: config.json says {num_layers} layers, the tensors hold "
                         f"{found} (model.layers.0 … model.layers.{found - 1})")


_LAYER_RE = re.compile(r"^model\.layers\.(\d{1,9})\.")


def check_source(src, located, expected_shapes, converter):
    """Strictness: the folder holds exactly the tensors of `expected_shapes` {HF name: shape},
    each with its shape (check_tensor_names), plus at most a head equal to the embedding."""
    found = {name: st.shape(name) for name, st in located.items() if name != TIED_HEAD}
    check_tensor_names(src, found, expected_shapes, converter)
    if TIED_HEAD in located:
        _check_tied(src, located)


def tokenizer_bytes(src, config):
    """The folder's tokenizer.model (checked: `read_tokenizer_file`), or None."""
    return read_tokenizer_file(os.path.join(src, "tokenizer.model"), config)


def _check_tied(src, located):
    head = located[TIED_HEAD].read(TIED_HEAD)
    embedding = located["model.embed_tokens.weight"].read("model.embed_tokens.weight")
    if head.shape != embedding.shape or not np.array_equal(head, embedding):
        raise ValueError(f"{src}: lm_head.weight differs from the embedding; Gemma models tie "
                         f"them and minigemma does not support an untied head")
