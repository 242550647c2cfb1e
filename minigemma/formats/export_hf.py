"""`minigemma export DIR --to hf OUT`: a converted checkpoint as an HF transformers folder.

For users who outgrow minigemma: transformers loads the folder (`AutoModelForCausalLM`,
`AutoTokenizer`), and from there vLLM, TGI or llama.cpp's `convert_hf_to_gguf.py` take it.

    config.json         transformers 5 keys of GemmaForCausalLM, Gemma2ForCausalLM,
                        Gemma3ForCausalLM or RecurrentGemmaForCausalLM
    model.safetensors   HF tensor names (the inverse of the importers' tables in
                        minigemma.formats.hf and hf_griffin), float32
    tokenizer.model     the SentencePiece model, with tokenizer_config.json and
                        special_tokens_map.json naming Gemma's special tokens

What changes on the way out, each the inverse of the importer: norm gains 1 + w -> w (HF adds
the 1 at run time), quantized blocks are dequantized (float32), RecurrentGemma's conv_weight
[W, L] -> [L, 1, W]. The tied head is not written (tie_word_embeddings). Checkpoints released in
bf16 had their √D rounded to bf16 (docs/numerics.md); in float32 HF rounds it to float32, so for
those the logits agree to that rounding (0.2 % of the embedding scale) rather than to 1e-4.
A RecurrentGemma checkpoint in the official convention (window W + 1 keys) has no HF
equivalent and is refused.
"""
import json
import os
import shutil

import numpy as np

from minigemma.formats import hf, hf_griffin
from minigemma.formats.gguf.blocks import QuantizedWeight
from minigemma.formats.native import (
    TOKENIZER_FILE,
    read_checkpoint,
    staged_folder,
)
from minigemma.formats.safetensors import write_safetensors
from minigemma.models.config import GemmaConfig
from minigemma.models.gemma import is_norm

ARCHITECTURES = {"gemma": ("gemma", "GemmaForCausalLM"),
                 "gemma2": ("gemma2", "Gemma2ForCausalLM"),
                 "gemma3": ("gemma3_text", "Gemma3ForCausalLM")}
LAYER_TYPES = {"local": "sliding_attention", "global": "full_attention"}
SPECIAL_TOKENS = {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>",
                  "unk_token": "<unk>"}


def _rope(base, scaling):
    """An HF rope_parameters entry for one RoPE."""
    if scaling is None:
        return {"rope_type": "default", "rope_theta": float(base)}
    entry = {"rope_type": scaling.kind, "rope_theta": float(base), "factor": scaling.factor}
    if scaling.kind == "yarn":
        entry.update(original_max_position_embeddings=scaling.original_context,
                     beta_fast=scaling.beta_fast, beta_slow=scaling.beta_slow,
                     truncate=scaling.truncate)
        if scaling.attention_factor is not None:
            entry["attention_factor"] = scaling.attention_factor
    return entry


def hf_config(config):
    """The dict of HF's config.json for a GemmaConfig or GriffinConfig."""
    common = dict(vocab_size=config.vocab_size, hidden_size=config.d_model,
                  num_hidden_layers=config.num_layers, num_attention_heads=config.num_heads,
                  num_key_value_heads=config.num_kv_heads, head_dim=config.head_dim,
                  rms_norm_eps=config.rms_eps, max_position_embeddings=config.max_position,
                  bos_token_id=config.bos_id, eos_token_id=config.eos_id,
                  pad_token_id=config.pad_id, tie_word_embeddings=True, dtype="float32",
                  hidden_activation="gelu_pytorch_tanh")
    if not isinstance(config, GemmaConfig):
        if config.window_includes_extra_key:
            raise ValueError("this RecurrentGemma checkpoint follows the official convention "
                             "(a local window of W + 1 keys); HF's RecurrentGemma admits W, so "
                             "an HF export would change its outputs")
        return dict(common, model_type="recurrent_gemma",
                    architectures=["RecurrentGemmaForCausalLM"],
                    intermediate_size=2 * config.ffn_dim,  # HF: twice the per-branch width
                    lru_width=config.lru_width, attention_window_size=config.attention_window,
                    conv1d_width=config.conv_width, logits_soft_cap=config.final_softcap,
                    block_types=list(config.block_pattern),
                    partial_rotary_factor=config.partial_rotary_factor,
                    rope_theta=config.rope_base,
                    rope_parameters={"rope_type": "default", "rope_theta": config.rope_base,
                                     "partial_rotary_factor": config.partial_rotary_factor})
    if config.gelu_approximate != "tanh":
        raise ValueError("HF's Gemma runs the tanh GELU; this checkpoint uses the exact one")
    model_type, architecture = ARCHITECTURES[config.family]
    scalar = config.query_pre_attn_scalar or config.head_dim
    out = dict(common, model_type=model_type, architectures=[architecture],
               intermediate_size=config.ffn_dim,  # HF's config checks want an int when it is one
               query_pre_attn_scalar=int(scalar) if float(scalar).is_integer() else scalar)
    if config.family == "gemma":
        return dict(out, rope_parameters=_rope(config.rope_base_global,
                                               config.rope_scaling_global))
    out.update(layer_types=[LAYER_TYPES[t] for t in config.layer_types],
               sliding_window=config.sliding_window,
               final_logit_softcapping=config.final_softcap,
               attn_logit_softcapping=config.attn_softcap)
    if config.family == "gemma2":
        return dict(out, rope_parameters=_rope(config.rope_base_global,
                                               config.rope_scaling_global))
    return dict(out, rope_parameters={
        "full_attention": _rope(config.rope_base_global, config.rope_scaling_global),
        "sliding_attention": _rope(config.rope_base_local, config.rope_scaling_local)},
        use_bidirectional_attention=False)


def _to_hf(ours, weight, griffin):
    """A minigemma weight (float32 array or QuantizedWeight) -> the HF tensor, float32."""
    array = weight.dequantize() if isinstance(weight, QuantizedWeight) else weight
    array = np.asarray(array, dtype=np.float32)
    if is_norm(ours):
        return array - np.float32(1.0)  # effective gain 1 + w -> HF's zero-centred w
    if griffin and ours.endswith("conv_weight"):
        return np.ascontiguousarray(array.T[:, None, :])  # [W, L] -> [L, 1, W]
    return array


def export_hf(src, dst, overwrite=False):
    """Write the minigemma checkpoint folder `src` as an HF folder at `dst`; returns dst."""
    src = os.fspath(src)
    meta, config, weights = read_checkpoint(src)
    griffin = not isinstance(config, GemmaConfig)
    config_json = hf_config(config)  # refuses what HF cannot express, before writing
    table = (hf_griffin if griffin else hf).name_table(config)  # {HF name: ours}
    weights = dict(weights)  # quantized blocks stay blocks until their tensor is written
    shapes = {name: (w.shape if isinstance(w, QuantizedWeight) else np.shape(w))
              for name, w in weights.items()}
    tensors = []
    for hf_name, ours in table.items():
        shape = hf_griffin.hf_shape(ours, shapes[ours]) if griffin else shapes[ours]
        tensors.append((hf_name, shape, "F32",
                        lambda ours=ours: _to_hf(ours, weights[ours], griffin)))
    with staged_folder(dst, overwrite) as (dst, tmp):
        write_safetensors(os.path.join(tmp, "model.safetensors"), tensors,
                          metadata={"format": "pt"})
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(config_json, f, indent=2)
        with open(os.path.join(tmp, "generation_config.json"), "w") as f:
            json.dump({"bos_token_id": config.bos_id, "eos_token_id": config.eos_id,
                       "pad_token_id": config.pad_id}, f, indent=2)
        tokenizer = os.path.join(src, TOKENIZER_FILE)
        if os.path.isfile(tokenizer):
            shutil.copyfile(tokenizer, os.path.join(tmp, "tokenizer.model"))
            with open(os.path.join(tmp, "tokenizer_config.json"), "w") as f:
                json.dump({"tokenizer_class": "GemmaTokenizer", "add_bos_token": True,
                           "add_eos_token": False, "model_max_length": config.max_position,
                           **SPECIAL_TOKENS}, f, indent=2)
            with open(os.path.join(tmp, "special_tokens_map.json"), "w") as f:
                json.dump(SPECIAL_TOKENS, f, indent=2)
    return dst
