"""Batched generation: rows of different lengths decoded together give what each gives alone.

Greedy ids must be identical on NumPy (the batched forward sums in another order, so logits
agree to float32 rounding, not bitwise: CONSISTENCY_ATOL), and within the tolerance table on
the other backends. Tiny random models with a 97-token vocabulary keep this fast; no tokenizer.
"""
import numpy as np
import pytest

from minigemma.model import Model
from minigemma.models.config import GriffinConfig
from minigemma.models.griffin import Griffin
from minigemma.models.random_weights import random_params
from minigemma.text.generation import BatchGenerator, Row
from minigemma.text.sampling import Sampler, SamplingParams

from helpers.random_models import build, tiny_config, tiny_params
from helpers.tolerances import BACKEND_MODEL_ATOL, CONSISTENCY_ATOL

# rows of different lengths, longer than the tiny windows (5) so the rings wrap
PROMPTS = [[2, 11, 12, 13], [2] + list(range(20, 37)), [2, 5], [2] + list(range(40, 49))]


def tiny_gemma(family, backend="numpy", **overrides):
    config = tiny_config(family, **{"max_position": 64, **overrides})
    return Model(build(config, tiny_params(config, seed=11, std=0.25), backend))


def tiny_griffin():
    config = GriffinConfig(vocab_size=97, d_model=32, num_layers=3, num_heads=2, lru_width=40,
                           ffn_dim=48, attention_window=5, num_kv_heads=1, max_position=64)
    params = random_params(Griffin.parameter_shapes(config), seed=5, std=0.25)
    return Model(Griffin(config, params, __import__("minigemma").get_backend("numpy")))


MODELS = {"gemma": lambda: tiny_gemma("gemma"), "gemma2": lambda: tiny_gemma("gemma2"),
          "gemma3": lambda: tiny_gemma("gemma3"), "griffin": tiny_griffin}


@pytest.fixture(scope="module", params=sorted(MODELS))
def model(request):
    return MODELS[request.param]()


def test_greedy_batch_equals_one_at_a_time(model):
    alone = [model.generate_ids(p, 14, stop_ids=set()) for p in PROMPTS]
    together = model.generate_ids(PROMPTS, 14, stop_ids=set())
    assert together == alone
    assert model.last_stats.rows == len(PROMPTS) and model.last_stats.new_tokens == 14 * 4


def test_decode_steps_are_one_forward_for_all_rows(model):
    shapes = []
    original = model.network.forward

    def recording(ids, positions=None, cache=None, last_only=False):
        shapes.append(tuple(np.asarray(ids).shape))
        return original(ids, positions, cache, last_only)
    model.network.forward = recording
    try:
        model.generate_ids(PROMPTS, 5, stop_ids=set())
    finally:
        model.network.forward = original
    assert shapes == [(1, len(p)) for p in PROMPTS] + [(len(PROMPTS), 1)] * 4


def test_rows_stop_on_their_own(model):
    alone = [model.generate_ids(p, 12, stop_ids=set()) for p in PROMPTS]
    stop = alone[1][3]  # row 1 stops at its 4th token; the others at that id if they meet it
    expected = [a[:a.index(stop)] if stop in a else a for a in alone]
    assert model.generate_ids(PROMPTS, 12, stop_ids={stop}) == expected
    budgets = model.generate_ids(PROMPTS, 0, stop_ids=set())
    assert budgets == [[], [], [], []]


def test_rows_joining_a_running_batch_get_their_own_answer(model):
    """The server's case: a request arrives while others are being decoded."""
    alone = [model.generate_ids(p, 10, stop_ids=set()) for p in PROMPTS]
    gen, out = BatchGenerator(model), {}
    for prompt in PROMPTS:
        for event in gen.add([Row(prompt, 10, Sampler(SamplingParams()))]) + gen.step():
            out.setdefault(event.row, []).append(event.token)
    while gen.active:
        for event in gen.step():
            out.setdefault(event.row, []).append(event.token)
    assert [out[i] for i in range(len(PROMPTS))] == alone
    assert gen.ended == {i: "length" for i in range(len(PROMPTS))}


def test_batched_logprobs_agree_with_alone_to_float32_rounding(model):
    alone = [model.generate_ids(p, 6, stop_ids=set(), logprobs=3)[1] for p in PROMPTS]
    together = [r[1] for r in model.generate_ids(PROMPTS, 6, stop_ids=set(), logprobs=3)]
    for a_row, b_row in zip(alone, together):
        assert [e.top_ids for e in a_row] == [e.top_ids for e in b_row]
        np.testing.assert_allclose([e.top_logprobs for e in a_row],
                                   [e.top_logprobs for e in b_row],
                                   atol=CONSISTENCY_ATOL["float32"])


def test_sampled_rows_with_a_seed_equal_the_row_alone():
    m = tiny_gemma("gemma3")
    kw = dict(stop_ids=set(), temperature=1.0, top_p=0.9, seed=4)
    assert m.generate_ids(PROMPTS, 8, **kw) == [m.generate_ids(p, 8, **kw) for p in PROMPTS]


def test_long_generation_grows_the_cache_instead_of_allocating_the_context():
    m = tiny_gemma("gemma", max_position=256)
    gen = BatchGenerator(m)
    gen.add([Row(PROMPTS[0], 200, Sampler(SamplingParams()))])
    slots = gen.cache.layers[0].positions.shape[1]
    assert slots < 64  # not the whole 256-position context up front
    while gen.active:
        gen.step()
    assert gen.stats.new_tokens == 200 and gen.cache.layers[0].positions.shape[1] >= 204


def test_batched_greedy_on_other_backends_is_within_the_tolerance_table(backend):
    if backend.name == "numpy":
        pytest.skip("the NumPy reference is the other side of the comparison")
    reference, fast = tiny_gemma("gemma3"), tiny_gemma("gemma3", backend=backend.name)
    expected = [reference.generate_ids(p, 6, stop_ids=set(), logprobs=2) for p in PROMPTS]
    got = fast.generate_ids(PROMPTS, 6, stop_ids=set(), logprobs=2)
    for (ids_ref, ev_ref), (ids_fast, ev_fast) in zip(expected, got):
        assert ids_fast == ids_ref
        np.testing.assert_allclose([e.logprob for e in ev_fast], [e.logprob for e in ev_ref],
                                   atol=BACKEND_MODEL_ATOL["float32"])


def test_the_real_model_takes_a_list_of_prompts(real_model):
    prompts = ["The capital of France is", "1, 2, 3, 4,"]
    alone = [real_model.generate(p, max_new_tokens=3) for p in prompts]
    assert real_model.generate(prompts, max_new_tokens=3) == alone


def test_stop_strings_and_chats_in_a_batch(real_model):
    config = tiny_config("gemma3", vocab=262_144, num_layers=2, window=4, max_position=64)
    m = Model(build(config, tiny_params(config, seed=3, std=0.3)), real_model.tokenizer)
    prompts = ["Tell me", "Once", "A story about the sea"]
    kw = dict(max_new_tokens=16, temperature=1.0, seed=2)
    full = [m.generate(p, **kw) for p in prompts]
    stop = full[0][2:4]
    alone = [m.generate(p, stop=[stop], **kw) for p in prompts]
    assert alone[0] == full[0][:full[0].find(stop)]
    assert m.generate(prompts, stop=[stop], **kw) == alone
    pieces = list(m.stream(prompts, stop=[stop], **kw))
    assert ["".join(p for j, p in pieces if j == i) for i in range(3)] == alone
    chats = [[{"role": "user", "content": "Say hi."}], [{"role": "user", "content": "2+2?"}]]
    assert m.chat(chats, max_new_tokens=5) == [m.chat(c, max_new_tokens=5) for c in chats]
    streamed = list(m.chat(chats, max_new_tokens=5, stream=True))
    assert ["".join(p for j, p in streamed if j == i) for i in range(2)] == m.chat(
        chats, max_new_tokens=5)


def test_generate_ids_needs_no_tokenizer_and_checks_its_input():
    m = tiny_gemma("gemma3")
    assert m.tokenizer is None
    assert len(m.generate_ids([2, 7, 9], 4, stop_ids=set())) == 4
    with pytest.raises(ValueError, match="prompt ids"):
        m.generate_ids([2, 500], 4)
    with pytest.raises(ValueError, match="empty"):
        m.generate_ids([], 4)
    with pytest.raises(ValueError, match="max_new_tokens"):
        m.generate_ids([2, 3], -1)
