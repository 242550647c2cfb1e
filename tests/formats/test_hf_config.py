"""HF config.json parsing, and the family defaults it shares with the presets and the GGUF reader."""
import pytest

from minigemma.formats.hf_config import config_from_hf
from minigemma.models.config import FAMILY_DEFAULTS, PRESETS, default_layer_types, preset


def test_layer_pattern_rule():
    assert default_layer_types("gemma", 3) == ("global",) * 3
    assert default_layer_types("gemma2", 4) == ("local", "global", "local", "global")
    g3 = default_layer_types("gemma3", 18)
    assert [i for i, kind in enumerate(g3) if kind == "global"] == [5, 11, 17]
    assert default_layer_types("gemma3", 7)[6] == "local"  # a depth not a multiple of 6
    assert default_layer_types("gemma3", 6, period=3) == ("local", "local", "global") * 2
    assert default_layer_types("gemma2", 4, windowed=False) == ("global",) * 4


@pytest.mark.parametrize("name", [n for n in PRESETS if not n.startswith("recurrentgemma")])
def test_presets_follow_the_family_defaults(name):
    config = preset(name)
    traits = FAMILY_DEFAULTS[config.family]
    for field in ("qk_norm", "post_norms", "attn_softcap", "final_softcap", "rope_base_global"):
        assert getattr(config, field) == traits[field], field
    assert config.layer_types == default_layer_types(config.family, config.num_layers)


transformers = pytest.importorskip("transformers")


@pytest.mark.parametrize("hf_class, name", [("GemmaConfig", "gemma-7b"),
                                            ("Gemma2Config", "gemma2-2b")])
def test_hf_default_configs_are_the_presets(hf_class, name):
    """HF's default GemmaConfig / Gemma2Config describe Gemma 7B / Gemma 2 2B."""
    hf = getattr(transformers, hf_class)().to_dict()
    assert config_from_hf(hf) == preset(name)


def test_a_file_that_leaves_out_family_traits_gets_the_family_defaults():
    hf = transformers.Gemma2Config().to_dict()
    for key in ("layer_types", "sliding_window", "attn_logit_softcapping",
                "final_logit_softcapping"):
        hf.pop(key, None)
    assert config_from_hf(hf) == preset("gemma2-2b")


def test_gemma3_without_a_window_is_all_global():
    """All-global layer types need no window. Without layer types HF's rule makes sliding
    layers, which HF cannot run without a window: refused, as HF refuses it."""
    hf = transformers.Gemma3TextConfig(num_hidden_layers=4).to_dict()
    hf["layer_types"] = ["full_attention"] * 4
    hf["sliding_window"] = None
    config = config_from_hf(hf)
    assert config.layer_types == ("global",) * 4 and config.sliding_window is None
    hf.pop("layer_types")
    with pytest.raises(ValueError, match="sliding_window is null"):
        config_from_hf(hf)
