"""`minigemma export DIR --to hf OUT`: transformers loads the folder, and its logits are
minigemma's (ORACLE_ATOL), for every family, quantized storage and the real model."""
import json

import numpy as np
import pytest

import minigemma
from minigemma.formats.export_hf import export_hf

from helpers import hf_tiny_griffin, hf_tiny_models
from helpers.tolerances import ORACLE_ATOL

pytestmark = pytest.mark.oracle
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

CASES = [(hf_tiny_models, "gemma-mqa", "f32"), (hf_tiny_models, "gemma2-mqa-dn-scale", "f32"),
         (hf_tiny_models, "gemma3-mqa-dn-scale", "f32"),
         (hf_tiny_models, "gemma3-aligned-32", "q8_0"), (hf_tiny_griffin, "rg-gqa-conv3", "f32")]


def hf_load(folder):
    return transformers.AutoModelForCausalLM.from_pretrained(
        folder, dtype=torch.float32, attn_implementation="eager").eval()


@pytest.mark.parametrize("helper, case, dtype", CASES, ids=[c[1] + "-" + c[2] for c in CASES])
def test_exported_folder_loads_in_transformers_with_our_logits(tmp_path, helper, case, dtype):
    helper.make_hf_model(case, tmp_path / "src")
    ours = minigemma.convert(tmp_path / "src", tmp_path / "ours", dtype=dtype, progress=False)
    model = minigemma.load(ours, backend="numpy")  # the reference
    out = export_hf(ours, tmp_path / "hf")
    ids = np.random.default_rng(0).integers(3, helper.VOCAB, size=(1, 23))
    ids[0, 0] = 2
    logits = helper.hf_logits(hf_load(out), ids)[0]
    np.testing.assert_allclose(logits, model.logits(ids[0]), atol=ORACLE_ATOL["float32"])
    # and back again: the export converts into the same model
    again = minigemma.load(minigemma.convert(out, tmp_path / "again", progress=False),
                           backend="numpy")
    np.testing.assert_allclose(again.logits(ids[0]), model.logits(ids[0]),
                               atol=ORACLE_ATOL["float32"])


def test_export_refuses_what_hf_cannot_run_and_existing_folders(tmp_path):
    from minigemma.formats.export_hf import hf_config
    from minigemma.models.config import GriffinConfig
    official = GriffinConfig(vocab_size=97, d_model=32, num_layers=3, num_heads=2,
                             lru_width=32, ffn_dim=32, window_includes_extra_key=True)
    with pytest.raises(ValueError, match="W \\+ 1"):
        hf_config(official)
    hf_tiny_models.make_hf_model("gemma-mha", tmp_path / "src")
    ours = minigemma.convert(tmp_path / "src", tmp_path / "ours", progress=False)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("keep me")
    with pytest.raises(FileExistsError):
        export_hf(ours, tmp_path / "taken")
    assert (tmp_path / "taken" / "file").read_text() == "keep me"


def test_real_model_export_loads_with_its_tokenizer(real_model, tmp_path):
    out = export_hf(real_model.path, tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["model_type"] == "gemma3_text" and config["architectures"] == [
        "Gemma3ForCausalLM"]
    text = "The capital of France is Paris, and the capital of Italy is"
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    ids = real_model.tokenizer.encode(text)
    assert tokenizer(text)["input_ids"] == ids
    with torch.no_grad():
        logits = hf_load(out)(input_ids=torch.tensor([ids])).logits[0].numpy()
    np.testing.assert_allclose(logits, real_model.logits(ids), atol=ORACLE_ATOL["float32"])
