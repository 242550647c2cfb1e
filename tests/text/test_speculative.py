"""Speculative decoding by prompt lookup: greedy output is plain greedy's, and under sampling the
acceptance rule leaves the distribution of the output unchanged (tested statistically)."""
import numpy as np
import pytest

from minigemma.model import Model
from minigemma.text.generation import BatchGenerator, Row
from minigemma.text.sampling import Sampler, SamplingParams, probabilities
from minigemma.text.speculative import PromptLookup, draft, verify

from helpers.random_models import build, tiny_config, tiny_params

REPETITIVE = [2] + [10, 11, 12, 13, 14, 15] * 4 + [10, 11]  # prompt lookup finds drafts here


def tiny(family, vocab=97, std=0.25, seed=11, **overrides):
    config = tiny_config(family, vocab=vocab, **{"max_position": 96, **overrides})
    return Model(build(config, tiny_params(config, seed=seed, std=std)))


def test_draft_takes_what_followed_the_latest_match_of_the_longest_ngram():
    assert draft([5, 6, 7, 9, 5, 6], PromptLookup(2), 2) == [7, 9]
    assert draft([1, 2, 3, 1, 2, 4, 1, 2], PromptLookup(3), 3) == [4, 1, 2]  # latest match
    assert draft([1, 2, 3, 9, 2, 3, 7, 2, 3], PromptLookup(2, max_ngram=3), 5) == [7, 2]
    assert draft([7, 8, 9], PromptLookup(4), 4) == []  # nothing repeats
    assert draft([4, 4, 4], PromptLookup(4), 1) == [4]  # limited by what may still be emitted
    assert draft([4, 4, 4], PromptLookup(4), 0) == []


@pytest.mark.parametrize("family", ["gemma", "gemma2", "gemma3"])
def test_greedy_speculative_equals_plain_greedy(family):
    m = tiny(family)
    prompts = [REPETITIVE, [2, 30, 31, 32, 30, 31], REPETITIVE[:9]]
    plain = [m.generate_ids(p, 24, stop_ids=set()) for p in prompts]
    for k in (1, 3, 6):
        assert m.generate_ids(prompts, 24, stop_ids=set(), speculative=k) == plain
        assert m.last_stats.drafted > 0
    assert [m.generate_ids(p, 24, stop_ids=set(), speculative=True) for p in prompts] == plain


def test_speculative_stops_and_budgets_like_plain():
    m = tiny("gemma3")
    plain = m.generate_ids(REPETITIVE, 20, stop_ids=set())
    for budget in (1, 2, 5, 13):
        assert m.generate_ids(REPETITIVE, budget, stop_ids=set(), speculative=4) == plain[:budget]
    stop = plain[7]
    assert m.generate_ids(REPETITIVE, 20, stop_ids={stop}, speculative=4) == \
        plain[:plain.index(stop)]


def test_speculative_logprobs_equal_plain_ones():
    m = tiny("gemma2")
    ids_plain, plain = m.generate_ids(REPETITIVE, 10, stop_ids=set(), logprobs=2)
    ids_spec, spec = m.generate_ids(REPETITIVE, 10, stop_ids=set(), logprobs=2, speculative=4)
    assert ids_spec == ids_plain
    np.testing.assert_allclose([e.logprob for e in spec], [e.logprob for e in plain], atol=2e-5)


def test_griffin_refuses_speculative_decoding():
    import minigemma
    from minigemma.models.config import GriffinConfig
    config = GriffinConfig(vocab_size=97, d_model=32, num_layers=3, num_heads=2, lru_width=32,
                           ffn_dim=32, attention_window=5, num_kv_heads=1, max_position=64)
    m = minigemma.random_model(config, seed=0)
    with pytest.raises(ValueError, match="recurrent state"):
        m.generate_ids([2, 3, 4, 2, 3], 5, speculative=True)


def _fits(counts, expected_probs, z=3.29):
    """Pearson's chi-square test of `counts` against `expected_probs` at p ≈ 5e-4: cells with an
    expected count below 5 are pooled, and the statistic is compared with the chi-square
    quantile by the Wilson–Hilferty approximation (z: the normal quantile)."""
    n = counts.sum()
    expected = expected_probs * n
    small = expected < 5
    obs = np.append(counts[~small], counts[small].sum())
    exp = np.append(expected[~small], expected[small].sum())
    assert obs[exp == 0].sum() == 0, "a token of probability 0 was emitted"
    obs, exp = obs[exp > 0], exp[exp > 0]
    statistic = float(((obs - exp) ** 2 / exp).sum())
    df = obs.size - 1
    quantile = df * (1 - 2 / (9 * df) + z * (2 / (9 * df)) ** 0.5) ** 3
    return statistic < quantile


def test_the_acceptance_rule_keeps_the_sampling_distribution():
    """verify() alone, on fixed logits: every emitted token is distributed as plain sampling
    from p, with drafts that p likes, dislikes or excludes (top-k)."""
    rng = np.random.default_rng(0)
    V = 6
    logits = rng.normal(size=(3, V)) * 1.5  # rows: after context, after d1, after d1 d2
    params = SamplingParams(temperature=0.9, top_k=4, seed=1)
    drafts = [int(np.argmax(logits[0])), int(np.argmin(logits[1]))]  # likely, then excluded
    sampler = Sampler(params)
    n = 20_000
    first = np.zeros(V, dtype=np.int64)
    second_after_d1 = np.zeros(V, dtype=np.int64)
    for _ in range(n):
        out = verify(sampler, logits, drafts, [])
        first[out[0]] += 1
        if out[0] == drafts[0]:
            second_after_d1[out[1]] += 1
    p0 = probabilities(logits[0], params)
    p1 = probabilities(logits[1], params, [drafts[0]])
    assert _fits(first, p0)
    assert _fits(second_after_d1, p1)
    assert second_after_d1[drafts[1]] == 0  # a draft outside top-k is never accepted


def test_sampled_speculative_output_is_distributed_as_plain_sampling():
    """End to end on a tiny model with a 5-token vocabulary: the joint distribution of the
    first three new tokens (the 2nd and 3rd come from verified drafts) matches the exact one
    computed from the model's logits."""
    m = tiny("gemma3", vocab=5, std=0.15, seed=3, window=4)
    prompt = [2, 3, 4, 1, 3, 4, 1, 3, 4]
    params = SamplingParams(temperature=1.0)
    V = 5
    exact = np.zeros((V, V, V))
    p_a = probabilities(m.logits(prompt)[-1], params)
    for a in range(V):
        p_b = probabilities(m.logits(prompt + [a])[-1], params)
        for b in range(V):
            exact[a, b] = p_a[a] * p_b[b] * probabilities(m.logits(prompt + [a, b])[-1], params)
    n = 6000
    gen = BatchGenerator(m, speculative=PromptLookup(3))
    rows = [Row(prompt, 3, Sampler(SamplingParams(temperature=1.0, seed=s)), set())
            for s in range(n)]
    out = [[] for _ in range(n)]
    events = gen.add(rows)
    while True:
        for e in events:
            out[e.row].append(e.token)
        if not gen.active:
            break
        events = gen.step()
    assert gen.stats.drafted > 0 and 0 < gen.stats.accepted < gen.stats.drafted
    counts = np.zeros(V ** 3, dtype=np.int64)
    for a, b, c in out:
        counts[(a * V + b) * V + c] += 1
    assert _fits(counts, exact.reshape(-1))


def test_real_model_speculative_greedy_is_plain_greedy(real_model):
    passage = ("The river bends past the old mill, where workers once ground wheat into flour "
               "for the town. In the evening the lamps are lit one by one along the quay.")
    prompt = f"Copy this sentence exactly.\n{passage}\nCopy: The river bends"
    plain = real_model.generate(prompt, max_new_tokens=16)
    assert real_model.generate(prompt, max_new_tokens=16, speculative=True) == plain
    stats = real_model.last_stats
    assert stats.drafted > 0 and stats.accepted > 0
    assert stats.decode_steps < stats.new_tokens - 1  # some steps emitted several tokens
