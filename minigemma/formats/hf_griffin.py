"""Import of HF transformers RecurrentGemma folders (`RecurrentGemmaForCausalLM`, model_type
"recurrent_gemma"): the only place HF's RecurrentGemma tensor names appear (docs/formats.md#hf-recurrentgemma).

Strict, like the Gemma converter: every source tensor must be consumed and every shape must
match the config. Layout changes, each in one place:
    conv_1d.weight [L, 1, W] (PyTorch Conv1d, groups=L) -> conv_weight [W, L]
    norm gains w -> 1 + w, in float32 (HF adds the 1 at run time, in float32)
HF's local attention admits W keys per query, so the config says window_includes_extra_key=False.
"""
import os

import numpy as np

from minigemma.formats.conversion import ConvertedModel
from minigemma.formats.hf import check_layer_count, check_source, open_hf_folder, tokenizer_bytes
from minigemma.formats.hf_config import config_from_hf_recurrent_gemma
from minigemma.models.gemma import is_norm
from minigemma.models.griffin import parameter_shapes

# HF name inside `model.layers.{i}.` -> minigemma name inside `layers.{i}.` (recurrent layers
# have the linear_* / conv_1d / rg_lru tensors, attention layers the *_proj ones)
LAYER_NAMES = {
    "temporal_pre_norm.weight": "temporal_norm",
    "temporal_block.linear_y.weight": "y_proj",
    "temporal_block.linear_y.bias": "y_proj_bias",
    "temporal_block.linear_x.weight": "x_proj",
    "temporal_block.linear_x.bias": "x_proj_bias",
    "temporal_block.conv_1d.weight": "conv_weight",
    "temporal_block.conv_1d.bias": "conv_bias",
    "temporal_block.rg_lru.recurrent_param": "rglru_a_param",
    "temporal_block.rg_lru.input_gate_weight": "input_gate_weight",
    "temporal_block.rg_lru.input_gate_bias": "input_gate_bias",
    "temporal_block.rg_lru.recurrent_gate_weight": "recurrence_gate_weight",
    "temporal_block.rg_lru.recurrent_gate_bias": "recurrence_gate_bias",
    "temporal_block.linear_out.weight": "out_proj",
    "temporal_block.linear_out.bias": "out_proj_bias",
    "temporal_block.q_proj.weight": "q_proj",
    "temporal_block.k_proj.weight": "k_proj",
    "temporal_block.v_proj.weight": "v_proj",
    "temporal_block.o_proj.weight": "o_proj",
    "temporal_block.o_proj.bias": "o_proj_bias",
    "channel_pre_norm.weight": "mlp_norm",
    "mlp_block.gate_proj.weight": "gate_proj",
    "mlp_block.gate_proj.bias": "gate_proj_bias",
    "mlp_block.up_proj.weight": "up_proj",
    "mlp_block.up_proj.bias": "up_proj_bias",
    "mlp_block.down_proj.weight": "down_proj",
    "mlp_block.down_proj.bias": "down_proj_bias",
}
GLOBAL_NAMES = {"model.embed_tokens.weight": "embedding", "model.final_norm.weight": "final_norm"}


def name_table(config):
    """{HF tensor name: minigemma name} for every parameter of `config`."""
    wanted = parameter_shapes(config)
    table = dict(GLOBAL_NAMES)
    for i in range(config.num_layers):
        for hf_name, ours in LAYER_NAMES.items():
            if f"layers.{i}.{ours}" in wanted:
                table[f"model.layers.{i}.{hf_name}"] = f"layers.{i}.{ours}"
    return table


def hf_shape(ours, shape):
    """The HF shape of the minigemma tensor `ours` of `shape`."""
    if ours.endswith("conv_weight"):
        width, lru = shape
        return (lru, 1, width)
    return shape


def from_hf(ours, array):
    """An HF tensor, as read, -> minigemma's layout and meaning (float32)."""
    array = array.astype(np.float32)
    if ours.endswith("conv_weight"):
        return np.ascontiguousarray(array[:, 0, :].T)  # [L, 1, W] -> [W, L]
    if is_norm(ours):
        return array + np.float32(1.0)  # zero-centred gain -> effective gain 1 + w
    return array


def storage_of(ours, storage):
    """Matrices take the requested storage; norms, biases and RG-LRU / conv params stay f32."""
    return storage if ours == "embedding" or ours.endswith("_proj") else "f32"


def hf_griffin_tensors(src, storage="f32"):
    """The ConvertedModel of an HF RecurrentGemma folder, matrices stored as `storage`."""
    if storage not in ("f32", "bf16"):
        raise ValueError(f"RecurrentGemma checkpoints convert to f32 or bf16, not {storage!r}")
    src = os.fspath(src)
    hf_config, located = open_hf_folder(src)
    try:
        config = config_from_hf_recurrent_gemma(hf_config)
    except ValueError as e:
        raise ValueError(f"{os.path.join(src, 'config.json')}: {e}") from None
    check_layer_count(src, located, config.num_layers)
    table = name_table(config)
    shapes = parameter_shapes(config)
    check_source(src, located, {hf: hf_shape(ours, shapes[ours]) for hf, ours in table.items()},
                 "the RecurrentGemma converter")

    by_ours = {ours: hf for hf, ours in table.items()}
    tensors = [(ours, shape, storage_of(ours, storage),
                lambda hf=by_ours[ours], ours=ours: from_hf(ours, located[hf].read(hf)))
               for ours, shape in shapes.items()]
    embedding_dtype = {"f32": "float32", "bf16": "bfloat16"}[storage]
    return ConvertedModel(config, tensors, embedding_dtype, tokenizer_bytes(src, config),
                          source=f"hf:{os.path.abspath(src)}")
