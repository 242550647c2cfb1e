"""Generation: sampling wired to the model, stop rules, streaming, chat format, bad input.

A tiny random-weight model with the real Gemma 3 vocabulary (262 144 rows, D = 32) and the real
tokenizer keeps these tests fast; the real model's continuations are checked against HF in
test_real_model.py.
"""
import numpy as np
import pytest

from minigemma.model import Model
from minigemma.text.generation import chat_prompt

from helpers.random_models import build, tiny_config, tiny_params


@pytest.fixture(scope="module")
def tiny(real_model):
    config = tiny_config("gemma3", vocab=262_144, num_layers=2, window=4, max_position=64)
    return Model(build(config, tiny_params(config, seed=3, std=0.3)), real_model.tokenizer)


def test_stream_pieces_join_to_generate(tiny):
    kw = dict(max_new_tokens=12, temperature=0.9, seed=5)
    assert "".join(tiny.stream("Hello there", **kw)) == tiny.generate("Hello there", **kw)


def test_same_seed_same_text_and_seeds_differ(tiny):
    kw = dict(max_new_tokens=10, temperature=1.0)
    assert tiny.generate("A", seed=1, **kw) == tiny.generate("A", seed=1, **kw)
    assert len({tiny.generate("A", seed=s, **kw) for s in range(5)}) > 1


def test_top_k_one_is_greedy(tiny):
    assert tiny.generate("Why", max_new_tokens=8, temperature=0.7, top_k=1, seed=3) == \
        tiny.generate("Why", max_new_tokens=8)


def test_prefill_is_one_batched_forward(tiny):
    calls = []
    original = tiny.network.forward

    def counting(ids, positions=None, cache=None, last_only=False):
        calls.append(np.asarray(ids).shape)
        return original(ids, positions, cache, last_only)
    tiny.network.forward = counting
    try:
        tiny.generate("one two three four five", max_new_tokens=4, stop_ids=set())
    finally:
        tiny.network.forward = original
    prompt_len = len(tiny.tokenizer.encode("one two three four five"))
    assert calls == [(1, prompt_len)] + [(1, 1)] * 3
    assert tiny.last_stats.new_tokens == 4 and tiny.last_stats.prompt_tokens == prompt_len


def test_stop_string_cuts_the_text_before_it(tiny):
    full = tiny.generate("Tell me", max_new_tokens=20, temperature=1.0, seed=2)
    assert len(full) > 4
    stop = full[2:4]
    expected = full[:full.find(stop)]
    kw = dict(max_new_tokens=20, temperature=1.0, seed=2, stop=[stop])
    assert tiny.generate("Tell me", **kw) == expected
    assert "".join(tiny.stream("Tell me", **kw)) == expected


def test_stop_ids_end_generation(tiny):
    first = tiny.tokenizer.encode(tiny.generate("Go", max_new_tokens=1), add_bos=False)
    greedy_first = tiny.generate("Go", max_new_tokens=1)
    assert greedy_first and first
    assert tiny.generate("Go", max_new_tokens=5, stop_ids={first[0]}) == ""


def test_generation_stops_at_the_end_of_the_context(tiny):
    prompt = "word " * 20
    n_prompt = len(tiny.tokenizer.encode(prompt))
    tiny.generate(prompt, max_new_tokens=500, stop_ids=set())
    assert tiny.last_stats.new_tokens == tiny.config.max_position - n_prompt


@pytest.mark.parametrize("kwargs, match", [
    (dict(temperature=-1.0), "temperature"), (dict(top_p=1.5), "top_p"),
    (dict(top_k=-2), "top_k"), (dict(min_p=2.0), "min_p"),
    (dict(repetition_penalty=0.0), "repetition_penalty"), (dict(max_new_tokens=-1), "max_new_tokens"),
])
def test_invalid_sampling_arguments(tiny, kwargs, match):
    with pytest.raises(ValueError, match=match):
        tiny.generate("Hi", **kwargs)


def test_empty_and_too_long_prompts(tiny):
    with pytest.raises(ValueError, match="empty"):
        tiny.generate("")
    with pytest.raises(ValueError, match="context"):
        tiny.generate("word " * 100)


def test_chat_prompt_format():
    text = chat_prompt([{"role": "system", "content": "Be brief."},
                        {"role": "user", "content": " Hi "},
                        {"role": "assistant", "content": "Hello."},
                        {"role": "user", "content": "Bye"}])
    assert text == ("<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n"
                    "<start_of_turn>model\nHello.<end_of_turn>\n"
                    "<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n")
    with pytest.raises(ValueError, match="alternate"):
        chat_prompt([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
    with pytest.raises(ValueError, match="last chat message"):
        chat_prompt([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}])


def test_chat_encodes_turn_markers_as_their_ids(tiny):
    tok = tiny.tokenizer
    ids = tok.encode(chat_prompt([{"role": "user", "content": "Hi"}]), parse_special=True)
    assert ids[:2] == [tok.bos_id, tok.start_of_turn_id]
    assert tok.end_of_turn_id in ids and ids.count(tok.bos_id) == 1
    assert isinstance(tiny.chat([{"role": "user", "content": "Hi"}], max_new_tokens=3), str)


def test_real_model_says_something_sensible(real_model):
    text = real_model.generate("The capital of France is", max_new_tokens=8)
    assert "Paris" in text or "capital" in text
