"""Oracles for RecurrentGemma: tiny random-weight HF `RecurrentGemmaForCausalLM` models and the
official `recurrentgemma` PyTorch `Griffin` on the same weights, against minigemma.

Each HF model is saved with save_pretrained, converted with `minigemma.convert` and loaded with
`minigemma.load`; the official model gets the same weights under its own names, which are
converted by minigemma's official-format converter. Sequences are longer than every window, so
the two window conventions (HF: W keys, official: W + 1) are both exercised.
"""
import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytestmark = pytest.mark.oracle  # against HF transformers and the official recurrentgemma

import minigemma  # noqa: E402
from minigemma.formats.native import WEIGHTS_FILE  # noqa: E402
from minigemma.formats.recurrentgemma import convert_official  # noqa: E402
from minigemma.formats.safetensors import SafetensorsFile  # noqa: E402
from minigemma.models.griffin import Griffin  # noqa: E402

from helpers import hf_tiny_griffin as tiny  # noqa: E402
from helpers.tolerances import CONSISTENCY_ATOL, ORACLE_ATOL  # noqa: E402

T = 29  # longer than every window in tiny.CASES
ATOL = ORACLE_ATOL["float32"]


def batch_ids(seed, batch=2):
    rng = np.random.default_rng(seed)
    return np.concatenate([np.full((batch, 1), 2), rng.integers(0, tiny.VOCAB, (batch, T - 1))],
                          axis=1)


def decode(model, ids, prompt=4):
    """Logits of `ids` from a prefill of `prompt` tokens then one token at a time, cached."""
    cache = model.new_cache(batch=ids.shape[0], max_len=64)
    out, cache = model.forward(ids[:, :prompt], cache=cache)
    steps = [out]
    for t in range(prompt, ids.shape[1]):
        out, cache = model.forward(ids[:, t:t + 1], cache=cache)
        steps.append(out)
    return np.concatenate(steps, axis=1)


@pytest.fixture(scope="module", params=sorted(tiny.CASES))
def hf_pair(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    hf_model = tiny.make_hf_model(request.param, root / "hf")
    minigemma.convert(root / "hf", root / "mg", progress=False)
    return request.param, hf_model, minigemma.load(root / "mg"), root


def test_logits_match_hf(hf_pair):
    case, hf_model, model, _ = hf_pair
    ids = batch_ids(1)
    expected = tiny.hf_logits(hf_model, ids)
    ours, _ = model.forward(ids)
    assert np.abs(expected).max() > 1.0, "logits too small to reveal a wrong component"
    err = np.abs(ours - expected).max()
    assert err <= ATOL, f"{case}: max abs logit error against HF {err:.3g}"


def test_cached_decode_matches_hf(hf_pair):
    case, hf_model, model, _ = hf_pair
    ids = batch_ids(2)
    err = np.abs(decode(model, ids) - tiny.hf_logits(hf_model, ids)).max()
    assert err <= ATOL, f"{case}: cached decode error against HF {err:.3g}"


def test_converted_checkpoint_works_through_the_public_api(hf_pair):
    case, hf_model, model, root = hf_pair
    assert model.config.window_includes_extra_key is False  # HF: W keys per query
    assert model.config.attention_window == tiny.CASES[case]["attention_window_size"]
    ids = batch_ids(3, batch=1)[0].tolist()
    expected = tiny.hf_logits(hf_model, [ids])[0]
    logits = minigemma.load(root / "mg").logits(ids)
    assert logits.dtype == np.float32 and logits.shape == (T, tiny.VOCAB)
    assert np.abs(logits - expected).max() <= ATOL
    np.testing.assert_allclose(decode(model, np.array([ids]), prompt=1)[0], logits,
                               atol=CONSISTENCY_ATOL["float32"], rtol=0)


def test_bf16_storage_keeps_small_tensors_in_float32(hf_pair, tmp_path):
    case, hf_model, _, root = hf_pair
    minigemma.convert(root / "hf", tmp_path / "bf16", dtype="bf16", progress=False)
    weights = SafetensorsFile(tmp_path / "bf16" / WEIGHTS_FILE)
    for name in weights.names():
        matrix = name == "embedding" or name.endswith("_proj")
        assert weights.dtype(name) == ("BF16" if matrix else "F32"), name
    ids = batch_ids(4, batch=1)
    err = np.abs(minigemma.load(tmp_path / "bf16").forward(ids)[0] -
                 tiny.hf_logits(hf_model, ids)).max()
    assert err < 0.5, f"{case}: bf16 weights moved the logits by {err:.3g}"


def test_hf_converter_is_strict(hf_pair, tmp_path):
    import json
    import shutil
    _, _, _, root = hf_pair
    shutil.copytree(root / "hf", tmp_path / "hf")
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    cfg["lru_width"] = cfg["lru_width"] + cfg["num_attention_heads"]
    (tmp_path / "hf" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="has shape"):
        minigemma.convert(tmp_path / "hf", tmp_path / "mg", progress=False)
    cfg["num_hidden_layers"] -= 1
    (tmp_path / "hf" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="config.json says [0-9]+ layers, the tensors hold"):
        minigemma.convert(tmp_path / "hf", tmp_path / "mg", progress=False)
    assert not (tmp_path / "mg").exists()


# --- the official recurrentgemma implementation ------------------------------------------

@pytest.fixture(scope="module", params=tiny.OFFICIAL_CASES)
def official_pair(request, tmp_path_factory):
    pytest.importorskip("recurrentgemma.torch",
                        reason="the official oracle needs `pip install recurrentgemma[jax,torch]`")
    import torch
    case = request.param
    root = tmp_path_factory.mktemp(f"official-{case}")
    hf_model = tiny.make_hf_model(case)
    state = tiny.official_state_dict(hf_model)
    official = tiny.make_official_model(case, state)
    torch.save(state, root / "griffin.pt")
    c = tiny.CASES[case]
    convert_official(root / "griffin.pt", root / "mg", attention_window=c["attention_window_size"],
                     final_softcap=c["logits_soft_cap"])
    return case, official, hf_model, state, minigemma.load(root / "mg"), root


def test_logits_match_official(official_pair):
    case, official, _, _, model, _ = official_pair
    assert model.config.window_includes_extra_key is True  # official: W + 1 keys per query
    ids = batch_ids(5)
    expected = tiny.official_logits(official, ids)
    assert np.abs(expected).max() > 1.0
    err = np.abs(model.forward(ids)[0] - expected).max()
    assert err <= ATOL, f"{case}: max abs logit error against the official model {err:.3g}"


def test_cached_decode_matches_official_cached_decode(official_pair):
    case, official, _, _, model, _ = official_pair
    ids = batch_ids(6)
    err = np.abs(decode(model, ids, prompt=5) - tiny.official_decode_logits(official, ids, 5)).max()
    assert err <= ATOL, f"{case}: cached decode error against the official model {err:.3g}"


def test_official_and_hf_differ_only_by_the_window_convention(official_pair):
    case, official, hf_model, _, model, _ = official_pair
    W = tiny.CASES[case]["attention_window_size"]
    ids = batch_ids(7)
    ref, hf = tiny.official_logits(official, ids), tiny.hf_logits(hf_model, ids)
    assert np.abs(ref[:, :W] - hf[:, :W]).max() <= ATOL  # same while the sequence fits W
    assert np.abs(ref[:, W:] - hf[:, W:]).max() > 1e-2  # W + 1 keys vs W keys after that
    as_hf = Griffin(model.config.replace(window_includes_extra_key=False), model.network.params,
                    model.backend)
    assert np.abs(as_hf.forward(ids)[0] - hf).max() <= ATOL


def test_in_memory_state_dict_and_convert_dispatch(official_pair, tmp_path):
    case, _, _, state, model, root = official_pair
    c = tiny.CASES[case]
    convert_official(state, tmp_path / "mem", attention_window=c["attention_window_size"],
                     final_softcap=c["logits_soft_cap"])
    ids = batch_ids(8, batch=1)
    np.testing.assert_array_equal(minigemma.load(tmp_path / "mem").forward(ids)[0],
                                  model.forward(ids)[0])
    minigemma.convert(root / "griffin.pt", tmp_path / "dispatch", progress=False)
    config = minigemma.load(tmp_path / "dispatch").config  # window and cap: released defaults
    assert (config.attention_window, config.final_softcap) == (2048, 30.0)
    assert config.window_includes_extra_key and config.lru_width == c["lru_width"]


def test_official_converter_is_strict(official_pair, tmp_path):
    _, _, _, state, _, _ = official_pair
    extra = dict(state, **{"blocks.0.unexpected": state["final_norm.scale"]})
    with pytest.raises(ValueError, match="does not know"):
        convert_official(extra, tmp_path / "a")
    missing = {k: v for k, v in state.items() if k != "blocks.0.mlp_block.ffw_down.bias"}
    with pytest.raises(ValueError, match="missing"):
        convert_official(missing, tmp_path / "b")
    wrong = dict(state, **{"final_norm.scale": state["final_norm.scale"][:-1]})
    with pytest.raises(ValueError, match="has shape"):
        convert_official(wrong, tmp_path / "c")
    assert not any(tmp_path.iterdir())
