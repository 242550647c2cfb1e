"""Oracle: the real Gemma 3 270M (GGUF from PyPI) in minigemma against HF transformers.

HF loads the same GGUF (dequantized to float32, eager attention). minigemma converts it keeping
the llama.cpp blocks and dequantizes them at load. Prompts are longer than the 512-token window
of the local layers, so both sides of the window are compared.
"""
import numpy as np
import pytest

from minigemma.text.generation import GenerationStats, generate_ids
from minigemma.text.sampling import Sampler, SamplingParams

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.oracle, pytest.mark.slow]  # the real model against HF transformers

from helpers.long_text import LONG_TEXT  # noqa: E402


def hf_logits(hf, ids):
    with torch.no_grad():
        return hf(input_ids=torch.tensor([ids]), use_cache=False).logits[0].float().numpy()


def hf_greedy(hf, ids, n):
    with torch.no_grad():
        out = hf.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False,
                          eos_token_id=[1, 106], pad_token_id=0)
    return out[0, len(ids):].tolist()


def our_greedy(model, ids, n):
    stats = GenerationStats()
    return list(generate_ids(model, ids, n, Sampler(SamplingParams()), {1, 106}, stats))


def test_long_prompt_logits_match_hf(real_model, hf_real_model):
    ids = real_model.tokenizer.encode(LONG_TEXT)
    assert len(ids) > 600, "the prompt must be longer than the 512-token window"
    expected = hf_logits(hf_real_model, ids)
    ours = real_model.logits(ids)
    sampled = [0, 1, 10, 100, 300, 510, 511, 512, 513, 600, len(ids) - 1]
    err = np.abs(ours[sampled] - expected[sampled]).max()
    assert err <= 1e-3, f"max abs logit error {err:.3g} at sampled positions"
    assert np.array_equal(ours.argmax(-1), expected.argmax(-1)), "argmax differs somewhere"


@pytest.mark.parametrize("prompt", [
    "The capital of France is",
    "def fibonacci(n):\n    ",
    "Once upon a time, in a small village by the sea,",
    "1, 1, 2, 3, 5, 8, 13,",
])
def test_greedy_continuations_match_hf(real_model, hf_real_model, prompt):
    ids = real_model.tokenizer.encode(prompt)
    expected = hf_greedy(hf_real_model, ids, 20)
    assert our_greedy(real_model, ids, 20) == expected


def test_greedy_continuation_of_a_long_prompt_matches_hf(real_model, hf_real_model):
    ids = real_model.tokenizer.encode(LONG_TEXT)
    assert our_greedy(real_model, ids, 16) == hf_greedy(hf_real_model, ids, 16)
