"""Model configurations: frozen, validated dataclasses with a named preset per released size.

A config describes the model only — never the backend, dtype policy or sampling. Numbers and
their sources: docs/architecture.md#hyperparameters.
"""
import dataclasses
from dataclasses import dataclass, field

FAMILIES = ("gemma", "gemma2", "gemma3")
LAYER_KINDS = ("global", "local")


class _ConfigFields:
    """What both configs share: JSON round trip and copies with changes."""

    @classmethod
    def from_dict(cls, d):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown config fields {sorted(unknown)}")
        return cls(**d)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class GemmaConfig(_ConfigFields):
    """One transformer decoder covering Gemma 1, 2 and 3 (text)."""
    family: str
    vocab_size: int
    d_model: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    ffn_dim: int
    layer_types: tuple  # "global" | "local", one per layer
    sliding_window: int | None = None
    rope_base_global: float = 10_000.0
    rope_base_local: float = 10_000.0
    rope_scale_global: float = 1.0  # linear position interpolation factor (Gemma 3 4B+)
    query_pre_attn_scalar: float | None = None  # score scale = scalar^-1/2; None -> head_dim
    attn_softcap: float | None = None
    final_softcap: float | None = None
    qk_norm: bool = False
    post_norms: bool = False  # Gemma 2/3 "sandwich" norms after attention and MLP
    rms_eps: float = 1e-6
    max_position: int = 8192
    bos_id: int = 2
    eos_id: int = 1
    pad_id: int = 0

    def __post_init__(self):
        object.__setattr__(self, "layer_types", tuple(self.layer_types))
        if self.query_pre_attn_scalar is None:
            object.__setattr__(self, "query_pre_attn_scalar", float(self.head_dim))
        if self.family not in FAMILIES:
            raise ValueError(f"unknown Gemma family {self.family!r}; expected one of {FAMILIES}")
        for name in ("vocab_size", "d_model", "num_layers", "num_heads", "num_kv_heads",
                     "head_dim", "ffn_dim", "max_position"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"config field {name} must be a positive integer, got {value!r}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must be a multiple of "
                             f"num_kv_heads ({self.num_kv_heads})")
        if self.head_dim % 2:
            raise ValueError(f"head_dim must be even for RoPE, got {self.head_dim}")
        if len(self.layer_types) != self.num_layers:
            raise ValueError(f"layer_types has {len(self.layer_types)} entries for "
                             f"{self.num_layers} layers")
        bad = set(self.layer_types) - set(LAYER_KINDS)
        if bad:
            raise ValueError(f"unknown layer types {sorted(bad)}; expected 'global' or 'local'")
        if "local" in self.layer_types and not self.sliding_window:
            raise ValueError("local layers need a positive sliding_window")
        for name in ("attn_softcap", "final_softcap"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be positive or None, got {value!r}")

    @property
    def query_scale(self):
        return self.query_pre_attn_scalar ** -0.5

    def is_local(self, layer):
        return self.layer_types[layer] == "local"

    def rope_for(self, layer):
        """(base, scale) of the rotary embedding in `layer`."""
        if self.is_local(layer):
            return self.rope_base_local, 1.0
        return self.rope_base_global, self.rope_scale_global

    def to_dict(self):
        d = dataclasses.asdict(self)
        d["layer_types"] = list(self.layer_types)
        return d


BLOCK_KINDS = ("recurrent", "attention")


@dataclass(frozen=True)
class GriffinConfig(_ConfigFields):
    """RecurrentGemma (Griffin): residual blocks (recurrent, recurrent, attention) repeated.

    Window convention (docs/numerics.md#recurrentgemma-window). A local attention layer with window W lets a
    query see W keys including its own when `window_includes_extra_key` is False (HF
    transformers: q − k < W), and W + 1 keys when it is True (the official `recurrentgemma`
    code, JAX and PyTorch, with which the models were trained: q − k ≤ W). The two agree while
    a sequence is at most W tokens long. Each converter sets the field for its source: HF
    folders → False, official `recurrentgemma` state dicts → True. The default (False, as in
    the presets) is HF's, the source most conversions start from.

    `max_position` bounds generation only. Nothing in the network depends on it: the recurrent
    state has a fixed size, RoPE is relative and attention sees at most the window, so decoding
    runs in constant memory at any length. 8192 is the Gemma family's context and the sequence
    length the RecurrentGemma report gives for training (docs/architecture.md#hyperparameters says how sure that is);
    past it the model runs but its quality is untested.
    """
    vocab_size: int
    d_model: int
    num_layers: int
    num_heads: int
    lru_width: int
    ffn_dim: int  # per branch (HF's intermediate_size is twice this: docs/numerics.md#recurrentgemma-ffn-width)
    attention_window: int = 2048
    conv_width: int = 4
    num_kv_heads: int = 1
    rope_base: float = 10_000.0
    partial_rotary_factor: float = 0.5  # RoPE rotates the first half of each head
    final_softcap: float | None = 30.0
    rms_eps: float = 1e-6
    block_pattern: tuple = ("recurrent", "recurrent", "attention")  # repeated over the layers
    # False: W keys per query (HF); True: W + 1 keys (official recurrentgemma). See above.
    window_includes_extra_key: bool = False
    max_position: int = 8192
    bos_id: int = 2
    eos_id: int = 1
    pad_id: int = 0
    family: str = field(default="recurrentgemma")

    def __post_init__(self):
        object.__setattr__(self, "block_pattern", tuple(self.block_pattern))
        for name in ("vocab_size", "d_model", "num_layers", "num_heads", "lru_width", "ffn_dim",
                     "attention_window", "conv_width", "num_kv_heads", "max_position"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"config field {name} must be a positive integer, got {value!r}")
        if self.family != "recurrentgemma":
            raise ValueError(f"GriffinConfig describes family 'recurrentgemma', got "
                             f"{self.family!r}")
        if self.d_model % self.num_heads or self.lru_width % self.num_heads:
            raise ValueError(f"d_model ({self.d_model}) and lru_width ({self.lru_width}) must be "
                             f"multiples of num_heads ({self.num_heads})")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must be a multiple of "
                             f"num_kv_heads ({self.num_kv_heads})")
        rotated = self.head_dim * self.partial_rotary_factor
        if rotated != int(rotated) or int(rotated) % 2 or rotated <= 0:
            raise ValueError(f"RoPE rotates head_dim × partial_rotary_factor = {rotated} dims; "
                             f"that must be a positive even integer")
        if not self.block_pattern or set(self.block_pattern) - set(BLOCK_KINDS):
            raise ValueError(f"block_pattern {self.block_pattern} must be a non-empty sequence "
                             f"of {BLOCK_KINDS}")
        if self.final_softcap is not None and not self.final_softcap > 0:
            raise ValueError(f"final_softcap must be positive or None, got {self.final_softcap!r}")

    @property
    def head_dim(self):
        return self.d_model // self.num_heads

    @property
    def rot_dim(self):
        """Dims of each head that RoPE rotates (H/2 in RecurrentGemma)."""
        return int(self.head_dim * self.partial_rotary_factor)

    @property
    def query_scale(self):
        return self.head_dim ** -0.5

    @property
    def layer_types(self):
        """"recurrent" | "attention", one per layer (the block pattern repeated)."""
        p = self.block_pattern
        return tuple(p[i % len(p)] for i in range(self.num_layers))

    def is_attention(self, layer):
        return self.block_pattern[layer % len(self.block_pattern)] == "attention"

    @property
    def attention_span(self):
        """Keys a query sees, its own included: W (HF) or W + 1 (official), the `window` of
        `minigemma.ops.attention.attention`."""
        return self.attention_window + (1 if self.window_includes_extra_key else 0)

    def to_dict(self):
        d = dataclasses.asdict(self)
        d["block_pattern"] = list(self.block_pattern)
        return d


def _gemma3_layer_types(num_layers):
    return tuple("global" if (i + 1) % 6 == 0 else "local" for i in range(num_layers))


def _gemma2_layer_types(num_layers):
    return tuple("local" if i % 2 == 0 else "global" for i in range(num_layers))


def _gemma1(d, layers, heads, kv, ffn):
    return GemmaConfig("gemma", 256_000, d, layers, heads, kv, 256, ffn, ("global",) * layers)


def _gemma2(d, layers, heads, kv, head_dim, ffn, scalar):
    return GemmaConfig("gemma2", 256_000, d, layers, heads, kv, head_dim, ffn,
                       _gemma2_layer_types(layers), sliding_window=4096,
                       query_pre_attn_scalar=scalar, attn_softcap=50.0, final_softcap=30.0,
                       post_norms=True, max_position=8192)


def _gemma3(d, layers, ffn):
    return GemmaConfig("gemma3", 262_144, d, layers, 4, 1, 256, ffn, _gemma3_layer_types(layers),
                       sliding_window=512, rope_base_global=1_000_000.0, rope_base_local=10_000.0,
                       query_pre_attn_scalar=256.0, qk_norm=True, post_norms=True,
                       max_position=32_768)


PRESETS = {
    "gemma-2b": _gemma1(2048, 18, 8, 1, 16384),
    "gemma-7b": _gemma1(3072, 28, 16, 16, 24576),
    "gemma2-2b": _gemma2(2304, 26, 8, 4, 256, 9216, 256.0),
    "gemma2-9b": _gemma2(3584, 42, 16, 8, 256, 14336, 256.0),  # 256, not D/N = 224 (docs/numerics.md#query-scale)
    "gemma2-27b": _gemma2(4608, 46, 32, 16, 128, 36864, 144.0),  # D/N = 144, not H = 128
    "gemma3-270m": _gemma3(640, 18, 2048),
    "gemma3-1b": _gemma3(1152, 26, 6912),
    "recurrentgemma-2b": GriffinConfig(256_000, 2560, 26, 10, 2560, 7680),
    "recurrentgemma-9b": GriffinConfig(256_000, 4096, 38, 16, 4096, 12288),
}


def preset(name):
    """The configuration of a released size by name, e.g. preset("gemma2-9b")."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}") from None


# --- HF config.json -----------------------------------------------------------------------

def _hf_layer_types(hf, family, num_layers):
    names = hf.get("layer_types")
    if names:
        kinds = {"sliding_attention": "local", "full_attention": "global"}
        try:
            return tuple(kinds[n] for n in names)
        except KeyError as e:
            raise ValueError(f"config.json: unknown layer type {e.args[0]!r}") from None
    if family == "gemma":
        return ("global",) * num_layers
    if family == "gemma2":
        return _gemma2_layer_types(num_layers)
    pattern = hf.get("sliding_window_pattern", 6)
    return tuple("global" if (i + 1) % pattern == 0 else "local" for i in range(num_layers))


def _hf_rope_bases(hf):
    """(global base, local base, global linear scale) from old or new (transformers 5) keys."""
    params = hf.get("rope_parameters") or {}
    if "full_attention" in params or "sliding_attention" in params:
        full = params.get("full_attention") or {}
        local = params.get("sliding_attention") or {}
        base_global = full.get("rope_theta", 10_000.0)
        scale = full.get("factor", 1.0) if full.get("rope_type", "default") == "linear" else 1.0
        return float(base_global), float(local.get("rope_theta", base_global)), float(scale)
    base_global = params.get("rope_theta", hf.get("rope_theta", 10_000.0))
    scaling = hf.get("rope_scaling") or {}
    scale = scaling.get("factor", 1.0) if scaling.get("rope_type", scaling.get("type")) == "linear" else 1.0
    local = hf.get("rope_local_base_freq", base_global)
    return float(base_global), float(local), float(scale)


HF_MODEL_TYPES = {"gemma": "gemma", "gemma2": "gemma2", "gemma3_text": "gemma3"}


def config_from_hf(hf):
    """A GemmaConfig from the dict of an HF `config.json` (Gemma, Gemma 2, Gemma 3 text)."""
    model_type = hf.get("model_type")
    if model_type not in HF_MODEL_TYPES:
        raise ValueError(f"config.json: unsupported model_type {model_type!r}; minigemma converts "
                         f"{', '.join(HF_MODEL_TYPES)} (recurrent_gemma: see the Griffin converter)")
    family = HF_MODEL_TYPES[model_type]
    act = hf.get("hidden_activation") or hf.get("hidden_act") or "gelu_pytorch_tanh"
    # Gemma 1 hub configs say "gelu" but every Gemma uses the tanh approximation (docs/numerics.md#tanh-gelu).
    if act not in ("gelu_pytorch_tanh", "gelu", "gelu_tanh"):
        raise ValueError(f"config.json: activation {act!r} is not Gemma's tanh GELU")
    if hf.get("use_bidirectional_attention"):
        raise ValueError("config.json: bidirectional attention (EmbeddingGemma) is not a causal LM")
    if hf.get("tie_word_embeddings", True) is False:
        raise ValueError("config.json: untied output heads are not part of any Gemma model")
    layers = hf["num_hidden_layers"]
    base_global, base_local, scale = _hf_rope_bases(hf)
    layer_types = _hf_layer_types(hf, family, layers)
    sliding = hf.get("sliding_window") if "local" in layer_types else None
    return GemmaConfig(
        family=family, vocab_size=hf["vocab_size"], d_model=hf["hidden_size"], num_layers=layers,
        num_heads=hf["num_attention_heads"],
        num_kv_heads=hf.get("num_key_value_heads", hf["num_attention_heads"]),
        head_dim=hf.get("head_dim") or hf["hidden_size"] // hf["num_attention_heads"],
        ffn_dim=hf["intermediate_size"], layer_types=layer_types, sliding_window=sliding,
        rope_base_global=base_global, rope_base_local=base_local, rope_scale_global=scale,
        query_pre_attn_scalar=float(hf.get("query_pre_attn_scalar") or
                                    hf.get("head_dim") or
                                    hf["hidden_size"] // hf["num_attention_heads"]),
        attn_softcap=hf.get("attn_logit_softcapping") if family != "gemma" else None,
        final_softcap=hf.get("final_logit_softcapping") if family != "gemma" else None,
        qk_norm=family == "gemma3", post_norms=family != "gemma",
        rms_eps=float(hf.get("rms_norm_eps", 1e-6)),
        max_position=int(hf.get("max_position_embeddings", 8192)),
        bos_id=_first_id(hf.get("bos_token_id"), 2), eos_id=_first_id(hf.get("eos_token_id"), 1),
        pad_id=_first_id(hf.get("pad_token_id"), 0),
    )


def config_from_hf_recurrent_gemma(hf):
    """A GriffinConfig from the dict of an HF RecurrentGemma `config.json` (docs/formats.md#hf-recurrentgemma).

    HF's local attention admits W keys per query, so `window_includes_extra_key` is False.
    HF's `intermediate_size` is twice the per-branch MLP width (docs/numerics.md#recurrentgemma-ffn-width), and HF's
    `num_key_value_heads` defaults to `num_attention_heads` (the released configs say 1).
    """
    if hf.get("model_type") != "recurrent_gemma":
        raise ValueError(f"config.json: model_type {hf.get('model_type')!r} is not "
                         f"'recurrent_gemma'")
    act = hf.get("hidden_activation") or hf.get("hidden_act") or "gelu_pytorch_tanh"
    if act not in ("gelu_pytorch_tanh", "gelu", "gelu_tanh"):
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
        attention_window=hf.get("attention_window_size", 2048),
        conv_width=hf.get("conv1d_width", 4),
        num_kv_heads=hf.get("num_key_value_heads") or heads,
        rope_base=float(rope.get("rope_theta", hf.get("rope_theta", 10_000.0))),
        partial_rotary_factor=float(rope.get("partial_rotary_factor",
                                             hf.get("partial_rotary_factor", 0.5))),
        final_softcap=float(hf.get("logits_soft_cap", 30.0)),
        rms_eps=float(hf.get("rms_norm_eps", 1e-6)),
        block_pattern=tuple(hf.get("block_types") or ("recurrent", "recurrent", "attention")),
        window_includes_extra_key=False,
        max_position=int(hf.get("max_position_embeddings", 8192)),
        bos_id=_first_id(hf.get("bos_token_id"), 2), eos_id=_first_id(hf.get("eos_token_id"), 1),
        pad_id=_first_id(hf.get("pad_token_id"), 0),
    )


def _first_id(value, default):
    if value is None:
        return default
    return int(value[0]) if isinstance(value, (list, tuple)) else int(value)


def kv_cache_bytes(config, context, dtype_bytes=4):
    """Bytes of K and V cached for `context` tokens (local layers hold at most the window)."""
    per_token = 2 * config.num_kv_heads * config.head_dim * dtype_bytes
    total = 0
    for kind in config.layer_types:
        span = min(context, config.sliding_window) if kind == "local" else context
        total += span * per_token
    return total


__all__ = ["GemmaConfig", "GriffinConfig", "PRESETS", "preset", "config_from_hf",
           "config_from_hf_recurrent_gemma", "kv_cache_bytes"]
