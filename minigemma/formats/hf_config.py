"""HF transformers `config.json` -> minigemma config, for Gemma 1 / 2 / 3 and RecurrentGemma.

The keys each parser reads are listed in docs/formats.md#hf-gemma and
docs/formats.md#hf-recurrentgemma. A key the file leaves out takes the value HF transformers
itself gives it (the class defaults of its config, transformers 5.24: HF_DEFAULTS), so a file
means here what it means to HF. Every value is then checked by the config class
(`minigemma.models.config`); here only what HF's own classes decide is followed:

* activations: Gemma 1 reads `hidden_act` and runs "gelu" as the tanh GELU (HF's Gemma 1 config
  remaps it, docs/numerics.md#tanh-gelu); Gemma 2 / 3 read `hidden_activation` and run "gelu" as
  the exact GELU, as HF does; other activations are refused by name;
* RoPE: Gemma 1 / 2 have one `rope_parameters` dict for every layer (or the older `rope_theta`
  and `rope_scaling`), Gemma 3 one per layer kind (`full_attention`, `sliding_attention`; or
  `rope_theta`, `rope_local_base_freq` and a `rope_scaling` for the global layers), each
  "default", "linear" or "yarn"; any other RoPE type is refused by name;
* soft-caps: Gemma 1 has none and HF's Gemma 3 has no attention soft-cap: a file that sets one
  gets a warning that it is ignored, as HF ignores it;
* Gemma 3's multimodal checkpoints (model_type "gemma3", Gemma3ForConditionalGeneration) give
  their text tower in `text_config`.
"""
import math
import warnings

from minigemma.models.config import MAX_LAYERS, GriffinConfig, RopeScaling, family_config

HF_MODEL_TYPES = {"gemma": "gemma", "gemma2": "gemma2", "gemma3_text": "gemma3",
                  "gemma3": "gemma3"}
HF_LAYER_TYPES = {"sliding_attention": "local", "full_attention": "global"}
TANH_GELU_NAMES = ("gelu_pytorch_tanh", "gelu_python_tanh", "gelu_new", "gelu_fast",
                   "gelu_accurate")  # HF's ACT2FN names of the tanh formula
EXACT_GELU_NAMES = ("gelu", "gelu_python")
_COMMON = {"vocab_size": 256000, "head_dim": 256, "max_position_embeddings": 8192,
           "rms_norm_eps": 1e-6, "pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2}
HF_DEFAULTS = {  # transformers 5.24: GemmaConfig, Gemma2Config, Gemma3TextConfig
    "gemma": {**_COMMON, "hidden_size": 3072, "intermediate_size": 24576,
              "num_hidden_layers": 28, "num_attention_heads": 16, "num_key_value_heads": 16,
              "rope_theta": 10_000.0},
    "gemma2": {**_COMMON, "hidden_size": 2304, "intermediate_size": 9216,
               "num_hidden_layers": 26, "num_attention_heads": 8, "num_key_value_heads": 4,
               "rope_theta": 10_000.0, "query_pre_attn_scalar": 256, "sliding_window": 4096,
               "final_logit_softcapping": 30.0, "attn_logit_softcapping": 50.0},
    "gemma3": {**_COMMON, "vocab_size": 262208, "hidden_size": 2304, "intermediate_size": 9216,
               "num_hidden_layers": 26, "num_attention_heads": 8, "num_key_value_heads": 4,
               "max_position_embeddings": 131072, "rope_theta": 1_000_000.0,
               "rope_local_base_freq": 10_000.0, "query_pre_attn_scalar": 256,
               "sliding_window": 4096, "sliding_window_pattern": 6,
               "final_logit_softcapping": None, "attn_logit_softcapping": None},
}
HF_GRIFFIN_DEFAULTS = {  # transformers 5.24: RecurrentGemmaConfig
    "num_hidden_layers": 26, "vocab_size": 256000, "hidden_size": 2560,
    "intermediate_size": 7680, "num_attention_heads": 10, "lru_width": None,
    "attention_window_size": 2048, "conv1d_width": 4, "logits_soft_cap": 30.0,
    "rms_norm_eps": 1e-6, "pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2,
    "rope_theta": 10_000.0, "partial_rotary_factor": 0.5,
    "block_types": ["recurrent", "recurrent", "attention"], "max_position_embeddings": 8192,
}
NUMBER, INTEGER = (int, float), (int,)


def _get(hf, key, defaults, types, optional=False, where=""):
    """hf[key] (or HF's default for it), checked to be of `types` (None too if `optional`);
    `where` prefixes the key in messages ("rope_parameters.full_attention.")."""
    value = hf.get(key, defaults.get(key)) if key in hf or key in defaults else None
    if value is None and optional:
        return None
    if isinstance(value, bool) and bool not in types or not isinstance(value, types):
        names = " or ".join(t.__name__ for t in types) + (" or null" if optional else "")
        raise ValueError(f"{where}{key} must be {names}, got {value!r}")
    return value


def config_from_hf(hf):
    """A GemmaConfig from the dict of an HF `config.json` (Gemma, Gemma 2, Gemma 3 text or
    multimodal). ValueError naming the key for anything HF would not run as a Gemma."""
    model_type = hf.get("model_type")
    if not isinstance(model_type, str) or model_type not in HF_MODEL_TYPES:
        raise ValueError(f"unsupported model_type {model_type!r}; minigemma converts "
                         f"{', '.join(HF_MODEL_TYPES)} (recurrent_gemma: see the Griffin "
                         f"converter)")
    family = HF_MODEL_TYPES[model_type]
    if model_type == "gemma3":  # Gemma3ForConditionalGeneration: the text tower's config
        outer = hf
        hf = _get(hf, "text_config", {}, (dict,), optional=True) or {}
        if hf.get("model_type", "gemma3_text") != "gemma3_text":
            raise ValueError(f"text_config.model_type must be 'gemma3_text', got "
                             f"{hf.get('model_type')!r}")
        hf = {**{k: outer[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id",
                                       "tie_word_embeddings") if k in outer}, **hf}
    d = HF_DEFAULTS[family]
    if _get(hf, "use_bidirectional_attention", {}, (bool,), optional=True):
        raise ValueError("use_bidirectional_attention: bidirectional attention (EmbeddingGemma) "
                         "is not a causal LM")
    if not _get(hf, "tie_word_embeddings", {"tie_word_embeddings": True}, (bool,)):
        raise ValueError("tie_word_embeddings is false: untied output heads are not part of any "
                         "Gemma model")
    if _get(hf, "attention_bias", {"attention_bias": False}, (bool,)):
        raise ValueError("attention_bias is true: q/k/v/o biases are not part of any Gemma "
                         "model")
    layers = _get(hf, "num_hidden_layers", d, INTEGER)
    if not 1 <= layers <= MAX_LAYERS:  # before a list of that many layer kinds is built
        raise ValueError(f"num_hidden_layers must be in [1, {MAX_LAYERS}], got {layers}")
    heads = _get(hf, "num_attention_heads", d, INTEGER)
    head_dim = _get(hf, "head_dim", d, INTEGER)
    window = _get(hf, "sliding_window", d, INTEGER, optional=True)
    layer_types = _hf_layer_types(hf, family, layers, d)
    if "local" not in layer_types:
        window = None
    elif window is None:
        raise ValueError("sliding_window is null but the model has sliding-attention layers "
                         "(HF refuses this config too)")
    rope = _hf_rope(hf, family, d, head_dim)
    fields = dict(
        vocab_size=_get(hf, "vocab_size", d, INTEGER),
        d_model=_get(hf, "hidden_size", d, INTEGER), num_layers=layers, num_heads=heads,
        num_kv_heads=_get(hf, "num_key_value_heads", d, INTEGER), head_dim=head_dim,
        ffn_dim=_get(hf, "intermediate_size", d, INTEGER), layer_types=layer_types,
        sliding_window=window, gelu_approximate=_gelu_approximate(hf, family),
        rms_eps=_get(hf, "rms_norm_eps", d, NUMBER),
        max_position=_get(hf, "max_position_embeddings", d, INTEGER),
        **rope, **_caps(hf, family, d), **_special_ids(hf, d))
    if family != "gemma":
        fields["query_pre_attn_scalar"] = _get(hf, "query_pre_attn_scalar", d, NUMBER)
    return family_config(family, **fields)


def _gelu_approximate(hf, family):
    """GemmaConfig.gelu_approximate of the file's activation (see the module docstring)."""
    key = "hidden_act" if family == "gemma" else "hidden_activation"
    act = _get(hf, key, {key: "gelu_pytorch_tanh"}, (str,))
    if act in TANH_GELU_NAMES or (family == "gemma" and act == "gelu"):
        return "tanh"
    if act in EXACT_GELU_NAMES:
        return "none"
    raise ValueError(f"{key} {act!r} is not supported: minigemma computes the GELU "
                     f"({', '.join(TANH_GELU_NAMES + EXACT_GELU_NAMES)})")


def _caps(hf, family, d):
    """attn_softcap and final_softcap; the ones HF's class ignores are ignored with a warning."""
    ignored = {"gemma": ("attn_logit_softcapping", "final_logit_softcapping"),
               "gemma2": (), "gemma3": ("attn_logit_softcapping",)}[family]
    caps = {}
    for ours, key in (("attn_softcap", "attn_logit_softcapping"),
                      ("final_softcap", "final_logit_softcapping")):
        value = _get(hf, key, d, NUMBER, optional=True)
        if key in ignored:
            if value is not None:
                warnings.warn(f"config.json sets {key}={value}, which HF transformers' "
                              f"{family} ignores; minigemma ignores it too", stacklevel=3)
            value = None
        caps[ours] = value
    return caps


def _hf_layer_types(hf, family, num_layers, d):
    """HF's explicit `layer_types` when the file has them, else HF's rule (Gemma 3: a global
    layer after every `sliding_window_pattern` − 1 local ones)."""
    names = _get(hf, "layer_types", {}, (list,), optional=True)
    if names:
        if len(names) != num_layers:
            raise ValueError(f"layer_types has {len(names)} entries for {num_layers} layers")
        bad = [n for n in names if not isinstance(n, str) or n not in HF_LAYER_TYPES]
        if bad:
            raise ValueError(f"layer_types: unknown layer type {bad[0]!r}; expected "
                             f"{', '.join(HF_LAYER_TYPES)}")
        kinds = tuple(HF_LAYER_TYPES[n] for n in names)
        if family == "gemma" and "local" in kinds:
            raise ValueError("layer_types: Gemma 1 has no sliding-attention layers")
        return kinds
    if family == "gemma":
        return ("global",) * num_layers
    period = 2 if family == "gemma2" else _get(hf, "sliding_window_pattern", d, INTEGER)
    if period < 1:
        raise ValueError(f"sliding_window_pattern must be positive, got {period}")
    return tuple("global" if (i + 1) % period == 0 else "local" for i in range(num_layers))


def _hf_rope(hf, family, d, head_dim):
    """rope_base_global, rope_base_local, rope_scaling_global, rope_scaling_local, from old or
    new (transformers 5) keys, as HF's config classes merge them."""
    params = _get(hf, "rope_parameters", {}, (dict,), optional=True)
    legacy = _get(hf, "rope_scaling", {}, (dict,), optional=True)
    max_position = _get(hf, "max_position_embeddings", d, INTEGER)
    if family != "gemma3":  # one dict for every layer; HF: rope_scaling replaces it
        params = dict(legacy or params or {})
        if "full_attention" in params or "sliding_attention" in params:
            raise ValueError(f"rope_parameters: {family} has one RoPE for every layer, not one "
                             f"per layer type")
        params.setdefault("rope_theta", _get(hf, "rope_theta", d, NUMBER))
        base, scaling = _rope_kind(params, "rope_parameters", max_position, head_dim,
                                   params.get("truncate", True))
        return dict(rope_base_global=base, rope_base_local=base, rope_scaling_global=scaling,
                    rope_scaling_local=scaling)
    nested = {"full_attention", "sliding_attention"} & set(params or {})
    if params and not nested:
        warnings.warn("config.json: rope_parameters has no full_attention / sliding_attention "
                      "entries; HF transformers' Gemma 3 ignores such flat parameters, and so "
                      "does minigemma", stacklevel=3)
    full = dict(_get(params or {}, "full_attention", {}, (dict,), optional=True,
                     where="rope_parameters.") or {})
    local = dict(_get(params or {}, "sliding_attention", {}, (dict,), optional=True,
                      where="rope_parameters.") or {})
    if legacy:
        full.update(legacy)  # HF: an old rope_scaling applies to the global layers
    full.setdefault("rope_theta", _get(hf, "rope_theta", d, NUMBER))
    local.setdefault("rope_theta", _get(hf, "rope_local_base_freq", d, NUMBER))
    truncate = (params or {}).get("truncate", True)  # HF reads it at the top level
    base_global, scaling_global = _rope_kind(full, "rope_parameters.full_attention",
                                             max_position, head_dim, truncate)
    base_local, scaling_local = _rope_kind(local, "rope_parameters.sliding_attention",
                                           max_position, head_dim, truncate)
    return dict(rope_base_global=base_global, rope_base_local=base_local,
                rope_scaling_global=scaling_global, rope_scaling_local=scaling_local)


def _rope_kind(p, key, max_position, head_dim, truncate):
    """(base, RopeScaling or None) of one HF RoPE dict, with HF's defaults for YaRN; errors
    name the dict (`key`)."""
    try:
        return _rope_fields(p, key, max_position, truncate)
    except ValueError as e:
        raise ValueError(str(e) if str(e).startswith(key) else f"{key}: {e}") from None


def _rope_fields(p, key, max_position, truncate):
    base = _get(p, "rope_theta", {}, NUMBER)
    kind = p.get("rope_type", p.get("type", "default"))
    if kind == "default":
        return base, None
    if kind == "linear":
        return base, RopeScaling("linear", _get(p, "factor", {}, NUMBER))
    if kind != "yarn":
        raise ValueError(f"{key}: RoPE type {kind!r} is not supported (minigemma implements "
                         f"default, linear and yarn)")
    if _get(p, "partial_rotary_factor", {"partial_rotary_factor": 1.0}, NUMBER) != 1.0:
        raise ValueError(f"{key}: partial_rotary_factor is not supported for Gemma")
    original = _get(p, "original_max_position_embeddings",
                    {"original_max_position_embeddings": max_position}, INTEGER)
    factor = _get(p, "factor", {"factor": None}, NUMBER, optional=True)
    if factor is None:
        factor = max_position / original if original > 0 else 0.0
    attention = _get(p, "attention_factor", {}, NUMBER, optional=True)
    mscale = _get(p, "mscale", {}, NUMBER, optional=True)
    mscale_all = _get(p, "mscale_all_dim", {}, NUMBER, optional=True)
    if attention is None and mscale and mscale_all and factor > 1:
        def get_mscale(scale, m):  # HF's, from DeepSeek-V2
            return 0.1 * m * math.log(scale) + 1.0 if scale > 1 else 1.0
        attention = get_mscale(factor, mscale) / get_mscale(factor, mscale_all)
    beta_fast = _get(p, "beta_fast", {}, NUMBER, optional=True) or 32.0  # HF: `or 32`
    beta_slow = _get(p, "beta_slow", {}, NUMBER, optional=True) or 1.0
    if not isinstance(truncate, bool):
        raise ValueError(f"rope_parameters.truncate must be true or false, got {truncate!r}")
    return base, RopeScaling("yarn", factor, original_context=original, beta_fast=beta_fast,
                             beta_slow=beta_slow, attention_factor=attention, truncate=truncate)


def config_from_hf_recurrent_gemma(hf):
    """A GriffinConfig from the dict of an HF RecurrentGemma `config.json` (docs/formats.md#hf-recurrentgemma).

    HF's local attention admits W keys per query, so `window_includes_extra_key` is False.
    HF's `intermediate_size` is twice the per-branch MLP width (docs/numerics.md#recurrentgemma-ffn-width), and HF's
    `num_key_value_heads` defaults to `num_attention_heads` (the released configs say 1).
    """
    if hf.get("model_type") != "recurrent_gemma":
        raise ValueError(f"model_type {hf.get('model_type')!r} is not 'recurrent_gemma'")
    d = HF_GRIFFIN_DEFAULTS
    act = _get(hf, "hidden_activation", {"hidden_activation": "gelu_pytorch_tanh"}, (str,))
    if act not in TANH_GELU_NAMES:
        raise ValueError(f"hidden_activation {act!r} is not RecurrentGemma's tanh GELU")
    if _get(hf, "attention_bias", {"attention_bias": False}, (bool,)):
        raise ValueError("attention_bias is true: q/k/v biases are not part of RecurrentGemma "
                         "and minigemma does not support them")
    if not _get(hf, "tie_word_embeddings", {"tie_word_embeddings": True}, (bool,)):
        raise ValueError("tie_word_embeddings is false: untied output heads are not part of "
                         "RecurrentGemma")
    ffn = _get(hf, "intermediate_size", d, INTEGER)
    if ffn % 2:
        raise ValueError(f"intermediate_size {ffn} must be even (HF stores twice the "
                         f"per-branch MLP width)")
    rope = _get(hf, "rope_parameters", {}, (dict,), optional=True) or {}
    if rope.get("rope_type", "default") != "default":
        raise ValueError(f"rope_parameters: RoPE type {rope['rope_type']!r} is not supported")
    heads = _get(hf, "num_attention_heads", d, INTEGER)
    width = _get(hf, "hidden_size", d, INTEGER)
    return GriffinConfig(
        vocab_size=_get(hf, "vocab_size", d, INTEGER), d_model=width,
        num_layers=_get(hf, "num_hidden_layers", d, INTEGER), num_heads=heads,
        lru_width=_get(hf, "lru_width", d, INTEGER, optional=True) or width,
        ffn_dim=ffn // 2,
        attention_window=_get(hf, "attention_window_size", d, INTEGER),
        conv_width=_get(hf, "conv1d_width", d, INTEGER),
        num_kv_heads=_get(hf, "num_key_value_heads", {}, INTEGER, optional=True) or heads,
        rope_base=_get(rope, "rope_theta", {"rope_theta": _get(hf, "rope_theta", d, NUMBER)},
                       NUMBER),
        partial_rotary_factor=_get(rope, "partial_rotary_factor", {
            "partial_rotary_factor": _get(hf, "partial_rotary_factor", d, NUMBER)}, NUMBER),
        final_softcap=_get(hf, "logits_soft_cap", d, NUMBER),
        rms_eps=_get(hf, "rms_norm_eps", d, NUMBER),
        block_pattern=tuple(_get(hf, "block_types", d, (list,))),
        window_includes_extra_key=False,
        max_position=_get(hf, "max_position_embeddings", d, INTEGER),
        **_special_ids(hf, d),
    )


def _special_ids(hf, d):
    """bos_id, eos_id, pad_id; HF may give a list of ids (the first one counts)."""
    ids = {}
    for ours, key in (("bos_id", "bos_token_id"), ("eos_id", "eos_token_id"),
                      ("pad_id", "pad_token_id")):
        value = hf.get(key)
        if isinstance(value, list) and value:
            value = value[0]
        if value is None:
            value = d[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{key} must be an integer or a list of them, got {hf.get(key)!r}")
        ids[ours] = value
    return ids
