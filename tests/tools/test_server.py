"""The OpenAI-compatible server, driven by the official `openai` client.

A tiny random-weight Gemma 3 with the real vocabulary and tokenizer serves: answers are checked
against the same model's own generate/chat, so "correct" means "what minigemma gives directly".
"""
import concurrent.futures
import json
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from minigemma.model import Model

from helpers.random_models import build, tiny_config, tiny_params

openai = pytest.importorskip("openai")
uvicorn = pytest.importorskip("uvicorn")

MODEL_ID = "tiny-gemma3"


@pytest.fixture(scope="module")
def tiny(real_model):
    config = tiny_config("gemma3", vocab=262_144, num_layers=2, window=4, max_position=96)
    return Model(build(config, tiny_params(config, seed=7, std=0.3)), real_model.tokenizer)


@pytest.fixture(scope="module")
def server(tiny):
    """The server on a free port of 127.0.0.1, in a thread; records the batch of each forward."""
    from minigemma.tools.server import build_app
    batches = []
    original = tiny.network.forward

    def recording(ids, positions=None, cache=None, last_only=False):
        batches.append(int(np.asarray(ids).shape[0]))
        return original(ids, positions, cache, last_only)
    tiny.network.forward = recording
    config = uvicorn.Config(build_app(tiny, MODEL_ID), host="127.0.0.1", port=0,
                            log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not srv.started:
        assert time.time() < deadline, "the server did not start"
        time.sleep(0.05)
    port = srv.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}", batches
    srv.should_exit = True
    thread.join(timeout=10)
    tiny.network.forward = original


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server[0] + "/v1", api_key="unused", max_retries=0)


def test_models_lists_the_served_model(client):
    assert [m.id for m in client.models.list().data] == [MODEL_ID]


def test_completion_equals_generate_and_reports_usage(client, tiny):
    prompt = "The river bends"
    expected = tiny.generate(prompt, max_new_tokens=8, temperature=0.0)
    out = client.completions.create(model=MODEL_ID, prompt=prompt, max_tokens=8, temperature=0)
    assert out.choices[0].text == expected
    assert out.choices[0].finish_reason in ("length", "stop")
    n_prompt = len(tiny.tokenizer.encode(prompt))
    assert out.usage.prompt_tokens == n_prompt
    assert out.usage.total_tokens == n_prompt + out.usage.completion_tokens
    if out.choices[0].finish_reason == "length":
        assert out.usage.completion_tokens == 8


def test_streamed_completion_joins_to_the_whole(client, tiny):
    kw = dict(model=MODEL_ID, prompt="Once upon", max_tokens=10, temperature=0)
    whole = client.completions.create(**kw).choices[0].text
    chunks = list(client.completions.create(stream=True, **kw))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole
    assert chunks[-1].choices[0].finish_reason in ("length", "stop")


def test_chat_equals_model_chat_streaming_and_not(client, tiny):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    expected = tiny.chat(messages, max_new_tokens=6)
    out = client.chat.completions.create(model=MODEL_ID, messages=messages, max_tokens=6,
                                         temperature=0)
    assert out.choices[0].message.role == "assistant"
    assert out.choices[0].message.content == expected
    stream = client.chat.completions.create(model=MODEL_ID, messages=messages, max_tokens=6,
                                            temperature=0, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected
    assert chunks[-1].usage.completion_tokens == out.usage.completion_tokens


def test_concurrent_clients_are_batched_and_each_answer_is_right(server, client, tiny):
    prompts = [f"Story {i}: the {w}" for i, w in enumerate(
        ["cat", "dog", "boat", "mill", "river", "lamp", "tide", "town", "bread", "quay"])]
    expected = {p: tiny.generate(p, max_new_tokens=12) for p in prompts}
    batches = server[1]
    batches.clear()

    def ask(p):
        if len(p) % 2:  # half of the clients stream
            chunks = client.completions.create(model=MODEL_ID, prompt=p, max_tokens=12,
                                               temperature=0, stream=True)
            return "".join(c.choices[0].text for c in chunks if c.choices)
        return client.completions.create(model=MODEL_ID, prompt=p, max_tokens=12,
                                         temperature=0).choices[0].text
    with concurrent.futures.ThreadPoolExecutor(len(prompts)) as pool:
        answers = dict(zip(prompts, pool.map(ask, prompts)))
    assert answers == expected  # no request lost, each its own answer
    assert max(batches) > 1, "concurrent requests were never decoded in one forward"


def test_n_seed_stop_and_logprobs(client, tiny):
    kw = dict(model=MODEL_ID, prompt="A list:", max_tokens=8, temperature=1.0, seed=3, n=3)
    first, again = client.completions.create(**kw), client.completions.create(**kw)
    texts = [c.text for c in first.choices]
    assert texts == [c.text for c in again.choices] and len(texts) == 3
    assert [c.index for c in first.choices] == [0, 1, 2]
    assert len(set(texts)) > 1  # choice i samples with seed + i
    greedy = client.completions.create(model=MODEL_ID, prompt="A list:", max_tokens=8,
                                       temperature=0).choices[0].text
    assert len(greedy) > 3
    cut = client.completions.create(model=MODEL_ID, prompt="A list:", max_tokens=8,
                                    temperature=0, stop=[greedy[2:4]]).choices[0]
    assert cut.text == greedy[:greedy.find(greedy[2:4])] and cut.finish_reason == "stop"
    lp = client.completions.create(model=MODEL_ID, prompt="A list:", max_tokens=4,
                                   temperature=0, logprobs=2).choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 4
    assert all(len(top) <= 2 and max(top.values()) == pytest.approx(best, abs=1e-9)
               for top, best in zip(lp.top_logprobs, lp.token_logprobs))  # greedy: the top one


@pytest.mark.parametrize("kwargs, error", [
    (dict(model="no-such-model"), "NotFoundError"),
    (dict(temperature=5.0), "BadRequestError"),
    (dict(top_p=0.0), "BadRequestError"),
    (dict(max_tokens=0), "BadRequestError"),
    (dict(max_tokens=10_000), "BadRequestError"),
    (dict(n=0), "BadRequestError"),
    (dict(presence_penalty=1.0), "BadRequestError"),
    (dict(prompt="word " * 200), "BadRequestError"),
])
def test_bad_requests_get_openai_errors_and_the_server_keeps_serving(client, kwargs, error):
    args = dict(model=MODEL_ID, prompt="Hi", max_tokens=4)
    args.update(kwargs)
    with pytest.raises(getattr(openai, error)) as info:
        client.completions.create(**args)
    body = info.value.body
    assert isinstance(body, dict) and body["message"] and body["type"]
    assert 400 <= info.value.status_code < 500
    assert client.completions.create(model=MODEL_ID, prompt="Hi", max_tokens=2).choices


def test_malformed_bodies_and_paths_get_json_errors(server, client):
    base = server[0]
    for method, path, content in [("POST", "/v1/completions", b"{not json"),
                                  ("POST", "/v1/chat/completions", b'{"model": "x"}'),
                                  ("POST", "/v1/chat/completions",
                                   b'{"model": "tiny-gemma3", "messages": [{"role": "tool"}]}'),
                                  ("GET", "/v1/nowhere", None)]:
        request = urllib.request.Request(base + path, data=content, method=method,
                                         headers={"content-type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=30)
        assert 400 <= info.value.code < 500, (path, info.value.code)
        assert json.loads(info.value.read())["error"]["message"]
    assert client.models.list().data


def test_serve_listens_on_localhost_by_default():
    from minigemma.tools.cli import build_parser
    args = build_parser().parse_args(["serve"])
    assert args.host == "127.0.0.1" and args.port == 8000
