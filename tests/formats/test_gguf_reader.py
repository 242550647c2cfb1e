"""minigemma.formats.gguf.reader on the real Gemma 3 270M Q4_K_M GGUF, and on small
synthetic GGUF files (written with gguf.GGUFWriter) for the other families and error paths.

Every quantized tensor of the real file is dequantized by minigemma and compared bitwise with
gguf.quants.dequantize of the same bytes.
"""

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as T

from minigemma.formats.gguf.blocks import QuantizedWeight, dequantize, quantize_q8_0
from minigemma.formats.gguf.reader import (
    GGUF_TO_SEMANTIC,
    gguf_tensor_types,
    iter_gguf_tensors,
    read_gguf_hparams,
    semantic_name,
)
from minigemma.models.config import RopeScaling

# --- the real file ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def gemma3_gguf_path(real_gguf_path):
    return real_gguf_path


@pytest.fixture(scope="module")
def reader(gemma3_gguf_path):
    return gguf.GGUFReader(gemma3_gguf_path)  # parsing the vocabulary takes seconds: once


@pytest.fixture(scope="module")
def items(reader):
    return list(iter_gguf_tensors(reader, copy=False))


D, F, N, K, H, V, LAYERS = 640, 2048, 4, 1, 256, 262_144, 18

SPEC_HPARAMS = {
    "family": "gemma3",
    "vocab_size": V,
    "d_model": D,
    "num_layers": LAYERS,
    "num_heads": N,
    "num_kv_heads": K,
    "head_dim": H,
    "ffn_dim": F,
    "layer_types": tuple("global" if (i + 1) % 6 == 0 else "local" for i in range(LAYERS)),
    "sliding_window": 512,
    "rope_base_global": 1e6,
    "rope_base_local": 10_000.0,
    "rope_scaling_global": None,
    "rope_scaling_local": None,
    "query_pre_attn_scalar": 256.0,
    "attn_softcap": None,
    "final_softcap": None,
    "qk_norm": True,
    "post_norms": True,
    "rms_eps": 1e-6,
    "max_position": 32_768,
    "bos_id": 2,
    "eos_id": 1,
    "pad_id": 0,
}


def spec_shapes():
    shapes = {"embedding": (V, D), "final_norm": (D,)}
    for i in range(LAYERS):
        p = f"layers.{i}."
        shapes.update({
            p + "pre_attn_norm": (D,), p + "q_proj": (N * H, D), p + "k_proj": (K * H, D),
            p + "v_proj": (K * H, D), p + "o_proj": (D, N * H), p + "q_norm": (H,),
            p + "k_norm": (H,), p + "post_attn_norm": (D,), p + "pre_mlp_norm": (D,),
            p + "post_mlp_norm": (D,), p + "gate_proj": (F, D), p + "up_proj": (F, D),
            p + "down_proj": (D, F)})
    return shapes


def test_hparams_match_spec(reader):
    hp = read_gguf_hparams(reader)
    assert hp == SPEC_HPARAMS
    assert hp["layer_types"].count("global") == 3
    assert [i for i, t in enumerate(hp["layer_types"]) if t == "global"] == [5, 11, 17]


def test_hparams_make_the_gemma3_270m_config(reader):
    config = pytest.importorskip("minigemma.models.config")
    assert config.GemmaConfig(**read_gguf_hparams(reader)) == config.preset("gemma3-270m")


def test_every_tensor_consumed_with_semantic_shapes(reader, items):
    assert len(reader.tensors) == 236
    assert [name for name, _ in items] == [semantic_name(t.name) for t in reader.tensors]
    got = {name: value.shape for name, value in items}
    assert len(got) == len(items)  # no duplicates
    assert got == spec_shapes()


def test_storage_kinds(reader, items):
    kinds = {name: value.kind if isinstance(value, QuantizedWeight) else "f32"
             for name, value in items}
    assert kinds == gguf_tensor_types(reader)
    by_role = {}
    for name, kind in kinds.items():
        by_role.setdefault(name.split(".")[-1], []).append(kind)
    assert by_role["embedding"] == ["q8_0"]
    for role in ("final_norm", "pre_attn_norm", "post_attn_norm", "pre_mlp_norm",
                 "post_mlp_norm", "q_norm", "k_norm"):
        assert set(by_role[role]) == {"f32"}, role
    for role in ("q_proj", "k_proj", "gate_proj", "up_proj"):
        assert set(by_role[role]) == {"q5_0"}, role
    assert set(by_role["o_proj"]) == {"q4_k"}
    assert sorted(by_role["v_proj"]) == ["q5_0"] * 9 + ["q8_0"] * 9
    assert sorted(by_role["down_proj"]) == ["q4_k"] * 9 + ["q6_k"] * 9


def test_quantized_tensors_dequantize_bitwise_like_gguf(reader, items):
    """All 127 quantized tensors, the 262144 x 640 embedding in chunks of rows."""
    step = 32_768
    checked = set()
    for (name, value), t in zip(items, reader.tensors):
        if not isinstance(value, QuantizedWeight):
            continue
        assert value.blocks.dtype == np.uint8 and value.blocks.shape == tuple(t.data.shape)
        n_rows, n_cols = value.shape
        for start in range(0, n_rows, step):
            rows = value.blocks[start:start + step]
            part = QuantizedWeight(value.kind, rows, (rows.shape[0], n_cols))
            mine = dequantize(part)
            ref = gguf.quants.dequantize(np.asarray(rows), t.tensor_type)
            assert mine.dtype == np.float32 and mine.shape == ref.shape
            assert np.array_equal(mine.view(np.uint32), ref.view(np.uint32)), name
        checked.add(value.kind)
    assert checked == {"q8_0", "q5_0", "q4_k", "q6_k"}


def test_float_tensors_are_taken_as_stored(reader, items):
    """Norm gains come out exactly as stored (llama.cpp stored 1 + w already): no shift."""
    n_float = 0
    for (name, value), t in zip(items, reader.tensors):
        if isinstance(value, QuantizedWeight):
            continue
        n_float += 1
        assert name.endswith("_norm") and value.dtype == np.float32
        assert np.array_equal(value, np.asarray(t.data, dtype=np.float32).reshape(value.shape))
    assert n_float == 1 + 6 * LAYERS
    final_norm = dict(items)["final_norm"]
    assert final_norm.mean() > 2  # a full gain 1 + w (HF's w = gain - 1 for this file)


def test_copy_flag(reader):
    it = iter_gguf_tensors(reader)  # copy=True by default
    name, first = next(it)
    assert name == "final_norm" and first.flags.writeable
    name, embedding = next(it)
    assert name == "embedding" and embedding.blocks.flags.writeable
    assert embedding.blocks.flags.owndata
    it.close()


# --- synthetic files -------------------------------------------------------------------------


def write_gguf(path, arch, *, layers=2, d=64, heads=2, kv=1, head_dim=32, ffn=96,
               extra=None, tensors=()):
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(layers)
    w.add_embedding_length(d)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_context_length(8192)
    w.add_vocab_size(128)
    for method, value in (extra or {}).items():
        getattr(w, method)(value)
    for name, array, raw_dtype in tensors:
        w.add_tensor(name, array, raw_dtype=raw_dtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return str(path)


def test_gemma2_hparams(tmp_path):
    path = write_gguf(tmp_path / "g2.gguf", "gemma2", layers=4, extra={
        "add_sliding_window": 4096, "add_attn_logit_softcapping": 50.0,
        "add_final_logit_softcapping": 30.0, "add_bos_token_id": 2, "add_eos_token_id": 1,
        "add_pad_token_id": 0})
    hp = read_gguf_hparams(path)  # a path works as well as a reader
    assert hp["family"] == "gemma2"
    assert hp["layer_types"] == ("local", "global", "local", "global")
    assert hp["sliding_window"] == 4096
    assert (hp["attn_softcap"], hp["final_softcap"]) == (50.0, 30.0)
    assert (hp["qk_norm"], hp["post_norms"]) == (False, True)
    assert hp["rope_base_global"] == hp["rope_base_local"] == 10_000.0
    assert hp["query_pre_attn_scalar"] == 32.0 and hp["vocab_size"] == 128
    assert hp["max_position"] == 8192 and hp["rms_eps"] == 1e-6


def test_27b_query_scale_follows_llama_cpp(tmp_path):
    """llama.cpp (and gemma_pytorch) scale by (d_model / heads)^-1/2 for the 27B models."""
    hp2 = read_gguf_hparams(write_gguf(tmp_path / "a.gguf", "gemma2", layers=46, d=4608,
                                       heads=32, kv=16, head_dim=128))
    assert hp2["query_pre_attn_scalar"] == 144.0
    hp3 = read_gguf_hparams(write_gguf(tmp_path / "b.gguf", "gemma3", layers=62, d=5376,
                                       heads=32, kv=16, head_dim=128,
                                       extra={"add_sliding_window": 1024}))
    assert hp3["query_pre_attn_scalar"] == 168.0
    assert hp3["layer_types"][5] == "global" and hp3["layer_types"][4] == "local"


def test_gemma1_hparams_and_gemma3_rope_scaling(tmp_path):
    hp = read_gguf_hparams(write_gguf(tmp_path / "g1.gguf", "gemma", layers=3))
    assert hp["family"] == "gemma" and hp["layer_types"] == ("global",) * 3
    assert hp["sliding_window"] is None and hp["attn_softcap"] is None
    assert (hp["qk_norm"], hp["post_norms"]) == (False, False)
    hp3 = read_gguf_hparams(write_gguf(tmp_path / "g3.gguf", "gemma3", layers=6, extra={
        "add_sliding_window": 1024, "add_rope_freq_base": 1e6,
        "add_rope_scaling_type": gguf.RopeScalingType.LINEAR, "add_rope_scaling_factor": 8.0}))
    assert hp3["rope_scaling_global"] == RopeScaling("linear", 8.0)
    assert hp3["rope_scaling_local"] is None and hp3["rope_base_local"] == 10_000.0
    assert hp3["rope_base_global"] == 1e6


def test_unsupported_architecture(tmp_path):
    path = write_gguf(tmp_path / "l.gguf", "llama")
    with pytest.raises(ValueError, match="'llama'"):
        read_gguf_hparams(path)
    with pytest.raises(ValueError, match="'llama'"):
        list(iter_gguf_tensors(path))


def test_synthetic_tensors_orientation_and_types(tmp_path):
    rng = np.random.default_rng(0)
    q = rng.standard_normal((64, 96)).astype(np.float32)  # [out, in] as HF
    emb = quantize_q8_0(rng.standard_normal((128, 64)).astype(np.float32))
    norm = rng.standard_normal(64).astype(np.float32)
    bf16 = (rng.standard_normal((32, 64)).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
    path = write_gguf(tmp_path / "t.gguf", "gemma", tensors=[
        ("token_embd.weight", emb.blocks, T.Q8_0),
        ("output_norm.weight", norm, None),
        ("blk.0.attn_q.weight", q.astype(np.float16), None),
        ("blk.1.ffn_up.weight", bf16.view(np.uint8), T.BF16),
    ])
    got = dict(iter_gguf_tensors(path))
    assert list(got) == ["embedding", "final_norm", "layers.0.q_proj", "layers.1.up_proj"]
    assert got["embedding"].kind == "q8_0" and got["embedding"].shape == (128, 64)
    assert np.array_equal(got["embedding"].blocks, emb.blocks)
    assert np.array_equal(got["final_norm"], norm)
    assert got["layers.0.q_proj"].dtype == np.float32
    assert np.array_equal(got["layers.0.q_proj"], q.astype(np.float16).astype(np.float32))
    expected_bf16 = (bf16.astype(np.uint32) << 16).view(np.float32)
    assert np.array_equal(got["layers.1.up_proj"], expected_bf16)


@pytest.mark.parametrize("bad_name", ["blk.0.attn_qkv.weight", "output.weight", "rope_freqs.weight"])
def test_unknown_tensor_is_named(tmp_path, bad_name):
    path = write_gguf(tmp_path / "u.gguf", "gemma3", extra={"add_sliding_window": 512}, tensors=[
        ("output_norm.weight", np.ones(64, np.float32), None),
        (bad_name, np.ones((64, 64), np.float32), None)])
    with pytest.raises(ValueError, match=bad_name.replace(".", r"\.")):
        list(iter_gguf_tensors(path))


def test_unsupported_storage_type_is_named(tmp_path):
    blocks = np.zeros((4, 20), np.uint8)  # Q4_1: 32 elements in 20 bytes
    path = write_gguf(tmp_path / "q.gguf", "gemma", tensors=[
        ("blk.0.ffn_gate.weight", blocks, T.Q4_1)])
    with pytest.raises(ValueError, match=r"blk\.0\.ffn_gate\.weight.*Q4_1"):
        list(iter_gguf_tensors(path))


def test_mapping_table_covers_gguf_gemma3_tensors():
    """Every per-block/global tensor gguf-py knows for gemma3 is mapped, except the optional
    untied `output` matrix (minigemma ties the output to the embedding)."""
    arch = gguf.MODEL_ARCH.GEMMA3
    names = {gguf.TENSOR_NAMES[t].replace("{bid}", "{i}") for t in gguf.MODEL_TENSORS[arch]}
    assert names - {"output"} == set(GGUF_TO_SEMANTIC)
    assert semantic_name("blk.17.post_ffw_norm.weight") == "layers.17.post_mlp_norm"
    assert semantic_name("blk.3.attn_output.weight") == "layers.3.o_proj"
