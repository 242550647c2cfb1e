"""load(path) takes a converted folder, a GGUF file or an HF folder; sources are converted once
into the cache, keyed by their content."""
import os

import numpy as np
import pytest

import minigemma
import minigemma.formats.convert as convert_module
from minigemma.model import checkpoint_folder

from helpers.hf_tiny_models import make_hf_model

pytestmark = pytest.mark.oracle  # the sources are HF transformers' own folders
pytest.importorskip("torch")
pytest.importorskip("transformers")


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIGEMMA_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _count_conversions(monkeypatch):
    calls = []
    original = convert_module.convert

    def counting(src, dst, **kwargs):
        calls.append(os.fspath(src))
        return original(src, dst, **kwargs)
    monkeypatch.setattr(convert_module, "convert", counting)
    return calls


def test_an_hf_folder_is_converted_once_and_again_when_it_changes(tmp_path, home, monkeypatch):
    make_hf_model("gemma3-gqa", tmp_path / "hf")
    calls = _count_conversions(monkeypatch)
    direct = minigemma.load(minigemma.convert(tmp_path / "hf", tmp_path / "ours",
                                              progress=False), backend="numpy")
    calls.clear()
    first = minigemma.load(tmp_path / "hf", backend="numpy")
    ids = [2, 5, 7, 11, 13]
    np.testing.assert_array_equal(first.logits(ids), direct.logits(ids))
    assert calls == [str(tmp_path / "hf")] and first.path.startswith(str(home / "converted"))
    again = minigemma.load(tmp_path / "hf", backend="numpy")
    assert calls == [str(tmp_path / "hf")] and again.path == first.path  # reused
    make_hf_model("gemma3-gqa", tmp_path / "hf", seed=1)  # new weights, same names
    changed = minigemma.load(tmp_path / "hf", backend="numpy")
    assert len(calls) == 2 and changed.path != first.path
    assert not np.allclose(changed.logits(ids), first.logits(ids))


def test_a_gguf_file_goes_through_the_cache_too(tmp_path, home, monkeypatch):
    """A stand-in .gguf: the conversion is redirected to a tiny HF folder, so that what is
    checked is the path's dispatch and the cache, not the GGUF reader."""
    make_hf_model("gemma-mha", tmp_path / "hf")
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"GGUF stand-in")
    calls = []
    original = convert_module.convert

    def from_hf(src, dst, **kwargs):
        calls.append(os.fspath(src))
        return original(tmp_path / "hf", dst, **kwargs)
    monkeypatch.setattr(convert_module, "convert", from_hf)
    folder = checkpoint_folder(str(fake), progress=False)
    assert calls == [str(fake)] and os.path.basename(folder).startswith("model-")
    assert checkpoint_folder(str(fake), progress=False) == folder and len(calls) == 1
    fake.write_bytes(b"another GGUF stand-in")
    assert checkpoint_folder(str(fake), progress=False) != folder and len(calls) == 2


def test_a_converted_folder_is_used_in_place(tmp_path, home, monkeypatch):
    make_hf_model("gemma-mqa", tmp_path / "hf")
    ours = minigemma.convert(tmp_path / "hf", tmp_path / "ours", progress=False)
    calls = _count_conversions(monkeypatch)
    assert minigemma.load(ours, backend="numpy").path == os.fspath(ours) and calls == []
    with pytest.raises(FileNotFoundError):
        minigemma.load(tmp_path / "nowhere", backend="numpy")
