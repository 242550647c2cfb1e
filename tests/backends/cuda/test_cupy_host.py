"""The CuPy backend's host side, without a GPU: `CupyBackend(xp=numpy, launcher=CpuLauncher())`.

The same class the GPU runs, with NumPy standing in for CuPy and the kernels running on CPU
threads from the same CUDA C (no sanitizer here: in-process, for speed; the sanitizers run in
test_cupy_kernels_on_cpu.py). What runs: upload in prepare_weight, the launch shapes, dtype and
contiguity conversion, the choice between kernel and reference paths, chunking, and the models'
KV-cache and recurrent-state updates through whole tiny models.
"""
import sys
import types

import numpy as np
import pytest

from minigemma.backends.cupy import backend as cupy_backend
from minigemma.backends.cupy.backend import ATTENTION_KERNEL_MAX_QUERIES, CupyBackend
from minigemma.backends.cupy.launches import GEMM_MIN_ROWS, BlockWeight
from minigemma.backends.reference import NumpyBackend
from minigemma.formats.gguf.blocks import BLOCK_FORMATS
from minigemma.ops.attention import EMPTY_SLOT
from minigemma.text.generation import GenerationStats, generate_ids
from minigemma.text.sampling import Sampler, SamplingParams

from helpers.backend_inputs import assert_close, quantized_params, rand, random_blocks
from helpers.random_models import build, tiny_config, tiny_params
from helpers.tolerances import BACKEND_MODEL_ATOL, BACKEND_OP_ATOL

REF = NumpyBackend()
KINDS = list(BLOCK_FORMATS)


@pytest.fixture(scope="module")
def be(cpu_launcher):
    return CupyBackend(xp=np, launcher=cpu_launcher)


def launched(be, since):
    """(kernel, grid, block) of the launches made after index `since`."""
    return [(k, g, b) for _, k, g, b in be.launches.launcher.launches[since:]]


# --------------------------------------------------------------------------- weights and linear

@pytest.mark.parametrize("kind", KINDS)
def test_block_weights_stay_compact(be, kind):
    w = random_blocks(kind, 3, 2, np.random.default_rng(0))
    prepared = be.prepare_weight(w)
    assert isinstance(prepared, BlockWeight) and prepared.kind == kind
    assert prepared.shape == w.shape and prepared.nbytes == w.blocks.nbytes  # not dequantized


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("lead", [(1,), (2, 5), (GEMM_MIN_ROWS + 3,)])
def test_linear_on_block_weights(be, kind, lead):
    rng = np.random.default_rng(len(lead))
    w = random_blocks(kind, 9, 2, rng)
    x = rand(rng, *lead, w.shape[1])
    expected = REF.linear(x, REF.prepare_weight(w))
    assert_close(REF, be.linear(x, be.prepare_weight(w)), expected, "quantized")


def test_linear_launch_shapes(be):
    """Decode: ceil(O / 4) blocks of 4 warps, one launch per 8 rows of x; prefill: one
    dequantize launch per tile, then a product."""
    rng = np.random.default_rng(1)
    w = be.prepare_weight(random_blocks("q8_0", 10, 1, rng))
    start = len(be.launches.launcher.launches)
    be.linear(rand(rng, 11, 32), w)
    assert launched(be, start) == [("matvec_q8_0", (3, 1, 1), (32, 4, 1))] * 2
    start = len(be.launches.launcher.launches)
    be.launches.tile_elements = 4 * 32  # 4 output rows per tile: 3 tiles for O = 10
    try:
        be.linear(rand(rng, GEMM_MIN_ROWS, 32), w)
    finally:
        be.launches.tile_elements = type(be.launches)(None, np).tile_elements
    assert [k for k, _, _ in launched(be, start)] == ["dequantize_rows_q8_0"] * 3


def test_linear_on_float_weights_and_its_checks(be):
    rng = np.random.default_rng(2)
    w = rand(rng, 7, 5).astype(np.float64)  # converted to float32 at load
    prepared = be.prepare_weight(w)
    assert prepared.dtype == np.float32 and prepared.flags.c_contiguous
    x = rand(rng, 2, 3, 5)
    assert_close(REF, be.linear(x, prepared), REF.linear(x, REF.prepare_weight(w)))
    with pytest.raises(ValueError, match="linear: x has 4 features"):
        be.linear(rand(rng, 2, 4), prepared)


def test_non_contiguous_and_other_dtypes_are_converted(be):
    rng = np.random.default_rng(3)
    w = random_blocks("q4_0", 6, 1, rng)
    x = rand(rng, 32, 3).T  # [3, 32], a transposed view
    assert not x.flags.c_contiguous
    assert_close(REF, be.linear(x, be.prepare_weight(w)),
                 REF.linear(np.ascontiguousarray(x), REF.prepare_weight(w)), "quantized")
    x64 = rand(rng, 2, 10).astype(np.float64)
    gain = 1 + rand(rng, 10, scale=0.5)
    assert_close(REF, be.rms_norm(x64, gain, 1e-6), REF.rms_norm(x64, gain, 1e-6))


@pytest.mark.parametrize("kind", KINDS + ["float32"])
def test_embed_of_any_storage(be, kind):
    rng = np.random.default_rng(4)
    table = random_blocks("q8_0" if kind == "float32" else kind, 13, 1, rng)
    if kind == "float32":
        table = table.dequantize()
    ids = rng.integers(0, 13, size=(2, 5)).astype(np.int32)
    expected = REF.embed(REF.prepare_weight(table), ids, np.float32(25.25))
    got = be.embed(be.prepare_weight(table), ids, np.float32(25.25))
    np.testing.assert_array_equal(got, expected)  # decode and one multiply: bit-exact
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 13\)"):
        be.embed(be.prepare_weight(table), np.array([[0, 13]]), 1.0)


def test_arrays_of_another_module_are_refused(be):
    with pytest.raises(TypeError, match="move arrays between backends"):
        be.asarray(object())
    with pytest.raises(TypeError, match="expected an array of numpy, got a builtins.list"):
        be.launches.rms_norm([[1.0]], np.ones(1, np.float32), 1e-6)


# --------------------------------------------------------------------------- the other ops

@pytest.mark.parametrize("shape", [(1, 1, 7), (2, 3, 16), (3, 33)])
def test_rows_and_elementwise(be, shape):
    rng = np.random.default_rng(shape[-1])
    x, gain = rand(rng, *shape, scale=3.0), 1 + rand(rng, shape[-1], scale=0.5)
    assert_close(REF, be.rms_norm(x, gain, 1e-6), REF.rms_norm(x, gain, 1e-6))
    assert_close(REF, be.geglu(x, x[::-1].copy()), REF.geglu(x, x[::-1].copy()))
    assert_close(REF, be.softcap(10 * x, 5.0), REF.softcap(10 * x, 5.0))


@pytest.mark.parametrize("rot_dim, scale", [(None, 1.0), (4, 8.0)])
def test_rope_with_int32_positions(be, rot_dim, scale):
    rng = np.random.default_rng(5)
    x = rand(rng, 2, 3, 2, 10)
    positions = rng.integers(0, 30_000, size=(2, 3)).astype(np.int32)
    assert_close(REF, be.rope(x, positions, 1e4, rot_dim, scale),
                 REF.rope(x, positions, 1e4, rot_dim, scale))


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
@pytest.mark.parametrize("T", [1, 3, ATTENTION_KERNEL_MAX_QUERIES + 1])
def test_attention_takes_the_kernel_for_decode_and_the_reference_for_prefill(be, T):
    rng = np.random.default_rng(T)
    B, N, K, H, past = 2, 4, 2, 8, 7
    q_pos = 20 + np.arange(T)[None].repeat(B, 0)
    k_pos = np.concatenate([20 - past + np.arange(past)[None].repeat(B, 0), q_pos], axis=1)
    k_pos[:, 2] = EMPTY_SLOT
    k_pos = k_pos[:, ::-1].copy()  # slots in any order, as in a ring buffer
    S = k_pos.shape[1]
    q, k, v = rand(rng, B, T, N, H), rand(rng, B, S, K, H), rand(rng, B, S, K, H)
    start = len(be.launches.launcher.launches)
    got = be.attention(q, k, v, q_pos, k_pos, scale=0.3, window=6, softcap=20.0)
    assert_close(REF, got, REF.attention(q, k, v, q_pos, k_pos, scale=0.3, window=6,
                                         softcap=20.0))
    kernels = [kernel for kernel, _, _ in launched(be, start)]
    if T <= ATTENTION_KERNEL_MAX_QUERIES:
        assert launched(be, start) == [("attention_decode", (N, T, B), (256, 1, 1))]
    else:
        assert kernels == []


def test_conv1d_and_the_scan(be):
    rng = np.random.default_rng(6)
    B, T, L, W = 2, 5, 70, 4
    x, w, b, state = rand(rng, B, T, L), rand(rng, W, L), rand(rng, L), rand(rng, B, W - 1, L)
    for got, expected in zip(be.conv1d(x, w, b, state), REF.conv1d(x, w, b, state)):
        np.testing.assert_array_equal(got, expected)
    a = rng.uniform(0, 1, size=(B, T, L)).astype(np.float32)
    gate_x = rng.uniform(0, 1, size=(B, T, L)).astype(np.float32)
    reset = rng.uniform(size=(B, T)) < 0.3  # bool: handed to the kernel as one byte each
    for got, expected in zip(be.rglru_scan(x, a, gate_x, state[:, 0], reset),
                             REF.rglru_scan(x, a, gate_x, state[:, 0], reset)):
        np.testing.assert_array_equal(got, expected)
    with pytest.raises(ValueError):
        be.rglru_scan(x, a[:, :2], gate_x, state[:, 0], reset)
    with pytest.raises(ValueError):
        be.conv1d(x, w[:, :3], b, state)


def test_rglru_gates_are_the_reference(be):
    rng = np.random.default_rng(7)
    x = rand(rng, 1, 3, 8)
    args = (rand(rng, 8), rand(rng, 2, 4, 4), rand(rng, 2, 4), rand(rng, 2, 4, 4), rand(rng, 2, 4))
    for got, expected in zip(be.rglru_gates(x, *args), REF.rglru_gates(x, *args)):
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_distill_loss_and_grad(be, dtype):
    rng = np.random.default_rng(8)
    s, t = rand(rng, 3, 50, scale=4.0).astype(dtype), rand(rng, 3, 50, scale=4.0).astype(dtype)
    loss_ref, grad_ref = REF.distill_loss_and_grad(s, t, 1.5)
    loss, grad = be.distill_loss_and_grad(s, t, 1.5)
    assert isinstance(loss, float) and grad.dtype == grad_ref.dtype
    assert abs(loss - loss_ref) <= BACKEND_OP_ATOL["float32"] * max(1.0, abs(loss_ref))
    assert_close(REF, grad.astype(np.float32), grad_ref.astype(np.float32))


def test_distill_bad_rows_raise_the_reference_error(be):
    s, t = np.zeros((3, 4), np.float32), np.zeros((3, 4), np.float32)
    t[1, 0] = np.inf
    with pytest.raises(ValueError, match="teacher_logits row 1 has NaN, \\+inf or no finite"):
        be.distill_loss_and_grad(s, t, 1.0)
    with pytest.raises(ValueError, match="temperature must be"):
        be.distill_loss_and_grad(s, s, 0.0)


# --------------------------------------------------------------------------- whole models

def greedy(model, ids, n):
    return list(generate_ids(model, ids, n, Sampler(SamplingParams()), set(), GenerationStats()))


@pytest.mark.parametrize("family", ["gemma", "gemma2", "gemma3"])
def test_tiny_models_and_their_caches(be, family):
    """Prefill logits, then greedy decoding past the 5-slot ring buffer of the local layers."""
    config = tiny_config(family, head_dim=16, d_model=64, ffn_dim=96, window=5, num_layers=3)
    params = quantized_params(config, tiny_params(config, seed=3), ["q8_0", "q4_0"])
    ref, ours = build(config, params, REF), build(config, params, be)
    ids = np.random.default_rng(4).integers(0, config.vocab_size, size=(2, 9))
    np.testing.assert_allclose(ours.forward(ids)[0], ref.forward(ids)[0], rtol=0,
                               atol=BACKEND_MODEL_ATOL["float32"])
    prompt = [config.bos_id, 5, 17, 3]
    assert greedy(ours, prompt, 9) == greedy(ref, prompt, 9)


def test_tiny_griffin_and_its_state(be):
    from minigemma.models.config import GriffinConfig
    from minigemma.models.griffin import Griffin, parameter_shapes
    from minigemma.models.random_weights import random_params as random_weights
    config = GriffinConfig(vocab_size=61, d_model=32, num_layers=3, num_heads=2, lru_width=64,
                           ffn_dim=64, attention_window=4, conv_width=4, num_kv_heads=1,
                           final_softcap=12.0, max_position=512)
    params = random_weights(parameter_shapes(config), seed=5)
    ref = Griffin(config, {k: REF.prepare_weight(v) for k, v in params.items()}, REF)
    ours = Griffin(config, {k: be.prepare_weight(v) for k, v in params.items()}, be)
    ids = np.random.default_rng(6).integers(0, config.vocab_size, size=(1, 7))
    np.testing.assert_allclose(ours.forward(ids)[0], ref.forward(ids)[0], rtol=0,
                               atol=BACKEND_MODEL_ATOL["float32"])
    assert greedy(ours, [config.bos_id, 7, 9], 8) == greedy(ref, [config.bos_id, 7, 9], 8)


# --------------------------------------------------------------------------- availability

def fake_cupy(monkeypatch, driver_version=12000, device_count=1, error=None):
    runtime = types.SimpleNamespace(driverGetVersion=lambda: driver_version)

    def count():
        if error is not None:
            raise error
        return device_count
    runtime.getDeviceCount = count
    module = types.ModuleType("cupy")
    module.cuda = types.SimpleNamespace(runtime=runtime)
    module.zeros = lambda n: np.zeros(n)
    monkeypatch.setitem(sys.modules, "cupy", module)
    monkeypatch.setattr(cupy_backend.importlib.util, "find_spec", lambda name: True)


def test_the_probe_says_why_cupy_cannot_run(monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(cupy_backend.importlib.util, "find_spec", lambda name: None)
        assert "CuPy is not installed" in cupy_backend.probe()
    with monkeypatch.context() as m:
        fake_cupy(m, driver_version=0)
        assert cupy_backend.probe().startswith("no CUDA device")
    with monkeypatch.context() as m:
        fake_cupy(m, error=RuntimeError("cudaErrorInsufficientDriver: CUDA driver version is "
                                        "insufficient"))
        assert cupy_backend.probe().startswith("no CUDA device")
    with monkeypatch.context() as m:
        fake_cupy(m, error=RuntimeError("cudaErrorUnknown: unknown error"))
        assert cupy_backend.probe() == "CUDA driver error: cudaErrorUnknown: unknown error"
    with monkeypatch.context() as m:
        fake_cupy(m, device_count=0)
        assert cupy_backend.probe().startswith("no CUDA device")
    with monkeypatch.context() as m:
        fake_cupy(m)
        assert cupy_backend.probe() is None


def test_this_machine_reports_cupy_unavailable_with_a_reason():
    import minigemma
    reason = minigemma.available_backends()["cupy"]
    if reason is None:
        pytest.skip("CuPy runs here: the GPU tests cover it")
    assert "not installed" in reason or "no CUDA device" in reason or "driver" in reason
