"""minigemma.training.distill: teacher capture (text windows, on-policy samples), scoring, the CLI.

Tiny random-weight checkpoints with a toy SentencePiece vocabulary (296 pieces) stand in for
teacher and student; one test runs the CLI on the real Gemma 3 270M over 64 tokens.
"""
import math
import os

import numpy as np
import pytest

from minigemma.formats.gguf.vocabulary import BYTE, CONTROL, NORMAL, UNKNOWN, build_model_proto
from minigemma.formats.native import write_checkpoint
from minigemma.model import load
from minigemma.models.gemma import parameter_shapes
from minigemma.text.generation import GenerationStats, default_stop_ids, generate_ids
from minigemma.text.sampling import Sampler, SamplingParams
from minigemma.text.tokenizer import Tokenizer
from minigemma.tools.cli import main
from minigemma.training import losses as L
from minigemma.training.distill import (
    DistillTargets,
    capture_on_policy,
    capture_text,
    score,
    text_windows,
)

from helpers.random_models import tiny_config, tiny_params

TEXT = ("the cat sat on the mat, and then the rat ran at the cat; "
        "a thin hen ate the grain in the barn. ") * 3
PROMPTS = "the cat\n\nthen a hen\nthe rat ran\n"


def toy_tokenizer_bytes():
    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
    normal = ["▁", *"abcdefghijklmnopqrstuvwxyz", "▁t", "he", "▁the", "in", "an", "er", "▁a"]
    pieces = specials + [f"<0x{b:02X}>" for b in range(256)] + normal
    types = [CONTROL, CONTROL, CONTROL, UNKNOWN, CONTROL, CONTROL] + [BYTE] * 256 + [NORMAL] * len(normal)
    scores = [0.0] * (len(specials) + 256) + [-float(i) for i in range(len(normal))]
    return build_model_proto(pieces, scores, types, {"unk": 3, "bos": 2, "eos": 1, "pad": 0},
                             add_dummy_prefix=False)


def write_tiny(folder, seed, family="gemma3"):
    tokenizer_bytes = toy_tokenizer_bytes()
    config = tiny_config(family, vocab=Tokenizer.from_bytes(tokenizer_bytes).vocab_size)
    params = tiny_params(config, seed=seed)
    tensors = [(n, params[n].shape, "f32", lambda n=n: params[n]) for n in parameter_shapes(config)]
    write_checkpoint(folder, config, tensors, embedding_dtype="float32", source="test",
                     tokenizer_bytes=tokenizer_bytes)
    return str(folder)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill")
    return {"teacher": write_tiny(root / "teacher", seed=1),
            "student": write_tiny(root / "student", seed=2, family="gemma2")}


@pytest.fixture(scope="module")
def teacher(dirs):
    return load(dirs["teacher"])


@pytest.fixture(scope="module")
def student(dirs):
    return load(dirs["student"])


def all_logits(model, targets):
    """[R, V]: the model's logits on every target position of `targets`."""
    return np.concatenate([model.logits(ids)[first:] for ids, first, _ in targets.sequences()])


# ----------------------------------------------------------------- capture over text


def test_text_windows_start_with_bos_and_cover_the_text(teacher):
    tok = teacher.tokenizer
    windows = text_windows(tok, TEXT, 16)
    assert all(w[0] == tok.bos_id and len(w) <= 16 for w in windows)
    assert sum((w[1:] for w in windows), []) == tok.encode(TEXT, add_bos=False)
    with pytest.raises(ValueError, match="context must be an integer >= 2"):
        text_windows(tok, TEXT, 1)
    with pytest.raises(ValueError, match="the text is empty"):
        text_windows(tok, "", 8)


def test_capture_text_layout(teacher):
    targets = capture_text(teacher, TEXT, context=16, k=8, seed=3, progress=False)
    windows = text_windows(teacher.tokenizer, TEXT, 16)
    assert len(targets) == len(windows) and targets.num_targets == sum(map(len, windows))
    assert (targets.first_target == 0).all()
    assert targets.teacher.ids.shape == (targets.num_targets, 8)
    assert targets.meta == {"model": teacher.path, "mode": "text", "k": 8, "temperature": 1.0,
                            "seed": 3, "weighting": "frequency", "context": 16}
    for w, (ids, first, sparse) in enumerate(targets.sequences()):  # window w used seed (3, w)
        assert list(ids) == windows[w]
        again = L.sample_teacher(teacher.logits(ids), 8, (3, w))
        np.testing.assert_array_equal(sparse.ids, again.ids)
        np.testing.assert_array_equal(sparse.probs, again.probs)


def test_exact_targets_score_the_dense_losses(teacher, student):
    # k >= V stores the teacher's exact distributions: the score is the dense loss
    V = teacher.config.vocab_size
    targets = capture_text(teacher, TEXT, context=24, k=V, seed=0, temperature=2.0, progress=False)
    t = all_logits(teacher, targets)
    assert math.isclose(score(teacher, targets, progress=False).mean_loss, L.entropy(t, 2.0),
                        rel_tol=1e-6)
    result = score(student, targets, progress=False)
    s = all_logits(student, targets)
    assert math.isclose(result.mean_loss, L.distillation_loss(s, t, 2.0), rel_tol=1e-6)
    assert result.tokens == len(t) and result.temperature == 2.0


def test_sampled_targets_score_close_to_the_dense_loss(teacher, student):
    targets = capture_text(teacher, TEXT * 4, context=64, k=64, seed=0, progress=False)
    dense = L.distillation_loss(all_logits(student, targets), all_logits(teacher, targets))
    result = score(student, targets, progress=False)
    assert abs(result.mean_loss - dense) < 0.05 * dense  # unbiased; k = 64 keeps it near
    assert result.sparse_bytes == result.tokens * 64 * 8
    assert result.dense_bytes == result.tokens * teacher.config.vocab_size * 4


def test_save_and_load_round_trip(teacher, tmp_path):
    targets = capture_text(teacher, TEXT, context=16, k=5, seed=1, progress=False)
    path = targets.save(tmp_path / "t.npz")
    assert os.listdir(tmp_path) == ["t.npz"]  # no temporary left behind
    back = DistillTargets.load(path)
    for name in ("tokens", "offsets", "first_target"):
        np.testing.assert_array_equal(getattr(back, name), getattr(targets, name))
    np.testing.assert_array_equal(back.teacher.ids, targets.teacher.ids)
    np.testing.assert_array_equal(back.teacher.probs, targets.teacher.probs)
    assert back.meta["k"] == 5 and back.meta["vocab_size"] == teacher.config.vocab_size
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable .npz"):
        DistillTargets.load(tmp_path / "bad.npz")
    np.savez(tmp_path / "other.npz", tokens=np.zeros(3))
    with pytest.raises(ValueError, match="lacks the arrays"):
        DistillTargets.load(tmp_path / "other.npz")


# ----------------------------------------------------------------- on-policy


def test_on_policy_targets_follow_the_policy_samples(teacher, student):
    prompts = PROMPTS.splitlines()
    targets = capture_on_policy(teacher, prompts, max_new_tokens=6, k=4, seed=5, policy=student,
                                progress=False)
    assert len(targets) == 3 and targets.meta["mode"] == "on-policy"
    tok = student.tokenizer
    for i, (ids, first, sparse) in enumerate(targets.sequences()):
        prompt_ids = tok.encode([p for p in prompts if p][i])
        assert list(ids[:len(prompt_ids)]) == prompt_ids and first == len(prompt_ids) - 1
        seed = int(np.random.SeedSequence([5, i]).generate_state(1)[0])
        sampled = list(generate_ids(student, prompt_ids, 6, Sampler(SamplingParams(1.0, seed=seed)),
                                    default_stop_ids(tok), GenerationStats()))
        assert list(ids[len(prompt_ids):]) == sampled  # the student's own samples
        expected = L.sample_teacher(teacher.logits(ids)[first:], 4, (5, i))  # the teacher's targets
        np.testing.assert_array_equal(sparse.ids, expected.ids)
    again = capture_on_policy(teacher, prompts, 6, 4, 5, policy=student, progress=False)
    np.testing.assert_array_equal(again.tokens, targets.tokens)


def test_on_policy_errors(teacher, tmp_path):
    with pytest.raises(ValueError, match="no prompts"):
        capture_on_policy(teacher, ["", "  "], 4, 4, 0, progress=False)
    with pytest.raises(ValueError, match="max_new_tokens"):
        capture_on_policy(teacher, ["the"], -1, 4, 0, progress=False)


# ----------------------------------------------------------------- the command line


def test_cli_capture_and_score(dirs, teacher, student, tmp_path, capsys):
    text, out = tmp_path / "text.txt", tmp_path / "targets.npz"
    text.write_text(TEXT, encoding="utf-8")
    assert main(["distill", "capture", "--model", dirs["teacher"], "--text", str(text),
                 "--context", "20", "--k", "6", "--seed", "4", "--temperature", "1.5",
                 "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    targets = DistillTargets.load(out)
    assert targets.meta["temperature"] == 1.5 and targets.meta["context"] == 20
    assert main(["distill", "score", "--student", dirs["student"], "--targets", str(out)]) == 0
    printed = capsys.readouterr().out
    expected = score(student, targets, progress=False)
    assert f"distillation loss {expected.mean_loss:.4f} nats/token over {expected.tokens} tokens" in printed
    assert "sparse" in printed and "dense [T, V] float32" in printed


def test_cli_on_policy(dirs, tmp_path, capsys):
    prompts, out = tmp_path / "prompts.txt", tmp_path / "op.npz"
    prompts.write_text(PROMPTS, encoding="utf-8")
    assert main(["distill", "capture", "--model", dirs["teacher"], "--on-policy", "--prompts",
                 str(prompts), "--policy", dirs["student"], "--max-new-tokens", "5", "--k", "3",
                 "--out", str(out)]) == 0
    targets = DistillTargets.load(out)
    assert targets.meta["policy"] == dirs["student"] and len(targets) == 3
    assert main(["distill", "score", "--student", dirs["student"], "--targets", str(out)]) == 0
    assert "nats/token" in capsys.readouterr().out


def test_cli_errors(dirs, tmp_path, capsys):
    out = tmp_path / "x.npz"
    assert main(["distill", "capture", "--model", dirs["teacher"], "--on-policy",
                 "--out", str(out)]) == 2
    assert "--on-policy needs --prompts" in capsys.readouterr().err
    text = tmp_path / "t.txt"
    text.write_text("the cat", encoding="utf-8")
    main(["distill", "capture", "--model", dirs["teacher"], "--text", str(text), "--k", "2",
          "--out", str(out)])
    capsys.readouterr()
    wide = tmp_path / "wide"
    config = tiny_config("gemma3", vocab=300)
    params = tiny_params(config)
    write_checkpoint(wide, config, [(n, params[n].shape, "f32", lambda n=n: params[n])
                                    for n in parameter_shapes(config)],
                     embedding_dtype="float32", source="test")
    assert main(["distill", "score", "--student", str(wide), "--targets", str(out)]) == 2
    assert "vocabulary has 300 ids" in capsys.readouterr().err


# ----------------------------------------------------------------- the real model


def test_cli_on_the_real_model(real_model, tmp_path, capsys):
    text, out = tmp_path / "text.txt", tmp_path / "real.npz"
    text.write_text("The river bends past the old mill, where workers once ground wheat into "
                    "flour for the town. In spring the water rises and the wheel turns faster; "
                    "in autumn the miller counts the sacks and sends them down the valley road.",
                    encoding="utf-8")
    assert main(["distill", "capture", "--model", real_model.path, "--text", str(text),
                 "--context", "64", "--k", "256", "--out", str(out)]) == 0
    assert main(["distill", "score", "--student", real_model.path, "--targets", str(out)]) == 0
    printed = capsys.readouterr().out
    targets = DistillTargets.load(out)
    assert targets.teacher.vocab_size == 262_144 and targets.num_targets <= 64 * len(targets)
    # the teacher scored on its own targets: an unbiased estimate of its mean entropy
    entropy = L.entropy(all_logits(real_model, targets))
    own = float(printed.split("distillation loss ")[1].split()[0])
    assert abs(own - entropy) < 0.1 * entropy + 0.05, (own, entropy)
    assert "(512x)" in printed  # 256 · 8 bytes against 262 144 · 4 per token
