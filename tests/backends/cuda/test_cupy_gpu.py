"""The CuPy backend on a GPU: what the CPU cannot show (scripts/gpu_check.sh runs these).

Every test takes the `backend` fixture (tests/conftest.py) set to "cupy": where CuPy cannot run,
each is skipped with the probe's reason, and MINIGEMMA_REQUIRE_BACKENDS=cupy makes that a
failure. The op-by-op equivalence on drawn shapes is tests/backends/test_backend_equivalence.py
(its `backend` fixture includes cupy); here: the device itself, whole models within 1e-3 of
NumPy with the same greedy tokens (tiny Gemma 1/2/3 and Griffin, every block kind, and a
random-weight gemma3-270m), and a run for compute-sanitizer without CuPy's memory pool.
"""
import numpy as np
import pytest

from minigemma.backends.cupy import kernels
from minigemma.backends.reference import NumpyBackend
from minigemma.formats.gguf.blocks import BLOCK_FORMATS
from minigemma.text.generation import GenerationStats, generate_ids
from minigemma.text.sampling import Sampler, SamplingParams

from helpers.backend_inputs import SCALE_OFFSETS, random_blocks
from helpers.random_models import build, tiny_config, tiny_params

REF = NumpyBackend()
MODEL_ATOL = 1e-3  # whole-model logits against NumPy (issue 14)
on_cupy = pytest.mark.parametrize("backend", ["cupy"], indirect=True)


def as_blocks(params, seed):
    """Every matrix as random GGML blocks, cycling through the kinds its row length allows (all
    five where it is a multiple of 256), with fp16 scales ~ 0.002 so that logits stay O(10)."""
    rng, out, i = np.random.default_rng(seed), {}, 0
    for name, value in params.items():
        if value.ndim != 2:
            out[name] = value
            continue
        kinds = [k for k, f in BLOCK_FORMATS.items() if value.shape[1] % f.block_elems == 0]
        kind, i = kinds[i % len(kinds)], i + 1
        fmt = BLOCK_FORMATS[kind]
        w = random_blocks(kind, value.shape[0], value.shape[1] // fmt.block_elems, rng)
        blocks = w.blocks.reshape(-1, fmt.block_bytes)
        for off in SCALE_OFFSETS[kind]:
            scale = (0.002 * rng.standard_normal(blocks.shape[0])).astype("<f2")
            blocks[:, off:off + 2] = scale.view(np.uint8).reshape(-1, 2)
        out[name] = w
    return out


def greedy(model, ids, n):
    return list(generate_ids(model, ids, n, Sampler(SamplingParams()), set(), GenerationStats()))


def assert_model_matches(ref, ours, be, ids, prompt, n_tokens):
    expected, _ = ref.forward(ids)
    got, _ = ours.forward(be.asarray(ids))
    assert isinstance(got, be.xp.ndarray)  # the logits stay on the device until asked for
    np.testing.assert_allclose(be.to_numpy(got), expected, rtol=0, atol=MODEL_ATOL)
    assert greedy(ours, prompt, n_tokens) == greedy(ref, prompt, n_tokens)


@on_cupy
def test_the_device_runs_every_kernel_file(backend):
    import cupy
    assert backend.xp is cupy and cupy.cuda.runtime.getDeviceCount() >= 1
    backend.warmup()  # NVRTC compiles every .cu file (or CuPy's disk cache has them)
    compiled = {key[0] for key in backend.launches.launcher._functions}
    assert compiled == set(kernels.kernel_files())


@on_cupy
def test_weights_live_on_the_device_and_blocks_stay_compact(backend):
    rng = np.random.default_rng(0)
    w = random_blocks("q4_k", 8, 2, rng)
    prepared = backend.prepare_weight(w)
    assert isinstance(prepared.blocks, backend.xp.ndarray) and prepared.nbytes == w.blocks.nbytes
    x = backend.asarray(rng.standard_normal((1, w.shape[1])).astype(np.float32))
    assert isinstance(backend.linear(x, prepared), backend.xp.ndarray)
    with pytest.raises(TypeError):
        backend.rms_norm(np.ones((1, 4), np.float32), backend.asarray(np.ones(4, np.float32)),
                         1e-6)  # a host array given to the device: an error, not a copy


@on_cupy
@pytest.mark.parametrize("family", ["gemma", "gemma2", "gemma3"])
@pytest.mark.parametrize("storage", ["float32", "blocks"])
def test_tiny_gemma(backend, family, storage):
    config = tiny_config(family, num_heads=4, num_kv_heads=2, head_dim=32, d_model=256,
                         ffn_dim=256, window=6)
    params = tiny_params(config, seed=3)
    if storage == "blocks":
        params = as_blocks(params, seed=1)
    ref, ours = build(config, params, REF), build(config, params, backend)
    ids = np.random.default_rng(4).integers(0, config.vocab_size, size=(2, 21))
    assert_model_matches(ref, ours, backend, ids, [config.bos_id, 5, 17, 3], 24)


def tiny_griffin(be, seed=5):
    from minigemma.models.config import GriffinConfig
    from minigemma.models.griffin import Griffin, parameter_shapes
    from minigemma.models.random_weights import random_params as random_weights
    config = GriffinConfig(vocab_size=61, d_model=32, num_layers=3, num_heads=2, lru_width=64,
                           ffn_dim=64, attention_window=5, conv_width=4, num_kv_heads=1,
                           final_softcap=12.0, max_position=512)
    params = random_weights(parameter_shapes(config), seed=seed)
    return (config, Griffin(config, {k: REF.prepare_weight(v) for k, v in params.items()}, REF),
            Griffin(config, {k: be.prepare_weight(v) for k, v in params.items()}, be))


@on_cupy
def test_tiny_griffin(backend):
    config, ref, ours = tiny_griffin(backend)
    ids = np.random.default_rng(6).integers(0, config.vocab_size, size=(1, 19))
    assert_model_matches(ref, ours, backend, ids, [config.bos_id, 7, 9], 16)


@on_cupy
@pytest.mark.parametrize("storage", ["float32", "q8_0"])
def test_random_gemma3_270m(backend, storage):
    """The real model's shapes (262 144-row head, 4 heads of 256, window 512), random weights,
    with a prompt longer than the window: prefill logits, then greedy tokens through the ring."""
    from minigemma.formats.gguf.blocks import quantize
    from minigemma.models.config import preset
    from minigemma.models.gemma import parameter_shapes
    from minigemma.models.random_weights import random_params as random_weights
    config = preset("gemma3-270m")
    params = random_weights(parameter_shapes(config), seed=0, std=0.05)
    if storage == "q8_0":
        params = {k: quantize(v, "q8_0") if v.ndim == 2 else v for k, v in params.items()}
    ref, ours = build(config, params, REF), build(config, params, backend)
    ids = np.random.default_rng(1).integers(3, config.vocab_size, size=(1, 520))
    ids[0, 0] = config.bos_id
    assert_model_matches(ref, ours, backend, ids, ids[0].tolist(), 8)


@on_cupy
def test_memcheck_target_tiny_models_without_the_memory_pool(backend):
    """What `compute-sanitizer --tool memcheck` runs: every allocation a cudaMalloc of its own
    (CuPy's pool would hide a read past an array inside a larger pooled block)."""
    import cupy
    cupy.get_default_memory_pool().free_all_blocks()
    cupy.cuda.set_allocator(None)
    try:
        config, ref, ours = tiny_griffin(backend, seed=7)
        ids = np.random.default_rng(8).integers(0, config.vocab_size, size=(1, 9))
        assert_model_matches(ref, ours, backend, ids, [config.bos_id, 7], 6)
        config = tiny_config("gemma2", num_heads=2, num_kv_heads=1, head_dim=32, d_model=256,
                             ffn_dim=256, window=4)
        params = as_blocks(tiny_params(config, seed=9), seed=10)
        ref, ours = build(config, params, REF), build(config, params, backend)
        assert_model_matches(ref, ours, backend, ids % config.vocab_size, [config.bos_id, 3], 6)
        cupy.cuda.runtime.deviceSynchronize()
    finally:
        cupy.cuda.set_allocator(cupy.get_default_memory_pool().malloc)
