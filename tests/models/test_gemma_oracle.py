"""Oracle: tiny random-weight HF Gemma / Gemma 2 / Gemma 3 models against minigemma.

Each HF model is saved with save_pretrained, converted with `minigemma.convert`, loaded with
`minigemma.load`, and both compute logits in float32 on sequences longer than the window.
"""
import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytestmark = pytest.mark.oracle  # against HF transformers

import minigemma  # noqa: E402

from helpers.hf_tiny_models import CASES, VOCAB, hf_logits, make_hf_model  # noqa: E402
from helpers.tolerances import CONSISTENCY_ATOL, ORACLE_ATOL  # noqa: E402

T = 23  # longer than every window in CASES


@pytest.fixture(scope="module", params=sorted(CASES))
def pair(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    hf_model = make_hf_model(request.param, root / "hf")
    minigemma.convert(root / "hf", root / "mg", progress=False)
    return request.param, hf_model, minigemma.load(root / "mg")


def test_logits_match_hf(pair):
    case, hf_model, model = pair
    rng = np.random.default_rng(1)
    ids = np.concatenate([[[2], [2]], rng.integers(0, VOCAB, size=(2, T - 1))], axis=1)
    expected = hf_logits(hf_model, ids)
    ours, _ = model.forward(ids)
    assert np.abs(expected).max() > 1.0, "logits too small to reveal a wrong component"
    err = np.abs(ours - expected).max()
    assert err <= ORACLE_ATOL["float32"], f"{case}: max abs logit error {err:.3g}"


def test_cached_decode_matches_hf(pair):
    case, hf_model, model = pair
    rng = np.random.default_rng(2)
    ids = np.concatenate([[2], rng.integers(0, VOCAB, size=T - 1)])
    expected = hf_logits(hf_model, ids[None])[0]
    cache = model.new_cache(batch=1, max_len=64)
    prompt = 4
    first, cache = model.forward(ids[None, :prompt], cache=cache)
    steps = [first[0]]
    for t in range(prompt, T):
        step, cache = model.forward(ids[None, t:t + 1], cache=cache)
        steps.append(step[0])
    ours = np.concatenate(steps, axis=0)
    err = np.abs(ours - expected).max()
    assert err <= ORACLE_ATOL["float32"], f"{case}: cached decode error {err:.3g}"


def test_logits_api_matches_forward(pair):
    _, _, model = pair
    ids = [2, 5, 7, 11, 13]
    full, _ = model.forward(np.array([ids]))
    np.testing.assert_allclose(model.logits(ids), full[0], atol=CONSISTENCY_ATOL["float32"], rtol=0)
