"""Small, complete checkpoints of every kind minigemma reads, for bad-input and fuzz tests.

    toy_tokenizer_bytes()          a SentencePiece model laid out like Gemma's (283 pieces)
    write_tiny_gguf(path, ...)     a whole Gemma 3 GGUF (q8_0 matrices, F32 norms, vocabulary),
                                   written with gguf.GGUFWriter as llama.cpp lays it out
    write_tiny_native(folder, ...) a converted minigemma folder with that tokenizer
    write_tiny_hf(folder, ...)     an HF Gemma 3 folder (config.json, model.safetensors,
                                   tokenizer.model), written with safetensors, not transformers

Everything is random but reproducible from a seed, and small (tens of kB).
"""
import json
import os

import numpy as np

from minigemma.formats.gguf.blocks import quantize_q8_0
from minigemma.formats.gguf.vocabulary import (
    BYTE,
    CONTROL,
    NORMAL,
    UNKNOWN,
    USER_DEFINED,
    build_model_proto,
)
from minigemma.formats.native import write_checkpoint
from minigemma.models.config import family_config
from minigemma.models.gemma import parameter_shapes
from minigemma.models.random_weights import random_params

SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
USER = ["\n", "\n\n", "  "]
NORMAL_PIECES = ["▁", *"abcdefghijklmnopqrstuvwxyz", "▁t", "he", "▁the", "in", "an", "er", "▁a"]
TOKENS = SPECIALS + USER + [f"<0x{b:02X}>" for b in range(256)] + NORMAL_PIECES
TYPES = ([CONTROL, CONTROL, CONTROL, UNKNOWN, CONTROL, CONTROL] + [USER_DEFINED] * len(USER)
         + [BYTE] * 256 + [NORMAL] * len(NORMAL_PIECES))
SCORES = [0.0] * (len(SPECIALS) + len(USER) + 256) + [-float(i) for i in range(len(NORMAL_PIECES))]
VOCAB = len(TOKENS)


def toy_tokenizer_bytes():
    pieces = [t.replace(" ", "▁") if ty == USER_DEFINED else t for t, ty in zip(TOKENS, TYPES)]
    return build_model_proto(pieces, SCORES, TYPES, {"unk": 3, "bos": 2, "eos": 1, "pad": 0},
                             add_dummy_prefix=False)


def tiny_config(**overrides):
    """A Gemma 3 config whose matrices all have 64 inputs (a multiple of the q8_0 block)."""
    fields = dict(vocab_size=VOCAB, d_model=64, num_layers=2, num_heads=2, num_kv_heads=1,
                  head_dim=32, ffn_dim=64, sliding_window=4, query_pre_attn_scalar=32.0,
                  max_position=128, layer_types=("local", "global"))
    fields.update(overrides)
    return family_config("gemma3", **fields)


def tiny_weights(config, seed=0):
    return random_params(parameter_shapes(config), seed, std=0.2)


def write_tiny_native(folder, seed=0, config=None, overwrite=False):
    config = config or tiny_config()
    params = tiny_weights(config, seed)
    tensors = [(n, params[n].shape, "f32", lambda n=n: params[n]) for n in parameter_shapes(config)]
    return write_checkpoint(folder, config, tensors, embedding_dtype="float32", source="test",
                            tokenizer_bytes=toy_tokenizer_bytes(), overwrite=overwrite)


# minigemma name inside layers.{i}. -> GGUF name inside blk.{i}.
GGUF_LAYER_NAMES = {"pre_attn_norm": "attn_norm", "q_proj": "attn_q", "k_proj": "attn_k",
                    "v_proj": "attn_v", "o_proj": "attn_output", "q_norm": "attn_q_norm",
                    "k_norm": "attn_k_norm", "post_attn_norm": "post_attention_norm",
                    "pre_mlp_norm": "ffn_norm", "post_mlp_norm": "post_ffw_norm",
                    "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down"}


def gguf_name(ours):
    if ours == "embedding":
        return "token_embd.weight"
    if ours == "final_norm":
        return "output_norm.weight"
    _, i, local = ours.split(".")
    return f"blk.{i}.{GGUF_LAYER_NAMES[local]}.weight"


def gguf_metadata(config, tokenizer=True):
    """{key: (GGUFWriter method, value)}: the metadata llama.cpp writes for `config`."""
    a = "gemma3."
    keys = {a + "block_count": ("add_uint32", config.num_layers),
            a + "embedding_length": ("add_uint32", config.d_model),
            a + "feed_forward_length": ("add_uint32", config.ffn_dim),
            a + "attention.head_count": ("add_uint32", config.num_heads),
            a + "attention.head_count_kv": ("add_uint32", config.num_kv_heads),
            a + "attention.key_length": ("add_uint32", config.head_dim),
            a + "attention.value_length": ("add_uint32", config.head_dim),
            a + "context_length": ("add_uint32", config.max_position),
            a + "attention.sliding_window": ("add_uint32", config.sliding_window),
            a + "rope.freq_base": ("add_float32", config.rope_base_global),
            a + "attention.layer_norm_rms_epsilon": ("add_float32", config.rms_eps)}
    if tokenizer:
        t = "tokenizer.ggml."
        keys.update({t + "model": ("add_string", "llama"), t + "tokens": ("add_array", TOKENS),
                     t + "scores": ("add_array", SCORES), t + "token_type": ("add_array", TYPES),
                     t + "bos_token_id": ("add_uint32", 2), t + "eos_token_id": ("add_uint32", 1),
                     t + "unknown_token_id": ("add_uint32", 3),
                     t + "padding_token_id": ("add_uint32", 0),
                     t + "add_space_prefix": ("add_bool", False)})
    return keys


def write_tiny_gguf(path, seed=0, config=None, tokenizer=True, extra=None, skip_keys=(),
                    params=None):
    """A Gemma 3 GGUF of `config` (tiny_config by default): matrices q8_0, norms F32 (stored as
    the full gain, as llama.cpp does). `extra` {key: (GGUFWriter method, value)} adds or
    replaces metadata (see gguf_metadata); `skip_keys` are left out."""
    import gguf
    config = config or tiny_config()
    params = params or tiny_weights(config, seed)
    w = gguf.GGUFWriter(os.fspath(path), "gemma3")
    for key, (method, value) in {**gguf_metadata(config, tokenizer), **(extra or {})}.items():
        if key not in skip_keys:
            getattr(w, method)(key, value)
    for ours in parameter_shapes(config):
        value = params[ours]
        if value.ndim == 2:
            w.add_tensor(gguf_name(ours), quantize_q8_0(value).blocks,
                         raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(gguf_name(ours), value)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return os.fspath(path)


# minigemma name inside layers.{i}. -> HF name inside model.layers.{i}. (Gemma 2/3)
HF_LAYER_NAMES = {"pre_attn_norm": "input_layernorm", "q_proj": "self_attn.q_proj",
                  "k_proj": "self_attn.k_proj", "v_proj": "self_attn.v_proj",
                  "o_proj": "self_attn.o_proj", "q_norm": "self_attn.q_norm",
                  "k_norm": "self_attn.k_norm", "post_attn_norm": "post_attention_layernorm",
                  "pre_mlp_norm": "pre_feedforward_layernorm",
                  "post_mlp_norm": "post_feedforward_layernorm", "gate_proj": "mlp.gate_proj",
                  "up_proj": "mlp.up_proj", "down_proj": "mlp.down_proj"}


def hf_name(ours):
    if ours == "embedding":
        return "model.embed_tokens.weight"
    if ours == "final_norm":
        return "model.norm.weight"
    _, i, local = ours.split(".")
    return f"model.layers.{i}.{HF_LAYER_NAMES[local]}.weight"


def tiny_hf_config(config=None):
    config = config or tiny_config()
    return {"model_type": "gemma3_text", "architectures": ["Gemma3ForCausalLM"],
            "vocab_size": config.vocab_size, "hidden_size": config.d_model,
            "intermediate_size": config.ffn_dim, "num_hidden_layers": config.num_layers,
            "num_attention_heads": config.num_heads,
            "num_key_value_heads": config.num_kv_heads, "head_dim": config.head_dim,
            "sliding_window": config.sliding_window,
            "layer_types": ["sliding_attention" if k == "local" else "full_attention"
                            for k in config.layer_types],
            "query_pre_attn_scalar": config.query_pre_attn_scalar,
            "max_position_embeddings": config.max_position, "rms_norm_eps": config.rms_eps,
            "hidden_activation": "gelu_pytorch_tanh", "bos_token_id": 2, "eos_token_id": 1,
            "pad_token_id": 0, "tie_word_embeddings": True,
            "rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 1e6},
                                "sliding_attention": {"rope_type": "default",
                                                      "rope_theta": 1e4}}}


def write_tiny_hf(folder, seed=0, config=None, dtype=np.float32):
    """An HF Gemma 3 folder; HF stores norm gains zero-centred (w, run as 1 + w)."""
    from safetensors.numpy import save_file
    config = config or tiny_config()
    params = tiny_weights(config, seed)
    os.makedirs(folder, exist_ok=True)
    tensors = {hf_name(n): (v - 1.0 if n.endswith("_norm") else v).astype(dtype)
               for n, v in params.items()}
    save_file(tensors, os.path.join(folder, "model.safetensors"))
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(tiny_hf_config(config), f)
    with open(os.path.join(folder, "tokenizer.model"), "wb") as f:
        f.write(toy_tokenizer_bytes())
    return os.fspath(folder)
