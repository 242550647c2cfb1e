"""Model configurations: frozen, validated dataclasses with a named preset per released size.

A config describes the model only — never the backend, dtype policy or sampling. Numbers and
their sources: docs/architecture.md#hyperparameters. What a Gemma family shares is written once,
here: FAMILY_DEFAULTS, and the local/global rule default_layer_types
(docs/numerics.md#local-global-order). The presets, the HF config.json parser
(minigemma.formats.hf_config) and the GGUF reader all use them.
"""
import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

FAMILIES = ("gemma", "gemma2", "gemma3")
LAYER_KINDS = ("global", "local")
GELU_APPROXIMATIONS = ("tanh", "none")  # torch's names: tanh GELU, exact (erf) GELU
ROPE_SCALINGS = ("linear", "yarn")
INT_LIMIT = 2**31 - 1  # sizes, positions and token ids fit an int32
MAX_LAYERS = 2**16  # far beyond any model; bounds what a corrupt file can make us build
_F32 = np.finfo(np.float32)


# One check per kind of field. Each returns the value normalised (NumPy scalars -> Python) or
# raises a ValueError naming the field; `where` names the config class in the message.

def _integer(where, name, value, low=1, high=INT_LIMIT):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{where} field {name} must be an integer, got {value!r}")
    if not low <= value <= high:
        kind = {1: "a positive integer", 0: "a non-negative integer"}.get(low, "an integer")
        raise ValueError(f"{where} field {name} must be {kind} in [{low}, {high}], got "
                         f"{value!r}")
    return int(value)


def _float32(where, name, value, low=float(_F32.tiny)):
    """A real number that float32 holds, at least `low` (by default: positive and normal)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer,
                                                                     np.floating)):
        raise ValueError(f"{where} field {name} must be a number, got {value!r}")
    value = float(value)
    if not (math.isfinite(value) and low <= value <= float(_F32.max)):
        raise ValueError(f"{where} field {name} must be a finite float32 number of at least "
                         f"{low:g}, got {value!r}")
    return value


def _optional(check, where, name, value, *args):
    return None if value is None else check(where, name, value, *args)


def _boolean(where, name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{where} field {name} must be true or false, got {value!r}")
    return bool(value)


def _choice(where, name, value, choices):
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{where} field {name} must be one of {', '.join(map(repr, choices))}, "
                         f"got {value!r}")
    return value


def _names(where, name, value, choices):
    """A list or tuple of strings from `choices` -> a tuple."""
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{where} field {name} must be a list of strings, got {value!r}")
    bad = sorted(set(value) - set(choices))
    if bad:
        raise ValueError(f"{where} field {name} holds unknown kinds {bad}; expected "
                         f"{', '.join(map(repr, choices))}")
    return tuple(value)


def _set(config, **values):  # frozen dataclasses: normalised values are written this way
    for name, value in values.items():
        object.__setattr__(config, name, value)


class _ConfigFields:
    """What the configs share: JSON round trip, copies with changes, field checks."""

    @classmethod
    def from_dict(cls, d):
        """The config of a dict as `to_dict` writes it (config.json); ValueError for a key that
        is unknown or missing, or a field that does not validate."""
        if not isinstance(d, dict):
            raise ValueError(f"a {cls.__name__} is a JSON object, got {type(d).__name__}")
        d = cls._upgrade(dict(d))
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(fields))
        if unknown:
            raise ValueError(f"unknown config fields {unknown}")
        missing = [n for n, f in fields.items() if n not in d and f.default is dataclasses.MISSING]
        if missing:
            raise ValueError(f"config fields {missing} are missing")
        return cls(**d)

    @classmethod
    def _upgrade(cls, d):
        return d

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def _check_special_ids(self):
        where = type(self).__name__
        for name in ("bos_id", "eos_id", "pad_id"):
            value = _integer(where, name, getattr(self, name), 0, INT_LIMIT)
            if value >= self.vocab_size:
                raise ValueError(f"{where} field {name} must be a token id below vocab_size "
                                 f"({self.vocab_size}), got {value}")
            _set(self, **{name: value})


@dataclass(frozen=True)
class RopeScaling:
    """How a layer's RoPE is stretched beyond the context it was trained on, as HF's
    `rope_parameters` say it (docs/architecture.md#rope):

        linear  θ_i = p / factor · base^(−2i/d)                 position interpolation
        yarn    per-frequency blend of θ_i and θ_i / factor, and cos, sin × attention_factor
                (Peng et al. 2023, "YaRN", §3; HF `_compute_yarn_parameters`)

    original_context, beta_fast, beta_slow, truncate and attention_factor are YaRN's: the
    pre-training context, the rotation counts bounding the blend, whether the blend's bounds are
    rounded to whole dims, and the factor on cos and sin (None: YaRN's 0.1 ln(factor) + 1).
    """
    kind: str
    factor: float
    original_context: int | None = None
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    attention_factor: float | None = None
    truncate: bool = True

    def __post_init__(self):
        where = "RopeScaling"
        _set(self, kind=_choice(where, "kind", self.kind, ROPE_SCALINGS),
             factor=_float32(where, "factor", self.factor),
             beta_fast=_float32(where, "beta_fast", self.beta_fast),
             beta_slow=_float32(where, "beta_slow", self.beta_slow),
             attention_factor=_optional(_float32, where, "attention_factor",
                                        self.attention_factor),
             truncate=_boolean(where, "truncate", self.truncate))
        if self.kind == "yarn":
            _set(self, original_context=_integer(where, "original_context",
                                                 self.original_context))
        elif self.original_context is not None or self.attention_factor is not None:
            raise ValueError("RopeScaling: original_context and attention_factor are YaRN's; "
                             "linear scaling has only a factor")

    @classmethod
    def from_value(cls, value, field_name="rope_scaling"):
        """None, a RopeScaling, or its dict (config.json) -> None or a RopeScaling; errors
        name `field_name`, the config field that holds it."""
        if value is None or isinstance(value, cls):
            return value
        if not isinstance(value, dict):
            raise ValueError(f"GemmaConfig field {field_name} must be a JSON object or null, got "
                             f"{value!r:.80}")
        unknown = sorted(set(value) - {f.name for f in dataclasses.fields(cls)})
        if unknown or "kind" not in value or "factor" not in value:
            raise ValueError(f"GemmaConfig field {field_name} has the keys kind, factor and "
                             f"YaRN's original_context, beta_fast, beta_slow, attention_factor, "
                             f"truncate; got {sorted(value)}")
        try:
            return cls(**value)
        except ValueError as e:
            raise ValueError(f"GemmaConfig field {field_name}: {e}") from None


@dataclass(frozen=True)
class GemmaConfig(_ConfigFields):
    """One transformer decoder covering Gemma 1, 2 and 3 (text).

    Every field is checked here, once: its type, its range (sizes and ids fit an int32, reals
    are finite positive float32 numbers, ids lie in the vocabulary) and what the family fixes,
    as HF transformers builds each family (docs/architecture.md#hyperparameters): Gemma 1 has
    only global layers and neither soft-caps, post-norms nor QK-norm; Gemma 2 has post-norms and
    may cap scores and logits; Gemma 3 has post-norms and QK-norm and may cap only the logits
    (HF's Gemma 3 ignores `attn_logit_softcapping`, so no reference computes a score cap there).
    Gemma 1 and 2 have one RoPE for every layer; Gemma 3 has one per layer kind.
    """
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
    rope_scaling_global: RopeScaling | None = None  # None: plain RoPE
    rope_scaling_local: RopeScaling | None = None
    query_pre_attn_scalar: float | None = None  # score scale = scalar^-1/2; None -> head_dim
    attn_softcap: float | None = None
    final_softcap: float | None = None
    qk_norm: bool = False
    post_norms: bool = False  # Gemma 2/3 "sandwich" norms after attention and MLP
    gelu_approximate: str = "tanh"  # "tanh": every released Gemma; "none": the exact erf GELU
    rms_eps: float = 1e-6
    max_position: int = 8192
    bos_id: int = 2
    eos_id: int = 1
    pad_id: int = 0

    def __post_init__(self):
        w = "GemmaConfig"
        _set(self, family=_choice(w, "family", self.family, FAMILIES))
        _set(self, **{name: _integer(w, name, getattr(self, name))
                      for name in ("vocab_size", "d_model", "num_heads", "num_kv_heads",
                                   "head_dim", "ffn_dim", "max_position")})
        _set(self, num_layers=_integer(w, "num_layers", self.num_layers, 1, MAX_LAYERS))
        _set(self, layer_types=_names(w, "layer_types", self.layer_types, LAYER_KINDS),
             sliding_window=_optional(_integer, w, "sliding_window", self.sliding_window),
             rope_base_global=_float32(w, "rope_base_global", self.rope_base_global),
             rope_base_local=_float32(w, "rope_base_local", self.rope_base_local),
             rope_scaling_global=RopeScaling.from_value(self.rope_scaling_global,
                                                        "rope_scaling_global"),
             rope_scaling_local=RopeScaling.from_value(self.rope_scaling_local,
                                                       "rope_scaling_local"),
             query_pre_attn_scalar=_float32(w, "query_pre_attn_scalar",
                                            self.head_dim if self.query_pre_attn_scalar is None
                                            else self.query_pre_attn_scalar),
             attn_softcap=_optional(_float32, w, "attn_softcap", self.attn_softcap),
             final_softcap=_optional(_float32, w, "final_softcap", self.final_softcap),
             qk_norm=_boolean(w, "qk_norm", self.qk_norm),
             post_norms=_boolean(w, "post_norms", self.post_norms),
             gelu_approximate=_choice(w, "gelu_approximate", self.gelu_approximate,
                                      GELU_APPROXIMATIONS),
             rms_eps=_float32(w, "rms_eps", self.rms_eps))
        self._check_special_ids()
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"GemmaConfig: num_heads ({self.num_heads}) must be a multiple of "
                             f"num_kv_heads ({self.num_kv_heads})")
        if self.head_dim % 2:
            raise ValueError(f"GemmaConfig: head_dim must be even for RoPE, got {self.head_dim}")
        if len(self.layer_types) != self.num_layers:
            raise ValueError(f"GemmaConfig: layer_types has {len(self.layer_types)} entries for "
                             f"{self.num_layers} layers")
        if "local" in self.layer_types and self.sliding_window is None:
            raise ValueError("GemmaConfig: local layers need a sliding_window")
        self._check_family()

    def _check_family(self):
        """What HF's class for the family fixes (see the class docstring)."""
        f = self.family
        wanted = {"qk_norm": f == "gemma3", "post_norms": f != "gemma"}
        for name, value in wanted.items():
            if getattr(self, name) != value:
                raise ValueError(f"GemmaConfig: {name} is {value} in every {f} model, got "
                                 f"{getattr(self, name)}")
        if f == "gemma" and "local" in self.layer_types:
            raise ValueError("GemmaConfig: gemma (Gemma 1) has no local layers")
        if f == "gemma" and (self.attn_softcap or self.final_softcap):
            raise ValueError("GemmaConfig: gemma (Gemma 1) has no soft-caps; HF's Gemma 1 "
                             "ignores attn_softcap and final_softcap")
        if f == "gemma3" and self.attn_softcap is not None:
            raise ValueError("GemmaConfig: gemma3 has no attention soft-cap (attn_softcap); HF's "
                             "Gemma 3 ignores it and llama.cpp refuses it")
        if f != "gemma3" and (self.rope_base_local != self.rope_base_global
                              or self.rope_scaling_local != self.rope_scaling_global):
            raise ValueError(f"GemmaConfig: {f} has one RoPE for every layer: rope_base_local and "
                             f"rope_scaling_local must equal the global ones")

    @classmethod
    def _upgrade(cls, d):
        # Checkpoints written before RoPE scaling had a kind stored one linear factor.
        if "rope_scale_global" in d:
            factor = d.pop("rope_scale_global")
            if factor != 1.0:
                d.setdefault("rope_scaling_global", {"kind": "linear", "factor": factor})
                if d.get("family") != "gemma3":
                    d.setdefault("rope_scaling_local", {"kind": "linear", "factor": factor})
        return d

    @property
    def query_scale(self):
        return self.query_pre_attn_scalar ** -0.5

    def is_local(self, layer):
        return self.layer_types[layer] == "local"

    def rope_for(self, layer):
        """(base, scaling) of the rotary embedding in `layer`: scaling is a RopeScaling, or 1.0
        for plain RoPE (the `scale` of `minigemma.ops.rope.rope`)."""
        if self.is_local(layer):
            return self.rope_base_local, self.rope_scaling_local or 1.0
        return self.rope_base_global, self.rope_scaling_global or 1.0

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

    Every field is checked here, once, as in GemmaConfig.
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
        w = "GriffinConfig"
        _set(self, **{name: _integer(w, name, getattr(self, name))
                      for name in ("vocab_size", "d_model", "num_heads", "lru_width",
                                   "ffn_dim", "attention_window", "conv_width",
                                   "num_kv_heads", "max_position")})
        _set(self, num_layers=_integer(w, "num_layers", self.num_layers, 1, MAX_LAYERS))
        _set(self, family=_choice(w, "family", self.family, ("recurrentgemma",)),
             block_pattern=_names(w, "block_pattern", self.block_pattern, BLOCK_KINDS),
             rope_base=_float32(w, "rope_base", self.rope_base),
             partial_rotary_factor=_float32(w, "partial_rotary_factor",
                                            self.partial_rotary_factor),
             final_softcap=_optional(_float32, w, "final_softcap", self.final_softcap),
             rms_eps=_float32(w, "rms_eps", self.rms_eps),
             window_includes_extra_key=_boolean(w, "window_includes_extra_key",
                                                self.window_includes_extra_key))
        self._check_special_ids()
        if self.d_model % self.num_heads or self.lru_width % self.num_heads:
            raise ValueError(f"GriffinConfig: d_model ({self.d_model}) and lru_width "
                             f"({self.lru_width}) must be multiples of num_heads "
                             f"({self.num_heads})")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"GriffinConfig: num_heads ({self.num_heads}) must be a multiple of "
                             f"num_kv_heads ({self.num_kv_heads})")
        rotated = self.head_dim * self.partial_rotary_factor
        if self.partial_rotary_factor > 1 or rotated != int(rotated) or int(rotated) % 2:
            raise ValueError(f"GriffinConfig: RoPE rotates head_dim × partial_rotary_factor = "
                             f"{rotated} dims; that must be a positive even integer, at most "
                             f"head_dim")
        if not self.block_pattern:
            raise ValueError(f"GriffinConfig: block_pattern must be a non-empty list of "
                             f"{BLOCK_KINDS}")

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
