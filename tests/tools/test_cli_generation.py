"""The command line of generation: prompts from files and stdin, --speculative, the chat REPL,
perplexity and export. `minigemma.load` is replaced by a tiny model with the real tokenizer."""
import io
import sys

import pytest

import minigemma
from minigemma.model import Model
from minigemma.text.scoring import perplexity
from minigemma.tools import cli

from helpers.random_models import build, tiny_config, tiny_params


@pytest.fixture(scope="module")
def tiny(real_model):
    config = tiny_config("gemma3", vocab=262_144, num_layers=2, window=4, max_position=128)
    return Model(build(config, tiny_params(config, seed=5, std=0.3)), real_model.tokenizer)


@pytest.fixture
def loaded(tiny, monkeypatch):
    monkeypatch.setattr(minigemma, "load", lambda path=None, backend="numpy", **kw: tiny)
    return tiny


def run(argv, capsys, stdin=None, monkeypatch=None):
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin.encode("utf-8"))))
    code = cli.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_prompt_from_a_file_and_from_stdin(loaded, capsys, tmp_path, monkeypatch):
    expected = loaded.generate("The river", max_new_tokens=5)
    (tmp_path / "p.txt").write_text("The river", encoding="utf-8")
    for argv, stdin in [(["--prompt", "The river"], None),
                        (["--prompt-file", str(tmp_path / "p.txt")], None),
                        (["--prompt-file", "-"], "The river"), (["--prompt", "-"], "The river")]:
        code, out, err = run(["generate", "--max-new-tokens", "5", "--no-stream"] + argv,
                             capsys, stdin, monkeypatch)
        assert code == 0 and out == expected + "\n" and "decode" in err
    code, _, err = run(["generate", "--prompt", "a", "--prompt-file", "b"], capsys)
    assert code == 2 and "one of them" in err


def test_speculative_flag_reports_its_acceptance(loaded, capsys):
    prompt = "one two three one two three one two"
    code, out, err = run(["generate", "--prompt", prompt, "--max-new-tokens", "8",
                          "--speculative"], capsys)
    assert code == 0 and out == loaded.generate(prompt, max_new_tokens=8) + "\n"
    assert "speculative" in err and "drafts accepted" in err


def test_chat_repl_keeps_the_conversation(loaded, capsys):
    lines = iter(["Hello", "/reset", "Hi again", "And more", "/exit", "never read"])
    code = cli._chat(cli.build_parser().parse_args(["chat", "--max-new-tokens", "4"]),
                     read_line=lambda _: next(lines), out=sys.stdout)
    out = capsys.readouterr().out
    assert code == 0
    first = loaded.chat([{"role": "user", "content": "Hello"}], max_new_tokens=4)
    second = loaded.chat([{"role": "user", "content": "Hi again"}], max_new_tokens=4)
    third = loaded.chat([{"role": "user", "content": "Hi again"},
                         {"role": "assistant", "content": second},
                         {"role": "user", "content": "And more"}], max_new_tokens=4)
    assert out == f"{first}\n{second}\n{third}\n"
    assert next(lines) == "never read"


def test_perplexity_command(loaded, capsys, tmp_path, monkeypatch):
    text = "The river bends past the old mill. " * 6
    (tmp_path / "t.txt").write_text(text, encoding="utf-8")
    expected = perplexity(loaded, loaded.tokenizer.encode(text), context=16, stride=8)
    code, out, _ = run(["perplexity", str(tmp_path / "t.txt"), "--context", "16", "--stride",
                        "8"], capsys)
    assert code == 0 and out.strip() == expected.summary()
    code, out2, _ = run(["perplexity", "-", "--context", "16", "--stride", "8"], capsys, text,
                        monkeypatch)
    assert out2 == out
    code, _, err = run(["perplexity", str(tmp_path / "t.txt"), "--stride", "9999"], capsys)
    assert code == 2 and "stride" in err


def test_export_command(capsys, tmp_path, monkeypatch):
    seen = {}
    import minigemma.formats.export_hf as export_module
    monkeypatch.setattr(export_module, "export_hf",
                        lambda src, dst, overwrite=False: seen.update(src=src, dst=dst) or dst)
    code, out, _ = run(["export", "some/dir", "--to", "hf", str(tmp_path / "out")], capsys)
    assert code == 0 and seen == {"src": "some/dir", "dst": str(tmp_path / "out")}
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["export", "d", "--to", "onnx", "o"])
