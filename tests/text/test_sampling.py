"""Tests for minigemma.text.sampling: each filter against a brute-force version written simply here."""
import math
import warnings

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from minigemma.text.sampling import (
    Sampler,
    SamplingParams,
    apply_repetition_penalty,
    apply_temperature,
    min_p_filter,
    probabilities,
    process_logits,
    softmax,
    top_k_filter,
    top_p_filter,
)

SETTINGS = settings(max_examples=60, deadline=None)


# Strategies and brute-force references

@st.composite
def logits_vectors(draw, max_size=300, scale=20.0, neg_inf=True, ties=True):
    """float32 [V] logits, 2 <= V <= max_size, from a seeded RNG or from hypothesis floats
    (the latter has many ties); optionally some (never all) entries are -inf."""
    size = draw(st.integers(2, max_size))
    if ties and draw(st.booleans()):
        x = draw(hnp.arrays(np.float32, size, elements=st.floats(-scale, scale, width=32)))
    else:
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        spread = draw(st.sampled_from([0.1, 1.0, 3.0, scale / 2]))
        x = np.clip(rng.normal(0.0, spread, size), -scale, scale).astype(np.float32)
    if neg_inf and draw(st.booleans()):
        idx = draw(st.lists(st.integers(0, size - 1), min_size=1, max_size=size - 1))
        x[idx] = -np.inf
    return x


def simple_softmax(x):
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - x.max())
    return e / e.sum()


def brute_force_top_p_count(probs, top_p):
    """How many tokens the nucleus keeps: walk the probabilities from largest to smallest."""
    total = 0.0
    for n, p in enumerate(sorted(probs, reverse=True), start=1):
        total += p
        if total >= top_p:
            return n
    return len(probs)


def kept(filtered):
    return np.asarray(filtered) > -np.inf


# Greedy

@SETTINGS
@given(logits_vectors())
def test_temperature_zero_is_argmax(x):
    sampler = Sampler(SamplingParams(temperature=0.0))
    assert sampler(x, []) == int(np.argmax(x))
    probs = probabilities(x, SamplingParams())
    assert probs[np.argmax(x)] == 1.0 and probs.sum() == 1.0


def test_greedy_ties_go_to_lowest_id():
    x = np.array([1.0, 3.0, 0.0, 3.0], np.float32)
    assert Sampler(SamplingParams())(x, []) == 1
    assert Sampler(SamplingParams(temperature=1.0, top_k=1, seed=0))(x, []) == 1


@SETTINGS
@given(logits_vectors(), st.floats(1e-3, 1e3), st.integers(0, 2**32 - 1))
def test_top_k_1_is_greedy(x, temperature, seed):
    sampler = Sampler(SamplingParams(temperature=temperature, top_k=1, seed=seed))
    assert all(sampler(x, []) == int(np.argmax(x)) for _ in range(5))


# Filters, each against a brute-force version

@SETTINGS
@given(logits_vectors(neg_inf=False), st.integers(1, 310))
def test_top_k_keeps_the_k_largest(x, k):
    mask = kept(top_k_filter(x, k))
    assert mask.sum() == min(k, x.size)
    assert x[mask].min() >= x[~mask].max(initial=-np.inf)
    # exact set: the k largest, ties at the boundary going to the lowest ids
    expected = np.argsort(-x.astype(np.float64), kind="stable")[:k]
    assert set(np.flatnonzero(mask)) == set(expected)
    if k < x.size and np.sort(x)[::-1][k - 1] != np.sort(x)[::-1][k]:  # no tie at the boundary
        assert set(np.flatnonzero(mask)) == set(np.argsort(x)[::-1][:k])


@SETTINGS
@given(logits_vectors(), st.integers(0, 310))
def test_top_k_with_neg_inf_and_off(x, k):
    filtered = top_k_filter(x, k)
    n_finite = int(kept(x).sum())
    if k == 0 or k >= x.size:
        np.testing.assert_array_equal(filtered, x)
    else:
        assert kept(filtered).sum() == min(k, n_finite)
    np.testing.assert_array_equal(filtered[kept(filtered)], x[kept(filtered)])  # values untouched
    np.testing.assert_array_equal(top_k_filter(x, None), x)


@SETTINGS
@given(logits_vectors(), st.floats(1e-6, 1.0))
def test_top_p_keeps_the_smallest_set_reaching_p(x, top_p):
    probs = simple_softmax(x)
    cumulative = np.cumsum(np.sort(probs)[::-1])
    assume(np.all(np.abs(cumulative - top_p) > 1e-9))  # skip cases decided by rounding
    mask = kept(top_p_filter(x, top_p))
    if top_p == 1.0:
        assert mask.sum() == kept(x).sum()
        return
    expected_count = min(brute_force_top_p_count(probs, top_p), int(kept(x).sum()))
    assert mask.sum() == expected_count
    assert mask[np.argmax(x)]  # the top token is always kept
    assert probs[mask].min() >= probs[~mask].max(initial=0.0)  # the most likely ones
    assert probs[mask].sum() >= top_p or mask.sum() == kept(x).sum()


def test_top_p_ties_and_edges():
    x = np.log(np.array([0.1, 0.4, 0.1, 0.4]))
    assert list(np.flatnonzero(kept(top_p_filter(x, 0.3)))) == [1]  # tie: lowest id first
    assert list(np.flatnonzero(kept(top_p_filter(x, 0.5)))) == [1, 3]
    assert list(np.flatnonzero(kept(top_p_filter(x, 0.85)))) == [0, 1, 3]
    assert kept(top_p_filter(x, 1e-9)).sum() == 1
    # mass exactly equal to p (0.25 + 0.25 is exact in binary): two tokens reach it, not three
    assert kept(top_p_filter(np.zeros(4), 0.5)).sum() == 2
    np.testing.assert_array_equal(top_p_filter(x, None), x)


@SETTINGS
@given(logits_vectors(), st.floats(0.0, 1.0))
def test_min_p_keeps_tokens_with_p_at_least_min_p_times_p_max(x, min_p):
    probs = simple_softmax(x)
    threshold = min_p * probs.max()
    assume(np.all(np.abs(probs - threshold) > 1e-12 * probs.max()) or min_p in (0.0, 1.0))
    mask = kept(min_p_filter(x, min_p))
    if min_p == 0.0:
        np.testing.assert_array_equal(mask, kept(x))
    else:
        np.testing.assert_array_equal(mask, probs >= threshold)
    assert mask[np.argmax(x)]
    np.testing.assert_array_equal(min_p_filter(x, None), x)


def test_min_p_example():
    x = np.log(np.array([0.5, 0.25, 0.05, 0.2]))
    assert list(np.flatnonzero(kept(min_p_filter(x, 0.4)))) == [0, 1, 3]
    assert list(np.flatnonzero(kept(min_p_filter(x, 1.0)))) == [0]


# The whole chain

sampling_params = st.builds(
    SamplingParams,
    temperature=st.floats(0.1, 5.0),
    top_k=st.one_of(st.none(), st.integers(0, 310)),
    top_p=st.one_of(st.none(), st.floats(0.01, 1.0)),
    min_p=st.one_of(st.none(), st.floats(0.0, 1.0)),
    repetition_penalty=st.floats(0.5, 2.0),
    seed=st.integers(0, 2**32 - 1),
)


@SETTINGS
@given(logits_vectors(), sampling_params, st.data())
def test_probabilities_sum_to_one_and_vanish_exactly_on_removed(x, params, data):
    # logits in [-20, 20], penalty in [0.5, 2] and temperature >= 0.1: no exp underflows to 0
    previous = data.draw(st.lists(st.integers(0, x.size - 1), max_size=10))
    probs = probabilities(x, params, previous)
    assert probs.dtype == np.float64 and probs.shape == x.shape
    assert abs(probs.sum() - 1.0) < 1e-12
    removed = process_logits(x, params, previous) == -np.inf
    np.testing.assert_array_equal(probs == 0.0, removed)
    assert not removed.all()
    # the chain, spelled out with the public pieces in the documented order
    y = apply_repetition_penalty(x, previous, params.repetition_penalty)
    y = apply_temperature(y, params.temperature)
    y = min_p_filter(top_p_filter(top_k_filter(y, params.top_k), params.top_p), params.min_p)
    np.testing.assert_array_equal(probs, softmax(y))


def test_order_of_operations():
    # repetition penalty happens before greedy: 2.0 -> 1.0 loses to 1.5
    x = np.array([2.0, 1.5, -1.0], np.float32)
    assert Sampler(SamplingParams(repetition_penalty=2.0))(x, [0]) == 1
    # temperature before top-p (transformers' order): at T=1 the nucleus for p=0.6 holds two
    # tokens (0.5 + 0.3); at T=0.5 the top token alone has 0.25/0.38 > 0.6
    x = np.log(np.array([0.5, 0.3, 0.2]))
    assert kept(process_logits(x, SamplingParams(temperature=1.0, top_p=0.6))).sum() == 2
    assert kept(process_logits(x, SamplingParams(temperature=0.5, top_p=0.6))).sum() == 1
    # temperature before min-p: 0.2/0.5 = 0.4 passes min_p=0.3 at T=1, 0.16 fails at T=0.5
    assert kept(process_logits(x, SamplingParams(temperature=1.0, min_p=0.3))).sum() == 3
    assert kept(process_logits(x, SamplingParams(temperature=0.5, min_p=0.3))).sum() == 2
    # top-k before top-p: the nucleus is computed on the renormalised top-k distribution
    p = process_logits(x, SamplingParams(temperature=1.0, top_k=2, top_p=0.6))
    assert kept(p).sum() == 1  # 0.5 / 0.8 = 0.625 >= 0.6
    # top-p before min-p: the nucleus of p=0.75 is 0.4 + 0.3 + 0.2; min-p=0.1 then removes only
    # the 0.01 tail. Min-p first would renormalise to 0.9 and the nucleus would stop at 0.7/0.9.
    x = np.log(np.array([0.4, 0.3, 0.2] + [0.01] * 10))
    p = process_logits(x, SamplingParams(temperature=1.0, top_p=0.75, min_p=0.1))
    assert list(np.flatnonzero(kept(p))) == [0, 1, 2]


# Seeds and the empirical distribution

@SETTINGS
@given(logits_vectors(max_size=50), sampling_params)
def test_same_seed_same_draws(x, params):
    a, b = Sampler(params), Sampler(params)
    assert [a(x, []) for _ in range(20)] == [b(x, []) for _ in range(20)]


def test_different_seeds_give_different_draws():
    x = np.zeros(100, np.float32)  # uniform over 100 tokens
    sequences = {tuple(Sampler(SamplingParams(temperature=1.0, seed=s))(x, []) for _ in range(50))
                 for s in range(10)}
    assert len(sequences) == 10


def chi_square_critical(df, z=3.719):
    """Wilson-Hilferty approximation of the chi-square quantile; z = 3.719 is p = 1e-4."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


@pytest.mark.parametrize("params, previous", [
    (SamplingParams(temperature=1.0, seed=1234), []),
    (SamplingParams(temperature=0.7, top_k=9, top_p=0.97, min_p=0.01, repetition_penalty=1.3,
                    seed=99), [0, 3, 3, 7]),
])
def test_empirical_frequencies_match_probabilities(params, previous):
    x = np.random.default_rng(7).normal(0.0, 1.5, 12).astype(np.float32)
    probs = probabilities(x, params, previous)
    sampler = Sampler(params)
    n = 20_000
    counts = np.bincount([sampler(x, previous) for _ in range(n)], minlength=x.size)
    assert counts[probs == 0].sum() == 0  # removed tokens are never drawn
    support = probs > 0
    expected = n * probs[support]
    chi2 = ((counts[support] - expected) ** 2 / expected).sum()
    # fixed seeds: deterministic; the bound would fail for a correct sampler 1 time in 10 000
    assert chi2 < chi_square_critical(int(support.sum()) - 1)


# Repetition penalty

@SETTINGS
@given(logits_vectors(), st.floats(1.01, 10.0), st.data())
def test_repetition_penalty_above_one(x, r, data):
    previous = data.draw(st.lists(st.integers(0, x.size - 1), min_size=1, max_size=20))
    seen = np.zeros(x.size, bool)
    seen[previous] = True
    y = apply_repetition_penalty(x, previous, r)
    x64 = x.astype(np.float64)
    np.testing.assert_array_equal(y[~seen], x64[~seen])  # other tokens untouched
    assert np.all(y[seen] <= x64[seen])  # no repeated logit goes up
    moved = seen & np.isfinite(x64) & (x64 != 0)
    assert np.all(y[moved] < x64[moved])  # ...and every nonzero finite one goes down
    before, after = softmax(x), softmax(y)
    tol = 1e-12
    assert after[seen].sum() <= before[seen].sum() + tol  # repeated tokens lose mass together
    assert np.all(after[~seen] >= before[~seen] * (1 - tol))  # the others gain it
    # one repeated token: its own probability never goes up
    i = previous[0]
    assert softmax(apply_repetition_penalty(x, [i], r))[i] <= before[i] * (1 + tol)


@SETTINGS
@given(logits_vectors(), st.floats(0.1, 0.99), st.data())
def test_repetition_penalty_below_one(x, r, data):
    previous = data.draw(st.lists(st.integers(0, x.size - 1), min_size=1, max_size=20))
    seen = np.zeros(x.size, bool)
    seen[previous] = True
    y = apply_repetition_penalty(x, previous, r)
    x64 = x.astype(np.float64)
    np.testing.assert_array_equal(y[~seen], x64[~seen])
    assert np.all(y[seen] >= x64[seen])
    before, after = softmax(x), softmax(y)
    tol = 1e-12
    assert after[seen].sum() >= before[seen].sum() - tol
    assert np.all(after[~seen] <= before[~seen] * (1 + tol))
    i = previous[0]
    assert softmax(apply_repetition_penalty(x, [i], r))[i] >= before[i] * (1 - tol)


@SETTINGS
@given(logits_vectors(), st.lists(st.integers(0, 1), max_size=5))
def test_repetition_penalty_one_is_identity(x, previous):
    np.testing.assert_array_equal(apply_repetition_penalty(x, previous, 1.0), x.astype(np.float64))
    params = SamplingParams(temperature=1.0, repetition_penalty=1.0)
    np.testing.assert_array_equal(probabilities(x, params, previous), probabilities(x, params))


def test_repetition_penalty_rule():
    x = np.array([2.0, -2.0, 0.0, 1.0], np.float32)
    np.testing.assert_array_equal(apply_repetition_penalty(x, [0, 1, 2, 0], 2.0), [1.0, -4.0, 0.0, 1.0])
    np.testing.assert_array_equal(apply_repetition_penalty(x, [0, 1], 0.5), [4.0, -1.0, 0.0, 1.0])
    # CTRL's rule is per logit: with several repeated tokens one of them can still gain
    # probability (here the zero logit, when the other repeated token drops from 2 to 1)
    assert softmax(apply_repetition_penalty(x, [0, 2], 2.0))[2] > softmax(x)[2]


# Validation

@pytest.mark.parametrize("name, value", [
    ("temperature", -0.1), ("temperature", float("inf")), ("temperature", float("nan")),
    ("temperature", "1"), ("top_k", -1), ("top_k", 2.5), ("top_k", True), ("top_p", 0.0),
    ("top_p", 1.5), ("top_p", float("nan")), ("min_p", -0.1), ("min_p", 1.01),
    ("repetition_penalty", 0.0), ("repetition_penalty", -1.0), ("repetition_penalty", float("inf")),
    ("seed", -1), ("seed", 1.5),
])
def test_invalid_params_raise_naming_the_argument(name, value):
    with pytest.raises(ValueError, match=name) as info:
        SamplingParams(**{name: value})
    assert repr(value) in str(info.value)


def test_valid_edge_params():
    SamplingParams(temperature=0, top_k=0, top_p=1.0, min_p=0.0, repetition_penalty=1e-3, seed=0)
    SamplingParams(temperature=1e6, top_k=10**9, top_p=1e-9, min_p=1.0, repetition_penalty=1e3)


@pytest.mark.parametrize("logits, previous, match", [
    (np.array([1.0, np.nan]), [], "NaN"),
    (np.array([]), [], "non-empty"),
    (np.zeros((2, 3)), [], "1-D"),
    (np.array([-np.inf, -np.inf]), [], "-inf"),
    (np.array([1.0, 2.0]), [2], "previous_ids"),
    (np.array([1.0, 2.0]), [-1], "previous_ids"),
])
def test_invalid_inputs_raise(logits, previous, match):
    for params in (SamplingParams(), SamplingParams(temperature=1.0, repetition_penalty=1.1)):
        with pytest.raises(ValueError, match=match):
            Sampler(params)(logits, previous)


# Extreme values

extreme_values = st.sampled_from([0.0, 1.0, -1.0, 1e30, -1e30, 3e38, -3e38, 1e-30, -np.inf, np.inf])


@settings(max_examples=150, deadline=None)
@given(
    st.lists(extreme_values, min_size=2, max_size=40).filter(lambda v: max(v) > -np.inf),
    st.builds(
        SamplingParams,
        temperature=st.sampled_from([0.0, 1e-300, 1e-30, 1e-3, 1.0, 1e30, 1e300]),
        top_k=st.one_of(st.none(), st.integers(0, 50)),
        top_p=st.one_of(st.none(), st.sampled_from([1e-9, 0.5, 0.999999, 1.0])),
        min_p=st.one_of(st.none(), st.sampled_from([0.0, 1e-9, 0.5, 1.0])),
        repetition_penalty=st.sampled_from([1e-300, 0.5, 1.0, 2.0, 1e300]),
        seed=st.integers(0, 10),
    ),
    st.lists(st.integers(0, 1), max_size=3),
)
def test_extreme_logits_give_valid_tokens_without_nans(values, params, previous):
    x = np.array(values, np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow / invalid-value warnings either
        probs = probabilities(x, params, previous)
        token = Sampler(params)(x, previous)
    assert np.all(np.isfinite(probs)) and np.all(probs >= 0)
    assert abs(probs.sum() - 1.0) < 1e-12
    assert 0 <= token < x.size and probs[token] > 0


def test_huge_logits_dominate():
    x = np.array([0.0, 1e30, -np.inf, 3e38, -3e38], np.float32)
    for params in (SamplingParams(), SamplingParams(temperature=2.0, seed=0)):
        probs = probabilities(x, params)
        assert probs[3] == 1.0 and Sampler(params)(x, []) == 3
    # with 3e38 repeated and penalised hard, 1e30 wins
    params = SamplingParams(temperature=1.0, repetition_penalty=1e10, seed=0)
    assert probabilities(x, params, [3])[1] == 1.0
    # +inf logits share all the mass
    probs = probabilities(np.array([np.inf, 1.0, np.inf]), SamplingParams(temperature=1.0))
    np.testing.assert_array_equal(probs, [0.5, 0.0, 0.5])


def test_gemma_sized_vocabulary():
    V = 262_144
    x = np.random.default_rng(0).normal(0.0, 3.0, V).astype(np.float32)
    x[:1000] = -np.inf
    order = np.argsort(-x.astype(np.float64), kind="stable")
    np.testing.assert_array_equal(np.flatnonzero(kept(top_k_filter(x, 64))), np.sort(order[:64]))
    probs = simple_softmax(x)
    mask = kept(top_p_filter(x, 0.5))
    assert mask.sum() == brute_force_top_p_count(probs[order[:5000]], 0.5)
    params = SamplingParams(temperature=0.8, top_k=64, top_p=0.9, min_p=0.05, seed=0)
    probs = probabilities(x, params, [int(order[0])])
    sampler = Sampler(params)
    tokens = [sampler(x, [int(order[0])]) for _ in range(20)]
    assert all(probs[t] > 0 for t in tokens) and 0 < (probs > 0).sum() <= 64
