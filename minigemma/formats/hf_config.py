"""HF transformers `config.json` -> minigemma config, for Gemma 1 / 2 / 3 (text) and RecurrentGemma.

The keys each parser reads are listed in docs/formats.md#hf-gemma and
docs/formats.md#hf-recurrentgemma. What a file leaves out comes from the family's defaults,
written once in `minigemma.models.config` (FAMILY_DEFAULTS, default_layer_types, and the field
defaults of the config classes).
"""
from minigemma.models.config import (
    FAMILY_DEFAULTS,
    GemmaConfig,
    GriffinConfig,
    default_layer_types,
    family_config,
    field_defaults,
)

HF_MODEL_TYPES = {"gemma": "gemma", "gemma2": "gemma2", "gemma3_text": "gemma3"}
HF_LAYER_TYPES = {"sliding_attention": "local", "full_attention": "global"}
# Gemma 1 hub configs say "gelu" but every Gemma uses the tanh approximation (docs/numerics.md#tanh-gelu).
TANH_GELU_NAMES = ("gelu_pytorch_tanh", "gelu", "gelu_tanh")


def config_from_hf(hf):
    """A GemmaConfig from the dict of an HF `config.json` (Gemma, Gemma 2, Gemma 3 text)."""
    model_type = hf.get("model_type")
    if model_type not in HF_MODEL_TYPES:
        raise ValueError(f"config.json: unsupported model_type {model_type!r}; minigemma converts "
                         f"{', '.join(HF_MODEL_TYPES)} (recurrent_gemma: see the Griffin converter)")
    family = HF_MODEL_TYPES[model_type]
    defaults = {**field_defaults(GemmaConfig), **FAMILY_DEFAULTS[family]}
    act = hf.get("hidden_activation") or hf.get("hidden_act") or "gelu_pytorch_tanh"
    if act not in TANH_GELU_NAMES:
        raise ValueError(f"config.json: activation {act!r} is not Gemma's tanh GELU")
    if hf.get("use_bidirectional_attention"):
        raise ValueError("config.json: bidirectional attention (EmbeddingGemma) is not a causal LM")
    if hf.get("tie_word_embeddings", True) is False:
        raise ValueError("config.json: untied output heads are not part of any Gemma model")
    layers = hf["num_hidden_layers"]
    head_dim = hf.get("head_dim") or hf["hidden_size"] // hf["num_attention_heads"]
    base_global, base_local, scale = _hf_rope_bases(hf, defaults)
    window = hf.get("sliding_window", defaults["sliding_window"])
    layer_types = _hf_layer_types(hf, family, layers, windowed=window is not None)
    caps = {} if family == "gemma" else hf  # Gemma 1 has no soft-caps
    return family_config(
        family, vocab_size=hf["vocab_size"], d_model=hf["hidden_size"], num_layers=layers,
        num_heads=hf["num_attention_heads"],
        num_kv_heads=hf.get("num_key_value_heads", hf["num_attention_heads"]),
        head_dim=head_dim, ffn_dim=hf["intermediate_size"], layer_types=layer_types,
        sliding_window=window if "local" in layer_types else None,
        rope_base_global=base_global, rope_base_local=base_local, rope_scale_global=scale,
        query_pre_attn_scalar=float(hf.get("query_pre_attn_scalar") or head_dim),
        attn_softcap=caps.get("attn_logit_softcapping", defaults["attn_softcap"]),
        final_softcap=caps.get("final_logit_softcapping", defaults["final_softcap"]),
        rms_eps=float(hf.get("rms_norm_eps", defaults["rms_eps"])),
        max_position=int(hf.get("max_position_embeddings", defaults["max_position"])),
        **_special_ids(hf, defaults),
    )


def _hf_layer_types(hf, family, num_layers, windowed):
    """HF's explicit `layer_types` when the file has them, else the family's rule (Gemma 3
    files of older transformers give its period as `sliding_window_pattern`)."""
    names = hf.get("layer_types")
    if names:
        try:
            return tuple(HF_LAYER_TYPES[n] for n in names)
        except KeyError as e:
            raise ValueError(f"config.json: unknown layer type {e.args[0]!r}") from None
    period = hf.get("sliding_window_pattern") if family == "gemma3" else None
    return default_layer_types(family, num_layers, period, windowed)


def _hf_rope_bases(hf, defaults):
    """(global base, local base, global linear scale) from old or new (transformers 5) keys."""
    params = hf.get("rope_parameters") or {}
    if "full_attention" in params or "sliding_attention" in params:
        full = params.get("full_attention") or {}
        local = params.get("sliding_attention") or {}
        base_global = full.get("rope_theta", defaults["rope_base_global"])
        scale = full.get("factor", 1.0) if full.get("rope_type", "default") == "linear" else 1.0
        base_local = local.get("rope_theta", defaults["rope_base_local"] or base_global)
        return float(base_global), float(base_local), float(scale)
    base_global = params.get("rope_theta", hf.get("rope_theta", defaults["rope_base_global"]))
    scaling = hf.get("rope_scaling") or {}
    scale = scaling.get("factor", 1.0) if scaling.get("rope_type", scaling.get("type")) == "linear" else 1.0
    base_local = hf.get("rope_local_base_freq", defaults["rope_base_local"] or base_global)
    return float(base_global), float(base_local), float(scale)


def config_from_hf_recurrent_gemma(hf):
    """A GriffinConfig from the dict of an HF RecurrentGemma `config.json` (docs/formats.md#hf-recurrentgemma).

    HF's local attention admits W keys per query, so `window_includes_extra_key` is False.
    HF's `intermediate_size` is twice the per-branch MLP width (docs/numerics.md#recurrentgemma-ffn-width), and HF's
    `num_key_value_heads` defaults to `num_attention_heads` (the released configs say 1).
    """
    if hf.get("model_type") != "recurrent_gemma":
        raise ValueError(f"config.json: model_type {hf.get('model_type')!r} is not "
                         f"'recurrent_gemma'")
    defaults = field_defaults(GriffinConfig)
    act = hf.get("hidden_activation") or hf.get("hidden_act") or "gelu_pytorch_tanh"
    if act not in TANH_GELU_NAMES:
        raise ValueError(f"config.json: activation {act!r} is not RecurrentGemma's tanh GELU")
    if hf.get("attention_bias"):
        raise ValueError("config.json: attention_bias=true (q/k/v biases) is not part of "
                         "RecurrentGemma and minigemma does not support it")
    if hf.get("tie_word_embeddings", True) is False:
        raise ValueError("config.json: untied output heads are not part of RecurrentGemma")
    if hf["intermediate_size"] % 2:
        raise ValueError(f"config.json: intermediate_size {hf['intermediate_size']} must be even "
                         f"(HF stores twice the per-branch MLP width)")
    rope = hf.get("rope_parameters") or {}
    if rope.get("rope_type", "default") != "default":
        raise ValueError(f"config.json: RoPE type {rope['rope_type']!r} is not supported")
    heads = hf["num_attention_heads"]
    return GriffinConfig(
        vocab_size=hf["vocab_size"], d_model=hf["hidden_size"],
        num_layers=hf["num_hidden_layers"], num_heads=heads,
        lru_width=hf.get("lru_width") or hf["hidden_size"],
        ffn_dim=hf["intermediate_size"] // 2,
        attention_window=hf.get("attention_window_size", defaults["attention_window"]),
        conv_width=hf.get("conv1d_width", defaults["conv_width"]),
        num_kv_heads=hf.get("num_key_value_heads") or heads,
        rope_base=float(rope.get("rope_theta", hf.get("rope_theta", defaults["rope_base"]))),
        partial_rotary_factor=float(rope.get("partial_rotary_factor", hf.get(
            "partial_rotary_factor", defaults["partial_rotary_factor"]))),
        final_softcap=float(hf.get("logits_soft_cap", defaults["final_softcap"])),
        rms_eps=float(hf.get("rms_norm_eps", defaults["rms_eps"])),
        block_pattern=tuple(hf.get("block_types") or defaults["block_pattern"]),
        window_includes_extra_key=False,
        max_position=int(hf.get("max_position_embeddings", defaults["max_position"])),
        **_special_ids(hf, defaults),
    )


def _special_ids(hf, defaults):
    """bos_id, eos_id, pad_id; HF may give a list of ids (the first one counts)."""
    ids = {}
    for ours, key in (("bos_id", "bos_token_id"), ("eos_id", "eos_token_id"),
                      ("pad_id", "pad_token_id")):
        value = hf.get(key)
        if value is None:
            ids[ours] = defaults[ours]
        else:
            ids[ours] = int(value[0]) if isinstance(value, (list, tuple)) else int(value)
    return ids
