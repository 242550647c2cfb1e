"""Every CUDA C kernel of the CuPy backend, run on the CPU against the NumPy reference.

The kernels run from the very text the GPU path compiles (`kernels.source` of each `.cu` file),
through the host code the backend uses (`launches.Launches` with NumPy as the array module),
on CPU threads (`cpu_shim.h`) in a program built with AddressSanitizer + UBSan, and, for the
kernels with shared memory, block barriers or warp shuffles, with ThreadSanitizer. Shapes cover
one thread block, a ragged last block and many blocks; grid-stride kernels run with a grid cap
of 3 blocks so that their loops go round.
"""
import numpy as np
import pytest

from minigemma.backends.cupy.launches import Launches, block_weight
from minigemma.backends.reference import NumpyBackend
from minigemma.formats.gguf.blocks import BLOCK_FORMATS, dequantize, dequantize_rows
from minigemma.ops import attention, conv1d, mlp, norms, rglru, rope, softcap
from minigemma.training.losses import distillation_loss_and_grad

from helpers.backend_inputs import assert_close, rand, random_blocks

REF = NumpyBackend()
KINDS = list(BLOCK_FORMATS)
NO_WINDOW = np.iinfo(np.int64).max


@pytest.fixture(scope="module")
def asan(asan_launcher):
    return Launches(asan_launcher, np, max_grid_blocks=3)


@pytest.fixture(scope="module")
def tsan(tsan_launcher):
    return Launches(tsan_launcher, np, max_grid_blocks=3)


# --------------------------------------------------------------------------- GGML blocks

# (output rows O, blocks per row, rows of x M): one thread block of 4 warps (O ≤ 4), a ragged
# last block (O = 7), many blocks (O = 37); M = 11 takes two launches (8 + 3 rows).
MATVEC_SHAPES = [(1, 1, 1), (7, 2, 3), (37, 3, 11)]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("O, n_blocks, M", MATVEC_SHAPES)
def test_matvec_under_asan(asan, kind, O, n_blocks, M):
    rng = np.random.default_rng(O * 100 + M)
    w = random_blocks(kind, O, n_blocks, rng)
    x = rand(rng, M, w.shape[1])
    got = asan.matvec(block_weight(np, w), x)
    assert_close(REF, got, x @ dequantize(w).T, "quantized")


@pytest.mark.parametrize("kind", ["q8_0", "q6_k"])
def test_matvec_under_tsan(tsan, kind):
    rng = np.random.default_rng(1)
    w = random_blocks(kind, 7, 2, rng)
    x = rand(rng, 3, w.shape[1])
    assert_close(REF, tsan.matvec(block_weight(np, w), x), x @ dequantize(w).T, "quantized")


# (rows of the matrix, blocks per row, looked-up rows): I < 256 threads (one block, ragged),
# I = 9 · 32 = 288 (two blocks, ragged tail), q4_k / q6_k I = 512 (two full blocks).
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("O, n_blocks, rows", [(1, 1, [0]), (5, 3, [4, 0, 4]),
                                               (6, 9, [5, 1, 2, 3, 0, 5, 5])])
def test_dequantize_rows_is_bit_exact_under_asan(asan, kind, O, n_blocks, rows):
    rng = np.random.default_rng(O)
    w = random_blocks(kind, O, n_blocks, rng)
    got = asan.dequantize_rows(block_weight(np, w), np.array(rows), np.float32(5.25))
    np.testing.assert_array_equal(got, dequantize_rows(w, np.array(rows)) * np.float32(5.25))


def test_linear_blocks_decodes_tiles_for_prefill(cpu_launcher):
    """Many rows of x: W decoded tile by tile (3 tiles here), then matrix products."""
    launches = Launches(cpu_launcher, np, tile_elements=3 * 64)
    rng = np.random.default_rng(2)
    w = random_blocks("q4_0", 8, 2, rng)
    x = rand(rng, 20, 64)
    got = launches.linear_blocks(block_weight(np, w), x)
    assert_close(REF, got, x @ dequantize(w).T, "quantized")


# --------------------------------------------------------------------------- attention

def attention_case(rng, B, T, N, K, H, past, window, cap, empty=0.2):
    """Queries at the last T positions, keys of `past` earlier ones, slots shuffled, some empty."""
    start = rng.integers(past, past + 20, size=(B, 1))
    q_pos = start + np.arange(T)
    k_pos = np.concatenate([start - past + np.arange(past), q_pos], axis=1)
    k_pos[rng.uniform(size=k_pos.shape) < empty] = attention.EMPTY_SLOT
    k_pos = np.stack([rng.permutation(row) for row in k_pos])
    S = k_pos.shape[1]
    q, k, v = rand(rng, B, T, N, H), rand(rng, B, S, K, H), rand(rng, B, S, K, H)
    scale = float(rng.uniform(0.5, 2.0)) / np.sqrt(H)
    expected = attention.attention(q, k, v, q_pos, k_pos, scale=scale, window=window,
                                   softcap=cap)
    args = (q, k, v, q_pos, k_pos, scale, NO_WINDOW if window is None else window,
            0.0 if cap is None else cap)
    return args, expected


# (B, T, N, K, H, past, window, cap): one key; H > 32 with a ragged last lane pass and S not a
# multiple of the 8 warps; MQA over 69 keys (several per warp) with a cap.
ATTENTION_SHAPES = [(1, 1, 1, 1, 4, 0, None, None), (2, 3, 4, 2, 40, 34, 9, 30.0),
                    (1, 2, 4, 1, 12, 67, None, 5.0)]


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # the reference's NaN rows
@pytest.mark.parametrize("B, T, N, K, H, past, window, cap", ATTENTION_SHAPES)
def test_attention_decode_under_asan(asan, B, T, N, K, H, past, window, cap):
    args, expected = attention_case(np.random.default_rng(H), B, T, N, K, H, past, window, cap)
    assert_close(REF, asan.attention_decode(*args), expected)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
@pytest.mark.parametrize("B, T, N, K, H, past, window, cap", ATTENTION_SHAPES[:2])
def test_attention_decode_under_tsan(tsan, B, T, N, K, H, past, window, cap):
    args, expected = attention_case(np.random.default_rng(H), B, T, N, K, H, past, window, cap)
    assert_close(REF, tsan.attention_decode(*args), expected)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
def test_attention_decode_gives_nan_where_no_key_is_allowed(asan):
    rng = np.random.default_rng(3)
    args, expected = attention_case(rng, 1, 2, 2, 1, 8, 3, 2, None, empty=0.0)
    q, k, v, q_pos, k_pos = args[:5]
    k_pos = k_pos.copy()
    k_pos[0, k_pos[0] >= q_pos[0, 0] - 1] = attention.EMPTY_SLOT  # query 0 sees nothing now
    expected = attention.attention(q, k, v, q_pos, k_pos, scale=args[5], window=2)
    got = asan.attention_decode(q, k, v, q_pos, k_pos, *args[5:])
    assert np.isnan(expected[0, 0]).all() and np.isnan(got[0, 0]).all()
    assert_close(REF, got, expected)


# --------------------------------------------------------------------------- recurrent

# (B, T, L): one thread block with a ragged tail (L = 1), two blocks (L = 300), more (L = 600).
RECURRENT_SHAPES = [(1, 1, 1), (2, 5, 300), (1, 3, 600)]


@pytest.mark.parametrize("B, T, L", RECURRENT_SHAPES)
def test_rglru_scan_is_the_reference_under_asan(asan, B, T, L):
    rng = np.random.default_rng(L)
    x, h0 = rand(rng, B, T, L), rand(rng, B, L)
    a = rng.uniform(0, 1, size=(B, T, L)).astype(np.float32)
    gate_x = rng.uniform(0, 1, size=(B, T, L)).astype(np.float32)
    reset = rng.uniform(size=(B, T)) < 0.4
    y_ref, h_ref = rglru.rglru_scan(x, a, gate_x, h0, reset)
    y, h = asan.rglru_scan(x, a, gate_x, h0, reset)
    np.testing.assert_array_equal(y, y_ref)  # the same float32 operations, in the same order
    np.testing.assert_array_equal(h, h_ref)


@pytest.mark.parametrize("B, T, L", RECURRENT_SHAPES)
@pytest.mark.parametrize("W", [1, 4])
def test_conv1d_is_the_reference_under_asan(asan, B, T, L, W):
    rng = np.random.default_rng(L + W)
    x, w, b, state = rand(rng, B, T, L), rand(rng, W, L), rand(rng, L), rand(rng, B, W - 1, L)
    y_ref, state_ref = conv1d.conv1d(x, w, b, state)
    y, new_state = asan.conv1d(x, w, b, state)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(new_state, state_ref)


# --------------------------------------------------------------------------- row-wise, elementwise

# (R, D): one row shorter than the 128 threads, rows of 640 (5 per thread), 40 rows of 12.
@pytest.mark.parametrize("R, D", [(1, 1), (3, 640), (40, 12)])
def test_rms_norm_under_asan(asan, R, D):
    rng = np.random.default_rng(D)
    x, gain = rand(rng, R, D, scale=3.0), 1 + rand(rng, D, scale=0.5)
    assert_close(REF, asan.rms_norm(x, gain, 1e-6), norms.rms_norm(x, gain, 1e-6))


@pytest.mark.parametrize("R, D", [(2, 300), (5, 12)])
def test_rms_norm_under_tsan(tsan, R, D):
    rng = np.random.default_rng(D)
    x, gain = rand(rng, R, D), 1 + rand(rng, D, scale=0.5)
    assert_close(REF, tsan.rms_norm(x, gain, 1e-5), norms.rms_norm(x, gain, 1e-5))


# n elements: less than one block of 256, a ragged second block, 3 · 256 · 3 + 5 (the 3 blocks
# allowed each loop 4 times).
ELEMENT_SHAPES = [(1, 5), (2, 150), (7, 331)]


@pytest.mark.parametrize("shape", ELEMENT_SHAPES)
def test_geglu_under_asan(asan, shape):
    rng = np.random.default_rng(shape[1])
    gate, up = rand(rng, *shape, scale=4.0), rand(rng, *shape)
    assert_close(REF, asan.geglu(gate, up), mlp.geglu(gate, up))


@pytest.mark.parametrize("shape", ELEMENT_SHAPES)
def test_softcap_under_asan(asan, shape):
    x = rand(np.random.default_rng(shape[1]), *shape, scale=100.0)
    assert_close(REF, asan.softcap(x, 30.0), softcap.softcap(x, 30.0))


# (B, T, N, H, rot_dim): all dims rotated; half of them (RecurrentGemma); many blocks.
@pytest.mark.parametrize("B, T, N, H, rot_dim", [(1, 1, 1, 2, 2), (2, 3, 2, 10, 4),
                                                 (1, 9, 4, 64, 64)])
def test_rope_under_asan(asan, B, T, N, H, rot_dim):
    rng = np.random.default_rng(H)
    x = rand(rng, B, T, N, H)
    positions = np.sort(rng.integers(0, 40_000, size=(B, T)), axis=1)
    base, scale = 1e4, 8.0
    inv_freq = 1 / np.float32(base) ** (np.arange(0, rot_dim, 2, dtype=np.float32) / np.float32(rot_dim))
    got = asan.rope(x, positions, inv_freq.astype(np.float32), rot_dim, scale)
    assert_close(REF, got, rope.rope(x, positions, base, rot_dim, scale))


# --------------------------------------------------------------------------- distillation loss

def check_distill(launches, T, V, tau, rng):
    s, t = rand(rng, T, V, scale=5.0), rand(rng, T, V, scale=5.0)
    s[0, 0] = t[0, 0] = -np.inf  # probability 0 on both sides is allowed
    loss_ref, grad_ref = distillation_loss_and_grad(s, t, tau)
    grad, row_loss, status = launches.distill_rows(s, t, tau)
    assert not status.any()
    assert abs(row_loss.sum() / T - loss_ref) <= 1e-9 * max(1.0, abs(loss_ref))
    assert_close(REF, grad, grad_ref)


@pytest.mark.parametrize("T, V, tau", [(1, 2, 1.0), (3, 300, 0.7), (2, 1000, 3.0)])
def test_distill_rows_under_asan(asan, T, V, tau):
    check_distill(asan, T, V, tau, np.random.default_rng(V))


@pytest.mark.parametrize("T, V, tau", [(2, 300, 2.0)])
def test_distill_rows_under_tsan(tsan, T, V, tau):
    check_distill(tsan, T, V, tau, np.random.default_rng(V))


def test_distill_rows_flags_bad_rows(asan):
    s, t = np.zeros((3, 5), np.float32), np.zeros((3, 5), np.float32)
    s[1, 2], t[2] = np.nan, -np.inf
    _, _, status = asan.distill_rows(s, t, 1.0)
    assert status.tolist() == [0, 1, 2]  # ROW_OK, BAD_STUDENT, BAD_TEACHER
