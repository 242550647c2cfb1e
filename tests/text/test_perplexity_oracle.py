"""Scoring against HF transformers: per-token log-probs, perplexity over one window and over a
sliding window (HF's recipe, BOS first in every window), on tiny HF models and the real one."""
import numpy as np
import pytest

import minigemma
from minigemma.model import Model
from minigemma.text.scoring import perplexity, token_logprobs

from helpers.hf_tiny_models import VOCAB, make_hf_model
from helpers.random_models import build, tiny_config, tiny_params

pytestmark = pytest.mark.oracle
torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

BOS = 2
CASES = ["gemma-mqa", "gemma2-gqa-headdim-scale", "gemma3-gqa"]


def hf_window_nll(hf_model, window, new):
    """HF's summed NLL of the last `new` tokens of `window`, with labels -100 before them (the
    recipe of transformers' "Perplexity of fixed-length models")."""
    ids = torch.tensor([window])
    labels = ids.clone()
    labels[:, :-new] = -100
    with torch.no_grad():
        loss = hf_model(input_ids=ids, labels=labels, use_cache=False).loss
    return float(loss) * new  # mean over the `new` predicted labels


def hf_perplexity(hf_model, text_ids, context, stride):
    """HF's sliding-window perplexity, each window [BOS] + text tokens (as minigemma's)."""
    total, scored, done = 0.0, 0, 0
    for begin in range(0, len(text_ids), stride):
        end = min(begin + context - 1, len(text_ids))
        new = end - done
        total += hf_window_nll(hf_model, [BOS] + text_ids[begin:end], new)
        scored, done = scored + new, end
        if end == len(text_ids):
            break
    return float(np.exp(total / scored))


@pytest.fixture(scope="module", params=CASES)
def pair(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    hf_model = make_hf_model(request.param, folder / "hf")
    ours = minigemma.load(minigemma.convert(folder / "hf", folder / "ours", progress=False),
                          backend="numpy")
    return hf_model, ours


def test_score_equals_hf_log_softmax(pair):
    hf_model, ours = pair
    ids = [BOS] + np.random.default_rng(1).integers(3, VOCAB, 30).tolist()
    with torch.no_grad():
        logits = hf_model(input_ids=torch.tensor([ids]), use_cache=False).logits[0].double()
    expected = torch.log_softmax(logits, -1)[torch.arange(len(ids) - 1), ids[1:]].numpy()
    np.testing.assert_allclose(ours.score(ids), expected, atol=1e-4)


def test_perplexity_of_one_window_is_hfs_loss(pair):
    hf_model, ours = pair
    ids = [BOS] + np.random.default_rng(2).integers(3, VOCAB, 50).tolist()
    with torch.no_grad():
        loss = float(hf_model(input_ids=torch.tensor([ids]), labels=torch.tensor([ids]),
                              use_cache=False).loss)
    result = perplexity(ours, ids, context=64)
    assert result.windows == 1 and result.tokens == 50
    assert result.perplexity == pytest.approx(np.exp(loss), rel=1e-4)


@pytest.mark.parametrize("context, stride", [(16, 8), (12, 11), (20, 5)])
def test_sliding_window_perplexity_matches_hf(pair, context, stride):
    hf_model, ours = pair
    text = np.random.default_rng(3).integers(3, VOCAB, 57).tolist()
    result = perplexity(ours, [BOS] + text, context=context, stride=stride)
    assert result.tokens == len(text)
    assert result.perplexity == pytest.approx(hf_perplexity(hf_model, text, context, stride),
                                              rel=1e-4)


def test_real_model_perplexity_matches_hf(real_model, hf_real_model):
    text = ("The river bends past the old mill, where workers once ground wheat into flour for "
            "the town. In the evening the lamps are lit one by one along the quay.")
    ids = real_model.tokenizer.encode(text)
    whole = perplexity(real_model, ids, context=len(ids))
    with torch.no_grad():
        loss = float(hf_real_model(input_ids=torch.tensor([ids]), labels=torch.tensor([ids])).loss)
    assert whole.perplexity == pytest.approx(np.exp(loss), rel=1e-4)
    sliding = perplexity(real_model, ids, context=16, stride=10)
    assert sliding.windows > 2
    assert sliding.perplexity == pytest.approx(hf_perplexity(hf_real_model, ids[1:], 16, 10),
                                               rel=1e-4)


def test_logprobs_of_generate_are_the_models_own():
    config = tiny_config("gemma3", max_position=64)
    m = Model(build(config, tiny_params(config, seed=4, std=0.25)))
    prompt = [BOS, 5, 6, 7]
    ids, tokens = m.generate_ids(prompt, 6, stop_ids=set(), logprobs=4)
    full = token_logprobs(m, prompt + ids, first=len(prompt))
    np.testing.assert_allclose([t.logprob for t in tokens], full, atol=1e-5)
    logits = m.logits(prompt + ids).astype(np.float64)
    for t, row in zip(tokens, logits[len(prompt) - 1:]):
        logp = row - row.max() - np.log(np.exp(row - row.max()).sum())
        order = np.argsort(-logp, kind="stable")[:4]
        assert list(t.top_ids) == order.tolist()
        np.testing.assert_allclose(t.top_logprobs, logp[order], atol=1e-5)
        assert t.token == t.top_ids[0]  # greedy


def test_perplexity_rejects_bad_windows():
    config = tiny_config("gemma3", max_position=64)
    m = Model(build(config, tiny_params(config, seed=4)))
    with pytest.raises(ValueError, match="context"):
        perplexity(m, [BOS, 3, 4], context=1000)
    with pytest.raises(ValueError, match="stride"):
        perplexity(m, [BOS, 3, 4], context=8, stride=8)
    with pytest.raises(ValueError, match="nothing to score"):
        perplexity(m, [BOS], context=8)
