"""minigemma's format and the HF converter: round trips, strictness, clear errors."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import minigemma
from minigemma.formats.native import write_checkpoint
from minigemma.formats.safetensors import SafetensorsFile, write_safetensors
from minigemma.models.gemma import parameter_shapes
from minigemma.ops.bfloat16 import bf16_bits_to_f32, f32_to_bf16_bits

from helpers.random_models import tiny_config, tiny_params

safetensors_numpy = pytest.importorskip("safetensors.numpy")


def save_mg(folder, config, params, **kw):
    tensors = [(n, params[n].shape, "f32", lambda n=n: params[n]) for n in parameter_shapes(config)]
    return write_checkpoint(folder, config, tensors, embedding_dtype="float32", source="test", **kw)


def test_writer_output_reads_back_with_the_safetensors_library(tmp_path):
    arrays = {"a": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.ones(5, np.float32)}
    path = tmp_path / "x.safetensors"
    write_safetensors(path, [(k, v.shape, "F32", lambda v=v: v) for k, v in arrays.items()])
    loaded = safetensors_numpy.load_file(str(path))
    for k, v in arrays.items():
        np.testing.assert_array_equal(loaded[k], v)


def test_reader_matches_the_safetensors_library_including_bf16(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file
    t = torch.randn(7, 3)
    path = tmp_path / "y.safetensors"
    save_file({"f": t, "h": t.to(torch.bfloat16)}, str(path))
    st = SafetensorsFile(path)
    np.testing.assert_array_equal(st.read("f"), t.numpy())
    np.testing.assert_array_equal(st.read("h"), t.to(torch.bfloat16).float().numpy())


def test_reader_reads_every_numpy_dtype_into_its_own_array_and_names_a_cut_file(tmp_path):
    """U8, F16, F32 (and empty) tensors as the library wrote them, each an array of its own
    (not a view of a library buffer); a file cut short after it was opened is an error that
    names the file and the tensor."""
    arrays = {"u8": np.arange(300, dtype=np.uint8).reshape(3, 100),
              "f16": np.linspace(-2, 2, 12, dtype=np.float16).reshape(4, 3),
              "f32": np.random.default_rng(0).standard_normal((5, 7)).astype(np.float32),
              "empty": np.zeros((0, 4), np.float32)}
    path = tmp_path / "z.safetensors"
    safetensors_numpy.save_file(arrays, str(path))
    st = SafetensorsFile(path)
    for name, want in arrays.items():
        got = st.read(name, dtypes=("U8", "F16", "F32"))
        assert got.flags.owndata and got.flags.c_contiguous and got.shape == want.shape
        np.testing.assert_array_equal(got, want.astype(got.dtype))
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 10)  # the last tensor's bytes, after the check
    with pytest.raises(ValueError, match=r"z\.safetensors.*cannot read tensor"):
        for name in arrays:
            st.read(name, dtypes=("U8", "F16", "F32"))


def test_bf16_rounding_matches_torch():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).standard_normal(10_000).astype(np.float32) * 100
    ours = bf16_bits_to_f32(f32_to_bf16_bits(x))
    np.testing.assert_array_equal(ours, torch.tensor(x).to(torch.bfloat16).float().numpy())


def test_round_trip_through_the_format(tmp_path):
    config = tiny_config("gemma3")
    params = tiny_params(config)
    save_mg(tmp_path / "m", config, params)
    model = minigemma.load(tmp_path / "m")
    assert model.config == config
    for name, value in params.items():
        np.testing.assert_array_equal(model.network.params[name], value)


def test_missing_tensor_is_named(tmp_path):
    config = tiny_config("gemma2")
    params = tiny_params(config)
    tensors = [(n, params[n].shape, "f32", lambda n=n: params[n])
               for n in parameter_shapes(config) if n != "layers.1.k_proj"]
    write_checkpoint(tmp_path / "m", config, tensors, embedding_dtype="float32", source="t")
    with pytest.raises(ValueError, match="missing tensors.*layers.1.k_proj"):
        minigemma.load(tmp_path / "m")


def test_wrong_shape_is_named(tmp_path):
    config = tiny_config("gemma")
    params = tiny_params(config)
    params["layers.0.up_proj"] = np.zeros((3, 3), np.float32)
    tensors = [(n, params[n].shape, "f32", lambda n=n: params[n]) for n in parameter_shapes(config)]
    write_checkpoint(tmp_path / "m", config, tensors, embedding_dtype="float32", source="t")
    with pytest.raises(ValueError, match="layers.0.up_proj.*shape"):
        minigemma.load(tmp_path / "m")


def test_truncated_file_is_named(tmp_path):
    config = tiny_config("gemma")
    folder = save_mg(tmp_path / "m", config, tiny_params(config))
    weights = os.path.join(folder, "model.safetensors")
    size = os.path.getsize(weights)
    with open(weights, "r+b") as f:
        f.truncate(size - 100)
    with pytest.raises(ValueError, match="truncated"):
        minigemma.load(folder)


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a minigemma checkpoint"):
        minigemma.load(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not a minigemma checkpoint"):
        minigemma.load(tmp_path)


def test_interrupted_conversion_leaves_nothing_that_looks_complete(tmp_path):
    config = tiny_config("gemma")
    params = tiny_params(config)

    def boom():
        raise KeyboardInterrupt
    tensors = [(n, params[n].shape, "f32", lambda n=n: params[n]) for n in parameter_shapes(config)]
    tensors[5] = (tensors[5][0], tensors[5][1], "f32", boom)
    with pytest.raises(KeyboardInterrupt):
        write_checkpoint(tmp_path / "m", config, tensors, embedding_dtype="float32", source="t")
    assert not (tmp_path / "m").exists()
    assert os.listdir(tmp_path) == []


def test_existing_output_is_not_overwritten_silently(tmp_path):
    config = tiny_config("gemma")
    save_mg(tmp_path / "m", config, tiny_params(config))
    with pytest.raises(FileExistsError, match="not empty"):
        save_mg(tmp_path / "m", config, tiny_params(config))
    save_mg(tmp_path / "m", config, tiny_params(config, seed=1), overwrite=True)


# --- the HF converter ---------------------------------------------------------------------

pytest.importorskip("transformers")
from helpers.hf_tiny_models import make_hf_model  # noqa: E402


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf") / "gemma2"
    make_hf_model("gemma2-gqa-headdim-scale", folder)
    return folder


def _copy_with(src, dst, edit_tensors=None, edit_config=None):
    from safetensors.numpy import load_file, save_file
    dst.mkdir()
    tensors = load_file(str(src / "model.safetensors"))
    config = json.loads((src / "config.json").read_text())
    if edit_tensors:
        edit_tensors(tensors)
    if edit_config:
        edit_config(config)
    save_file(tensors, str(dst / "model.safetensors"))
    (dst / "config.json").write_text(json.dumps(config))
    return dst


def test_hf_missing_tensor(hf_folder, tmp_path):
    src = _copy_with(hf_folder, tmp_path / "s", lambda t: t.pop("model.layers.2.mlp.up_proj.weight"))
    with pytest.raises(ValueError, match="missing tensors.*layers.2.mlp.up_proj"):
        minigemma.convert(src, tmp_path / "d", progress=False)
    assert not (tmp_path / "d").exists()


def test_hf_extra_tensor(hf_folder, tmp_path):
    src = _copy_with(hf_folder, tmp_path / "s", lambda t: t.update(extra=np.zeros(3, np.float32)))
    with pytest.raises(ValueError, match="does not know.*extra"):
        minigemma.convert(src, tmp_path / "d", progress=False)


def test_hf_wrong_shape(hf_folder, tmp_path):
    def edit(t):
        t["model.layers.0.self_attn.q_proj.weight"] = np.zeros((4, 4), np.float32)
    src = _copy_with(hf_folder, tmp_path / "s", edit)
    with pytest.raises(ValueError, match="q_proj.*shape"):
        minigemma.convert(src, tmp_path / "d", progress=False)


def test_hf_unknown_model_type(hf_folder, tmp_path):
    src = _copy_with(hf_folder, tmp_path / "s", edit_config=lambda c: c.update(model_type="llama"))
    with pytest.raises(ValueError, match="unsupported model_type 'llama'"):
        minigemma.convert(src, tmp_path / "d", progress=False)


def test_hf_truncated_safetensors(hf_folder, tmp_path):
    src = _copy_with(hf_folder, tmp_path / "s")
    with open(src / "model.safetensors", "r+b") as f:
        f.truncate(os.path.getsize(src / "model.safetensors") // 2)
    with pytest.raises(ValueError, match="truncated"):
        minigemma.convert(src, tmp_path / "d", progress=False)


def test_hf_sharded_equals_single_file(hf_folder, tmp_path):
    from safetensors.numpy import load_file, save_file
    tensors = load_file(str(hf_folder / "model.safetensors"))
    shard = tmp_path / "sharded"
    shard.mkdir()
    names = sorted(tensors)
    halves = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for file, part in halves.items():
        save_file({n: tensors[n] for n in part}, str(shard / file))
    index = {"weight_map": {n: f for f, part in halves.items() for n in part}}
    (shard / "model.safetensors.index.json").write_text(json.dumps(index))
    (shard / "config.json").write_text((hf_folder / "config.json").read_text())
    a = minigemma.load(minigemma.convert(hf_folder, tmp_path / "a", progress=False))
    b = minigemma.load(minigemma.convert(shard, tmp_path / "b", progress=False))
    ids = [2, 3, 5, 8, 13, 21, 34, 55]
    np.testing.assert_array_equal(a.logits(ids), b.logits(ids))


def test_bf16_conversion_stays_close_and_uses_bf16_embedding_scale(hf_folder, tmp_path):
    f32 = minigemma.load(minigemma.convert(hf_folder, tmp_path / "a", progress=False))
    bf16 = minigemma.load(minigemma.convert(hf_folder, tmp_path / "b", dtype="bf16", progress=False))
    assert os.path.getsize(tmp_path / "b" / "model.safetensors") < 0.6 * os.path.getsize(tmp_path / "a" / "model.safetensors")
    assert bf16.meta["embedding_dtype"] == "bfloat16"
    ids = [2, 3, 5, 8, 13, 21, 34, 55]
    assert np.abs(f32.logits(ids) - bf16.logits(ids)).max() < 0.1


def test_cli_convert_and_info(hf_folder, tmp_path):
    run = [sys.executable, "-m", "minigemma"]
    out = subprocess.run(run + ["convert", str(hf_folder), str(tmp_path / "c")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    info = subprocess.run(run + ["info", str(tmp_path / "c")], capture_output=True, text=True)
    assert info.returncode == 0 and '"family": "gemma2"' in info.stdout
    bad = subprocess.run(run + ["convert", str(tmp_path), str(tmp_path / "d")], capture_output=True, text=True)
    assert bad.returncode == 2 and "no config.json" in bad.stderr


def test_q8_0_conversion_stays_close_and_rejects_unaligned_shapes(tmp_path):
    from minigemma.formats.convert import convert
    folder = tmp_path / "hf"
    make_hf_model("gemma3-aligned-32", folder)
    f32 = minigemma.load(convert(folder, tmp_path / "a", progress=False))
    q8 = minigemma.load(convert(folder, tmp_path / "b", dtype="q8_0", progress=False))
    assert q8.meta["quantized"]["layers.0.q_proj"]["kind"] == "q8_0"
    ids = [2, 3, 5, 8, 13, 21, 34, 55]
    err = np.abs(f32.logits(ids) - q8.logits(ids)).max()
    assert 0 < err < 0.05 * np.abs(f32.logits(ids)).max()
    with pytest.raises(ValueError, match="not a multiple of the 32-element block"):
        convert(_unaligned(tmp_path), tmp_path / "c", dtype="q8_0", progress=False)


def _unaligned(tmp_path):
    folder = tmp_path / "hf2"
    make_hf_model("gemma-mha", folder)
    return folder
