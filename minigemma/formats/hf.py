"""Import of HF transformers safetensors folders (GemmaForCausalLM, Gemma2ForCausalLM,
Gemma3ForCausalLM): the only place HF tensor names appear (docs/formats.md#hf-gemma).

The converter is strict: every source tensor must be consumed and every shape must match the
config. Norm gains get their + 1 here, once, in float32 (HF adds it at run time, in float32).
"""
import json
import os

import numpy as np

from minigemma.formats.conversion import ConvertedModel, check_tensor_names
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


def open_hf_folder(src):
    """(config dict, {tensor name: SafetensorsFile}) of an HF folder, single file or sharded."""
    cfg_path = os.path.join(src, "config.json")
    if not os.path.isfile(cfg_path):
        raise FileNotFoundError(f"{src}: no config.json — not an HF model folder")
    with open(cfg_path) as f:
        hf_config = json.load(f)
    index_path = os.path.join(src, "model.safetensors.index.json")
    single = os.path.join(src, "model.safetensors")
    if os.path.isfile(index_path):
        with open(index_path) as f:
            weight_map = json.load(f)["weight_map"]
        files = {shard: SafetensorsFile(os.path.join(src, shard)) for shard in set(weight_map.values())}
        located = {name: files[shard] for name, shard in weight_map.items()}
        for shard, st in files.items():
            for name in st.names():
                if name not in located:
                    raise ValueError(f"{src}: tensor {name!r} in {shard} is not in the index")
    elif os.path.isfile(single):
        st = SafetensorsFile(single)
        located = {name: st for name in st.names()}
    else:
        raise FileNotFoundError(f"{src}: no model.safetensors or model.safetensors.index.json")
    return hf_config, located


def hf_tensors(src, storage="f32"):
    """The ConvertedModel of an HF Gemma folder, matrices stored as `storage`."""
    hf_config, located = open_hf_folder(src)
    config = config_from_hf(hf_config)
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
        array = located[hf].read(hf).astype(np.float32)
        if is_norm(ours):
            return array + np.float32(1.0)  # zero-centred gain -> effective gain 1 + w
        return quantize(array, storage) if quantized else array

    by_ours = {ours: hf for hf, ours in table.items()}
    tensors = [(ours, shape, "f32" if is_norm(ours) else storage,
                lambda hf=by_ours[ours], ours=ours: produce(hf, ours))
               for ours, shape in shapes.items()]
    # √D is rounded to the dtype the embedding is stored in (quantized: dequantized to f32).
    embedding_dtype = {"bf16": "bfloat16"}.get(storage, "float32")
    return ConvertedModel(config, tensors, embedding_dtype, tokenizer_bytes(src),
                          source=f"hf:{os.path.abspath(src)}")


def check_source(src, located, expected_shapes, converter):
    """Strictness: the folder holds exactly the tensors of `expected_shapes` {HF name: shape},
    each with its shape (check_tensor_names), plus at most a head equal to the embedding."""
    found = {name: st.shape(name) for name, st in located.items() if name != TIED_HEAD}
    check_tensor_names(src, found, expected_shapes, converter)
    if TIED_HEAD in located:
        _check_tied(src, located)


def tokenizer_bytes(src):
    """The folder's tokenizer.model, or None."""
    path = os.path.join(src, "tokenizer.model")
    if not os.path.isfile(path):
        return None
    with open(path, "rb") as f:
        return f.read()


def _check_tied(src, located):
    head = located[TIED_HEAD].read(TIED_HEAD)
    embedding = located["model.embed_tokens.weight"].read("model.embed_tokens.weight")
    if head.shape != embedding.shape or not np.array_equal(head, embedding):
        raise ValueError(f"{src}: lm_head.weight differs from the embedding; Gemma models tie "
                         f"them and minigemma does not support an untied head")
