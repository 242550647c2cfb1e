"""The whole network's backward (minigemma.training.backward, .objective): finite differences in
float64 on tiny random models of every family, consistency with the network's own forward,
and the Numba kernels' gradients against the NumPy reference's."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minigemma
from minigemma.backends import available_backends, get_backend
from minigemma.backends.reference import NumpyBackend
from minigemma.model import Model
from minigemma.models.config import GemmaConfig, GriffinConfig
from minigemma.models.gemma import Transformer
from minigemma.models.griffin import Griffin
from minigemma.models.random_weights import random_params
from minigemma.training.backward import forward_trunk
from minigemma.training.losses import cross_entropy, sample_teacher
from minigemma.training.objective import network_loss_and_grad

from helpers.finite_differences import FLOAT64, check_gradients

V = 61


def gemma_config(family, num_heads=4, num_kv_heads=2, head_dim=6, d_model=20, num_layers=2):
    kinds = {"gemma": ("global",) * num_layers,
             "gemma2": tuple("local" if i % 2 == 0 else "global" for i in range(num_layers)),
             "gemma3": tuple("global" if i == num_layers - 1 else "local"
                             for i in range(num_layers))}[family]
    return GemmaConfig(family=family, vocab_size=V, d_model=d_model, num_layers=num_layers,
                       num_heads=num_heads, num_kv_heads=num_kv_heads, head_dim=head_dim,
                       ffn_dim=18, layer_types=kinds,
                       sliding_window=None if family == "gemma" else 3, max_position=64,
                       qk_norm=family == "gemma3", post_norms=family != "gemma",
                       attn_softcap=2.0 if family == "gemma2" else None,
                       final_softcap=3.0 if family == "gemma2" else None,
                       rope_base_global=1e6 if family == "gemma3" else 1e4,
                       rope_base_local=1e4)


def griffin_config(num_layers=3):
    return GriffinConfig(vocab_size=V, d_model=16, num_layers=num_layers, num_heads=2,
                         lru_width=14, ffn_dim=10, attention_window=3, final_softcap=4.0,
                         max_position=64)


CONFIGS = {"gemma": lambda: gemma_config("gemma"), "gemma2": lambda: gemma_config("gemma2"),
           "gemma3": lambda: gemma_config("gemma3"), "recurrentgemma": griffin_config}


def network(config, backend, dtype=np.float32, seed=1):
    cls = Griffin if isinstance(config, GriffinConfig) else Transformer
    params = random_params(cls.parameter_shapes(config), seed=seed)
    return cls(config, {k: v.astype(dtype) for k, v in params.items()}, backend)


def float64_backend():
    """The NumPy reference on an array module whose float32 is float64 (see finite_differences)."""
    be = NumpyBackend()
    be.xp = FLOAT64
    return be


def teacher_for(kind, ids, rng):
    if kind == "next-token":
        return None, 1.0
    logits = 2 * rng.standard_normal((*ids.shape, V))
    if kind == "dense":
        return logits, 1.6
    return sample_teacher(logits.reshape(-1, V), k=5, seed=2, temperature=1.6), 1.6


@pytest.mark.parametrize("kind", ["next-token", "dense", "sparse"])
@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_gradients_match_finite_differences(family, kind):
    rng = np.random.default_rng(0)
    net = network(CONFIGS[family](), float64_backend(), np.float64)
    ids = rng.integers(1, V, size=(2, 7))  # longer than every window
    teacher, tau = teacher_for(kind, ids, rng)
    _, grads = network_loss_and_grad(net, ids, teacher, tau)
    assert set(grads) == set(net.params)
    names, params = list(net.params), dict(net.params)

    def loss(*arrays):
        net.params = dict(zip(names, arrays))
        return network_loss_and_grad(net, ids, teacher, tau)[0]
    try:
        check_gradients(loss, [params[n] for n in names], [grads[n] for n in names], rng, 1e-6)
    finally:
        net.params = params


@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_trunk_and_head_are_the_networks_forward(family):
    be = get_backend("numpy")
    net = network(CONFIGS[family](), be)
    ids = np.random.default_rng(3).integers(0, V, size=(2, 9))
    logits, _ = net.forward(ids)
    h, _ = forward_trunk(net, ids)
    head = be.linear(be.rms_norm(h, net.params["final_norm"], net.config.rms_eps),
                     net.params["embedding"])
    if net.config.final_softcap is not None:
        head = be.softcap(head, net.config.final_softcap)
    np.testing.assert_array_equal(head, logits)  # the same ops in the same order
    loss, _ = network_loss_and_grad(net, ids)
    expected = cross_entropy(logits[:, :-1].reshape(-1, V), ids[:, 1:].reshape(-1))
    assert abs(loss - expected) <= 1e-6 * expected


def test_public_loss_and_grad_returns_numpy_float32_by_name():
    net = network(CONFIGS["gemma3"](), get_backend("numpy"))
    model = Model(net)
    ids = np.arange(1, 11)
    loss, grads = minigemma.loss_and_grad(model, ids)  # one sequence, [T]
    assert isinstance(loss, float)
    assert list(grads) == list(net.params)
    for name, g in grads.items():
        assert isinstance(g, np.ndarray) and g.dtype == np.float32
        assert g.shape == net.params[name].shape
    loss2, _ = minigemma.loss_and_grad(model, ids[None])
    assert loss2 == loss


def test_errors_name_what_is_wrong():
    net = network(CONFIGS["gemma3"](), get_backend("numpy"))
    with pytest.raises(ValueError, match="at least 2 tokens"):
        network_loss_and_grad(net, np.array([[2]]))
    with pytest.raises(ValueError, match="rows"):
        network_loss_and_grad(net, np.ones((2, 4), int),
                              sample_teacher(np.zeros((3, V)), 2, seed=0))
    with pytest.raises(ValueError, match=r"\[B, T, V\]"):
        network_loss_and_grad(net, np.ones((2, 4), int), np.zeros((2, 5, V)))
    with pytest.raises(ValueError, match="temperature"):
        network_loss_and_grad(net, np.ones((1, 4), int), np.zeros((1, 4, V)), temperature=0)
    net.params["layers.0.q_proj"] = net.params["layers.0.q_proj"].astype(np.float16)
    with pytest.raises(ValueError, match="layers.0.q_proj"):
        network_loss_and_grad(net, np.ones((1, 4), int))


@pytest.mark.skipif(available_backends()["numba"] is not None, reason="numba unavailable")
@settings(max_examples=6)
@given(st.sampled_from(sorted(CONFIGS)), st.sampled_from(["next-token", "sparse"]),
       st.integers(0, 1000))
def test_numba_gradients_match_the_reference(family, kind, seed):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, V, size=(2, 8))
    teacher, tau = teacher_for(kind, ids, rng)
    results = [network_loss_and_grad(network(CONFIGS[family](), get_backend(name), seed=seed),
                                     ids, teacher, tau) for name in ("numpy", "numba")]
    (loss_ref, ref), (loss, ours) = results
    assert abs(loss - loss_ref) <= 1e-5 * loss_ref
    for name, g in ref.items():
        err = np.abs(ours[name] - g).max() / max(1e-6, np.abs(g).max())
        assert err <= 1e-4, f"{family} {kind}: {name} relative error {err:.3g}"
