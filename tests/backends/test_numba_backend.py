"""What only the Numba backend promises: exact block decoding, one compilation per kernel,
serial ≈ parallel, quantized weights kept quantized, and a clear reason when Numba is missing."""
import itertools
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minigemma.backends import get_backend
from minigemma.formats.gguf.blocks import BLOCK_FORMATS, QuantizedWeight, quantize
from minigemma.text.generation import GenerationStats, generate_ids
from minigemma.text.sampling import Sampler, SamplingParams

from helpers.backend_inputs import assert_close, quantized_params, random_blocks
from helpers.random_models import build, tiny_config, tiny_params

pytest.importorskip("numba")
REF = get_backend("numpy")
seeds = st.integers(0, 2**32 - 1)


@pytest.fixture(scope="module")
def nb():
    return get_backend("numba").warmup()


def signature_counts(be):
    return {f"{d.py_func.__qualname__}#{i}": len(d.signatures)
            for i, d in enumerate(be.dispatchers())}


def test_warmup_compiles_every_kernel_once_and_a_generation_adds_none(nb):
    """Each kernel has one signature after warm-up; prefill and decode of tiny models (float32
    and block weights, prompts past the window) compile nothing more."""
    before = signature_counts(nb)
    assert set(before.values()) == {1}, before
    config = tiny_config("gemma2", d_model=64, head_dim=16, ffn_dim=96)
    params = tiny_params(config, seed=1)
    for p in (params, quantized_params(config, params, ["q8_0", "q4_0"])):
        model = build(config, p, nb)
        greedy(model, [2, 5, 7] * 7, 12)
        model.forward(np.tile(np.arange(40), (2, 1)))  # batch 2, the prefill paths
    assert signature_counts(nb) == before


def greedy(model, ids, n):
    return list(generate_ids(model, ids, n, Sampler(SamplingParams()), set(), GenerationStats()))


@given(st.sampled_from(list(BLOCK_FORMATS)), st.integers(1, 9), st.integers(1, 3),
       st.floats(0.1, 40.0), seeds)
def test_embedding_rows_are_bit_identical_to_the_reference(nb, kind, vocab, n_blocks, scale,
                                                           seed):
    rng = np.random.default_rng(seed)
    table = random_blocks(kind, vocab, n_blocks, rng)
    ids = rng.integers(0, vocab, size=(2, 5))
    expected = REF.embed(REF.prepare_weight(table), ids, np.float32(scale))
    got = nb.embed(nb.prepare_weight(table), ids, np.float32(scale))
    np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))


def test_serial_and_parallel_kernels_agree(nb):
    """Each kernel's two compilations (prange / range) compute the same rows: bitwise for the
    exact kernels, to float32 rounding where fastmath lets LLVM vectorise them differently."""
    from minigemma.backends.numba import attention as A
    from minigemma.backends.numba import blocks as Bk
    from minigemma.backends.numba import elementwise as E
    from minigemma.backends.numba import linear as L
    from minigemma.backends.numba import recurrent as R
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 256)).astype(np.float32)
    xs = np.empty((5, 8), np.float32)
    L.block_sums(x, 32, xs)
    q = rng.standard_normal((2, 9, 4, 16)).astype(np.float32)
    kv = rng.standard_normal((2, 9, 2, 16)).astype(np.float32)
    pos = np.tile(np.arange(9), (2, 1))
    x3 = x.reshape(5, 4, 64)
    w = nb.prepare_weight(random_blocks("q4_k", 6, 1, rng))
    ws = [w, nb.prepare_weight(random_blocks("q6_k", 9, 1, rng)),
          nb.prepare_weight(random_blocks("q8_0", 4, 8, rng))]
    plan = L.MatvecPlan(ws, threads=2)
    pair = [w, nb.prepare_weight(random_blocks("q4_0", 6, 8, rng))]
    paired = L.MatvecPlan(pair, threads=2, paired=True)
    calls = {
        "matvec": (L.matvec, lambda: (tuple(v.blocks for v in ws), plan.kinds, *plan.work(), x,
                                      xs, tuple(np.empty((5, n), np.float32) for n in (6, 9, 4)))),
        "matvec_geglu": (L.matvec_geglu, lambda: (pair[0].blocks, pair[1].blocks, paired.kinds,
                                                  *paired.work(), x, xs, False,
                                                  *(np.empty((5, 6), np.float32) for _ in "guo"))),
        "dequantize_rows": (Bk.dequantize_rows, lambda: (w.blocks, Bk.KIND_CODES["q4_k"],
                                                         np.arange(6), 1.5, Bk.F16_TO_F32,
                                                         Bk.LANES,
                                                         np.empty((6, 256), np.float32))),
        "attention": (A.attention, lambda: (q, kv, kv, pos, pos, 0.25, 4, 0.0,
                                            np.empty_like(q))),
        "masked_softmax": (A.masked_softmax, lambda: (x.copy(), np.arange(5), np.arange(256), 1,
                                                      0.5, 100, 7.0)),
        "rms_norm": (E.rms_norm, lambda: (x, x[0], 1e-6, np.empty_like(x))),
        "rope": (E.rope, lambda: (x3, *nb._rope_table(np.arange(5)[None] * 999, 1e4, 48, 1.0),
                                  np.empty_like(x3))),
        "geglu": (E.geglu, lambda: (x, x[::-1].copy(), np.empty_like(x))),
        "softcap": (E.softcap, lambda: (x, 3.0, np.empty_like(x))),
        "conv1d": (R.conv1d, lambda: (x3, x3[0], x3[0, 0], np.ascontiguousarray(x3[:, :3]),
                                      np.empty_like(x3), np.empty((5, 3, 64), np.float32))),
        "rglru_scan": (R.rglru_scan, lambda: (x3, np.abs(x3) / 4, np.abs(x3) / 4, x3[:, 0].copy(),
                                              np.zeros((5, 4), np.bool_), np.empty_like(x3),
                                              np.empty((5, 64), np.float32))),
    }
    for name, (kernel, make_args) in calls.items():
        a, b = make_args(), make_args()
        kernel(*a, parallel=True)
        kernel(*b, parallel=False)
        exact = name in ("dequantize_rows", "rope", "geglu", "softcap", "conv1d", "rglru_scan")
        pairs = [(u, v) for u, v in zip(a, b) if not isinstance(u, tuple)]
        pairs += [pair for u, v in zip(a, b) if isinstance(u, tuple) for pair in zip(u, v)]
        for u, v in pairs:
            if isinstance(u, np.ndarray) and exact:
                np.testing.assert_array_equal(u, v, err_msg=name)
            elif isinstance(u, np.ndarray):
                np.testing.assert_allclose(u, v, rtol=1e-6, atol=1e-6, err_msg=name)


@given(st.lists(st.tuples(st.integers(0, 3000), st.integers(1, 700)), min_size=1, max_size=3),
       st.integers(1, 4))
def test_each_thread_gets_one_run_of_equal_bytes_in_chunks(sizes, threads):
    """The matvec chunks (weight, lo, hi): every row of every weight exactly once; `threads`
    runs, each within one row of an equal share of the bytes; chunks of at most CHUNK_BYTES (or
    two rows), of an even number of rows but the last of a run's part of a weight."""
    from minigemma.backends.numba.linear import CHUNK_BYTES, thread_runs
    chunks, starts = thread_runs(sizes, threads)
    assert starts.shape == (threads + 1,) and starts[0] == 0 and starts[-1] == len(chunks)
    assert (np.diff(starts) >= 0).all()
    for w, (rows, _) in enumerate(sizes):
        covered = np.zeros(rows, np.int64)
        for _, lo, hi in chunks[chunks[:, 0] == w]:
            covered[lo:hi] += 1
        assert (covered == 1).all()
    run_of = np.searchsorted(starts, np.arange(len(chunks)), side="right") - 1
    firsts = {(r, w, lo) for r, (w, lo, _) in zip(run_of, chunks)}
    for r, (w, lo, hi) in zip(run_of, chunks):
        assert 0 < hi - lo and ((hi - lo) % 2 == 0 or (r, w, hi) not in firsts)
        assert (hi - lo) * sizes[w][1] <= max(CHUNK_BYTES, 2 * sizes[w][1])
    shares = [sum((hi - lo) * sizes[w][1] for w, lo, hi in chunks[a:b])
              for a, b in itertools.pairwise(starts)]
    total, largest = sum(r * b for r, b in sizes), max(b for _, b in sizes)
    assert all(abs(share - total / threads) <= largest for share in shares)


def test_threads_claim_every_chunk_once():
    """`work_sharing.claim` under contention: threads claiming from the same runs, own run
    first, get every chunk index exactly once (each claim marks its index; a chunk claimed
    twice, or never, would show as a count other than 1)."""
    from numba import njit, prange

    from minigemma.backends.numba.work_sharing import claim, fresh_counters

    @njit(parallel=True)
    def claim_all(starts, counters, seen):
        for t in prange(starts.shape[0] - 1):
            c = claim(counters, starts, t)
            while c >= 0:
                seen[c] += 1
                c = claim(counters, starts, t)

    starts = np.array([0, 5000, 5001, 5001, 12000], np.int64)  # runs of 5000, 1, 0, 6999
    for _ in range(20):
        seen = np.zeros(starts[-1], np.int64)  # each index written by its claimant only
        claim_all(starts, fresh_counters(starts), seen)
        assert (seen == 1).all()


def test_one_thread_does_every_run_when_the_others_do_not_come(nb):
    """The serial kernels run the loop over threads in one thread: thread 0 does its run,
    then claims all of the others'; the product is the one-run plan's."""
    from minigemma.backends.numba import linear as L
    rng = np.random.default_rng(1)
    ws = [nb.prepare_weight(random_blocks("q8_0", 1000, 8, rng)),  # 272 KB: a parallel plan
          nb.prepare_weight(random_blocks("q4_k", 300, 1, rng))]
    x = rng.standard_normal((3, 256)).astype(np.float32)
    xs = np.empty((3, 8), np.float32)
    L.block_sums(x, 32, xs)
    plans = [L.MatvecPlan(ws, threads) for threads in (1, 4)]
    assert [len(p.starts) - 1 for p in plans] == [1, 4]
    outs = []
    for plan in plans:
        out = (np.empty((3, 1000), np.float32), np.empty((3, 300), np.float32),
               np.empty((3, 0), np.float32))
        L.matvec((ws[0].blocks, ws[1].blocks, L._EMPTY_BLOCKS), plan.kinds, *plan.work(), x, xs,
                 out, parallel=False)
        outs.append(out)
    for u, v in zip(*outs):
        np.testing.assert_array_equal(u, v)


def test_a_weight_without_rows_gives_an_empty_product_as_the_reference(nb):
    w = QuantizedWeight("q8_0", np.zeros((0, 34), np.uint8), (0, 32))
    x = np.ones((3, 32), np.float32)
    assert REF.linear(x, REF.prepare_weight(w)).shape == (3, 0)
    assert nb.linear(x, nb.prepare_weight(w)).shape == (3, 0)
    q, empty = nb.linear_many(x, [nb.prepare_weight(random_blocks("q8_0", 5, 1,
                                                                  np.random.default_rng(0))),
                                  nb.prepare_weight(w)])
    assert q.shape == (3, 5) and empty.shape == (3, 0)


def test_gemm_tiles_and_query_chunks_give_the_same_results(nb, monkeypatch):
    """Prefill paths split weights into row tiles and queries into chunks; tiny limits force
    many of each."""
    from minigemma.backends.numba import attention as attention_numba
    from minigemma.backends.numba import linear as linear_numba
    rng = np.random.default_rng(1)
    w = random_blocks("q6_k", 37, 2, rng)
    x = rng.standard_normal((3, 11, 512)).astype(np.float32)
    q = rng.standard_normal((1, 40, 4, 8)).astype(np.float32)
    kv = rng.standard_normal((1, 40, 1, 8)).astype(np.float32)
    pos = np.arange(40)[None]
    monkeypatch.setattr(linear_numba, "TILE_BYTES", 5 * 512 * 4)  # 5 rows per tile
    monkeypatch.setattr(attention_numba, "QUERY_CHUNK", 3)
    assert_close(nb, nb.linear(x, nb.prepare_weight(w)),
                 REF.linear(x, REF.prepare_weight(w)), "quantized")
    expected = REF.attention(q, kv, kv, pos, pos, scale=0.3, window=7, softcap=None)
    assert_close(nb, nb.attention(q, kv, kv, pos, pos, scale=0.3, window=7), expected)


def test_real_model_keeps_its_blocks_and_compiles_nothing_new(nb, real_model):
    """No float32 copy of any block weight: the 262144 × 640 embedding stays Q8_0 (178 MB, not
    671 MB), used in place; q5_0 matrices become the q8_0 blocks of the same values (34/22 of
    their bytes) and q6_k ones the i8_16 rows of the same values (1.5× their bytes). A
    generation adds no signature."""
    import minigemma
    from minigemma.backends.numba.blocks import KernelWeight
    before = signature_counts(nb)
    model = minigemma.load(real_model.path, backend=nb)
    params = model.network.params
    embedding = params["embedding"]
    assert isinstance(embedding, QuantizedWeight) and embedding.kind == "q8_0"
    assert embedding.blocks.dtype == np.uint8 and not embedding.blocks.flags.writeable
    quantized = [p for p in params.values() if isinstance(p, (QuantizedWeight, KernelWeight))]
    assert len(quantized) == sum(p.ndim == 2 for p in real_model.network.params.values())
    assert {p.kind for p in quantized} == {"q8_0", "q4_k", "i8_16"}
    total = sum(p.blocks.nbytes if hasattr(p, "blocks") else p.nbytes for p in params.values())
    assert total < 300e6, f"{total / 1e6:.0f} MB of weights (float32: 1070 MB)"
    greedy(model, model.tokenizer.encode("Hello there"), 6)
    assert signature_counts(nb) == before


def test_weight_shapes_are_checked(nb):
    w = nb.prepare_weight(quantize(np.ones((4, 64), np.float32), "q8_0"))
    with pytest.raises(ValueError, match="x has 32 features, the weight"):
        nb.linear(np.ones((1, 32), np.float32), w)


def test_numba_backend_module_imports_without_numba_and_says_why():
    code = ("import sys; sys.modules['numba'] = None; import minigemma; "
            "from minigemma.backends.numba import backend; "
            "print(minigemma.available_backends()['numba'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "Numba is not installed" in out.stdout and "minigemma[numba]" in out.stdout
