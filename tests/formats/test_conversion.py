"""What every converter shares: the strict tensor check, the result type, the one entry point."""
import dataclasses

import gguf
import numpy as np
import pytest

from minigemma.formats.conversion import ConvertedModel, check_tensor_names
from minigemma.formats.convert import convert, read_source


def test_a_source_that_fits_passes():
    assert check_tensor_names("f", {"a": (2, 3), "b": [4]}, {"a": (2, 3), "b": (4,)}, "x") is None


def test_one_problem_is_one_sentence_naming_file_tensor_and_both_shapes():
    with pytest.raises(ValueError) as e:
        check_tensor_names("m.gguf", {"a": (2, 3)}, {"a": (3, 2)}, "the gemma config")
    assert str(e.value) == "m.gguf: tensor 'a' has shape (2, 3), the gemma config needs (3, 2)"


def test_every_problem_is_listed_at_once():
    found = {"a": (1,), "b": (2, 2), "extra": (5,)}
    expected = {"a": (1,), "b": (2, 3), "c": (4,)}
    with pytest.raises(ValueError) as e:
        check_tensor_names("/x/model", found, expected, "the gemma2 converter")
    message = str(e.value)
    assert message.startswith("/x/model: the tensors do not fit the gemma2 converter")
    assert "missing tensors ['c']" in message
    assert "unexpected tensors, which the gemma2 converter does not know: ['extra']" in message
    assert "tensor 'b' has shape (2, 2), the gemma2 converter needs (2, 3)" in message


def test_long_lists_are_cut_and_counted():
    expected = {f"t{i}": (1,) for i in range(9)}
    with pytest.raises(ValueError, match=r"missing tensors \['t0', 't1', 't2', 't3', 't4'\] "
                                         r"and 4 more"):
        check_tensor_names("f", {}, expected, "x")
    with pytest.raises(ValueError, match="and 4 more tensors of the wrong shape"):
        check_tensor_names("f", {n: (2,) for n in expected}, expected, "x")


def test_the_result_is_a_frozen_named_record():
    fields = [f.name for f in dataclasses.fields(ConvertedModel)]
    assert fields == ["config", "tensors", "embedding_dtype", "tokenizer_bytes", "source"]
    result = ConvertedModel(None, [], "float32", None, "test")
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.source = "other"


def test_state_dict_arguments_are_refused_for_sources_that_record_their_config(tmp_path):
    with pytest.raises(ValueError, match="attention_window apply only to official recurrentgemma"):
        convert(tmp_path, tmp_path / "out", attention_window=8)
    assert not (tmp_path / "out").exists()


def test_unknown_source_is_named(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"\0" * 16)
    with pytest.raises(ValueError, match="weights.bin: not a supported source"):
        read_source(path)


def _write_gemma_gguf(path, tensors):
    w = gguf.GGUFWriter(str(path), "gemma")
    for method, value in (("add_block_count", 1), ("add_embedding_length", 32),
                          ("add_feed_forward_length", 64), ("add_head_count", 2),
                          ("add_head_count_kv", 1), ("add_key_length", 16),
                          ("add_value_length", 16), ("add_context_length", 64),
                          ("add_vocab_size", 8)):
        getattr(w, method)(value)
    for name, shape in tensors.items():  # row-major shapes, [out, in] for matrices
        w.add_tensor(name, np.zeros(shape, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return str(path)


def test_gguf_converter_uses_the_same_strict_check(tmp_path):
    path = _write_gemma_gguf(tmp_path / "part.gguf", {
        "token_embd.weight": (8, 32), "output_norm.weight": (32,),
        "blk.0.attn_q.weight": (30, 32)})  # q_proj is [N·H, D] = [32, 32]
    with pytest.raises(ValueError) as e:
        convert(path, tmp_path / "out", progress=False)
    message = str(e.value)
    assert message.startswith(f"{path}: the tensors do not fit the gemma config")
    assert "missing tensors ['layers.0.pre_attn_norm', 'layers.0.k_proj'" in message
    assert "tensor 'layers.0.q_proj' has shape (30, 32), the gemma config of its metadata " \
           "needs (32, 32)" in message
    assert not (tmp_path / "out").exists()
