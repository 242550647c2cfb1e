"""Model configurations: frozen, validated dataclasses with a named preset per released size.

A config describes the model only — never the backend, dtype policy or sampling. Numbers and
their sources: docs/architecture.md#hyperparameters. What a Gemma family shares is written once,
here: FAMILY_DEFAULTS, and the local/global rule default_layer_types
(docs/numerics.md#local-global-order). The presets, the HF config.json parser
(minigemma.formats.hf_config) and the GGUF reader all use them.
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


FAMILY_DEFAULTS = {
    # What every released size of a Gemma family shares (docs/architecture.md#hyperparameters).
    # Presets, the HF config.json parser and the GGUF reader start from these; a checkpoint's
    # own values win. global_every: layer i is global iff (i + 1) % global_every == 0.
    # rope_base_local None: the family has one RoPE base, local layers use the global one.
    "gemma": {"global_every": 1, "sliding_window": None, "attn_softcap": None,
              "final_softcap": None, "qk_norm": False, "post_norms": False,
              "rope_base_global": 10_000.0, "rope_base_local": None},
    "gemma2": {"global_every": 2, "sliding_window": 4096, "attn_softcap": 50.0,
               "final_softcap": 30.0, "qk_norm": False, "post_norms": True,
               "rope_base_global": 10_000.0, "rope_base_local": None},
    # Gemma 3's window depends on the size (512 for 270M and 1B, 1024 from 4B): no default.
    "gemma3": {"global_every": 6, "sliding_window": None, "attn_softcap": None,
               "final_softcap": None, "qk_norm": True, "post_norms": True,
               "rope_base_global": 1_000_000.0, "rope_base_local": 10_000.0},
}
# RecurrentGemma's defaults are the field defaults of GriffinConfig, written there once.


def default_layer_types(family, num_layers, period=None, windowed=True):
    """"global" | "local" for each layer, where a checkpoint does not list them.

    Layer i is global iff (i + 1) % period == 0, the period being the family's global_every
    unless given: Gemma 1 all global (1), Gemma 2 local, global, … (2), Gemma 3 five local to
    one global (6). Every layer is global when the model has no sliding window (windowed=False).

        default_layer_types("gemma2", 4)                  -> ("local", "global", "local", "global")
        default_layer_types("gemma3", 6)[4:]              -> ("local", "global")
        default_layer_types("gemma3", 2, windowed=False)  -> ("global", "global")
    """
    period = period or FAMILY_DEFAULTS[family]["global_every"]
    if not windowed:
        period = 1
    return tuple("global" if (i + 1) % period == 0 else "local" for i in range(num_layers))


def field_defaults(config_class):
    """{field: default} of a config class: what parsers take where a file says nothing."""
    return {f.name: f.default for f in dataclasses.fields(config_class)
            if f.default is not dataclasses.MISSING}


def family_config(family, **fields):
    """A GemmaConfig of `family`: `fields` as given, the rest from FAMILY_DEFAULTS[family]."""
    traits = {k: v for k, v in FAMILY_DEFAULTS[family].items() if k != "global_every"}
    fields = {**traits, **fields}
    if fields["rope_base_local"] is None:
        fields["rope_base_local"] = fields["rope_base_global"]
    if "layer_types" not in fields:
        fields["layer_types"] = default_layer_types(
            family, fields["num_layers"], windowed=fields["sliding_window"] is not None)
    return GemmaConfig(family=family, **fields)


def _gemma1(d, layers, heads, kv, ffn):
    return family_config("gemma", vocab_size=256_000, d_model=d, num_layers=layers,
                         num_heads=heads, num_kv_heads=kv, head_dim=256, ffn_dim=ffn)


def _gemma2(d, layers, heads, kv, head_dim, ffn, scalar):
    return family_config("gemma2", vocab_size=256_000, d_model=d, num_layers=layers,
                         num_heads=heads, num_kv_heads=kv, head_dim=head_dim, ffn_dim=ffn,
                         query_pre_attn_scalar=scalar, max_position=8192)


def _gemma3(d, layers, ffn, window):
    return family_config("gemma3", vocab_size=262_144, d_model=d, num_layers=layers,
                         num_heads=4, num_kv_heads=1, head_dim=256, ffn_dim=ffn,
                         sliding_window=window, query_pre_attn_scalar=256.0,
                         max_position=32_768)


PRESETS = {
    "gemma-2b": _gemma1(2048, 18, 8, 1, 16384),
    "gemma-7b": _gemma1(3072, 28, 16, 16, 24576),
    "gemma2-2b": _gemma2(2304, 26, 8, 4, 256, 9216, 256.0),
    "gemma2-9b": _gemma2(3584, 42, 16, 8, 256, 14336, 256.0),  # 256, not D/N = 224 (docs/numerics.md#query-scale)
    "gemma2-27b": _gemma2(4608, 46, 32, 16, 128, 36864, 144.0),  # D/N = 144, not H = 128
    "gemma3-270m": _gemma3(640, 18, 2048, window=512),
    "gemma3-1b": _gemma3(1152, 26, 6912, window=512),
    "recurrentgemma-2b": GriffinConfig(256_000, 2560, 26, 10, 2560, 7680),
    "recurrentgemma-9b": GriffinConfig(256_000, 4096, 38, 16, 4096, 12288),
}


def preset(name):
    """The configuration of a released size by name, e.g. preset("gemma2-9b")."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}") from None


def __getattr__(name):
    # The HF config.json parsers moved to minigemma.formats.hf_config (format knowledge); old
    # imports `from minigemma.models.config import config_from_hf...` keep working meanwhile.
    if name in ("config_from_hf", "config_from_hf_recurrent_gemma"):
        from minigemma.formats import hf_config
        return getattr(hf_config, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
