"""The Model's study surface: hidden states, the unembedding, random models."""
import numpy as np
import pytest

import minigemma
from minigemma.models.config import GriffinConfig


def tiny_gemma3():
    return minigemma.preset("gemma3-270m").replace(num_layers=3, vocab_size=301,
                                                   layer_types=("local", "local", "global"),
                                                   sliding_window=2)


def tiny_griffin():
    return GriffinConfig(vocab_size=301, d_model=32, num_layers=3, num_heads=4, lru_width=32,
                         ffn_dim=48, attention_window=3)


@pytest.mark.parametrize("make", [tiny_gemma3, tiny_griffin])
def test_unembedding_the_last_hidden_state_gives_the_logits(make):
    model = minigemma.random_model(make(), seed=4)
    ids = [2, 17, 40, 3, 99, 250]
    states = model.hidden_states(ids)
    assert states.shape == (model.config.num_layers + 1, len(ids), model.config.d_model)
    np.testing.assert_array_equal(model.unembed(states[-1]), model.logits(ids))
    # layer 0 of the stream is the scaled embedding, so its rows differ only by the token
    assert not np.allclose(states[0, 1], states[0, 2])


def test_random_models_are_reproducible_and_seeded():
    a, b, c = (minigemma.random_model(tiny_gemma3(), seed=s) for s in (1, 1, 2))
    ids = [2, 5, 6]
    np.testing.assert_array_equal(a.logits(ids), b.logits(ids))
    assert not np.allclose(a.logits(ids), c.logits(ids))


def test_hidden_states_refuse_what_logits_refuse():
    model = minigemma.random_model(tiny_gemma3())
    with pytest.raises(ValueError, match="1-D sequence of token ids"):
        model.hidden_states([[2, 3]])
