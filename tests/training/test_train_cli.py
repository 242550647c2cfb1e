"""minigemma.training.train, .checkpoint, .student, .corpus and .commands: a tiny student
trains, checkpoints atomically, resumes exactly where it stopped, and the `minigemma train` /
`distill train` / `bench --train` commands run.

A toy SentencePiece vocabulary (300 pieces) stands in for the teacher's 262k, so each step
takes milliseconds; the 262k-vocabulary run is the documented experiment, not a test.
"""
import json
import os
import shutil

import numpy as np
import pytest

import minigemma
from minigemma.formats.gguf.vocabulary import BYTE, CONTROL, NORMAL, UNKNOWN, build_model_proto
from minigemma.text.tokenizer import Tokenizer
from minigemma.tools.cli import main
from minigemma.training import checkpoint, corpus
from minigemma.training import student as S
from minigemma.training import train as T
from minigemma.training.commands import bench_train
from minigemma.training.distill import DistillTargets
from minigemma.training.losses import sample_teacher

TEXT = ("the cat sat on the mat, and then the rat ran at the cat; "
        "a thin hen ate the grain in the barn. ") * 6
SMALL = ["--d-model", "16", "--layers", "2", "--heads", "2", "--kv-heads", "1", "--head-dim",
         "8", "--ffn-dim", "24", "--window", "4"]


def toy_tokenizer_bytes():
    specials = ["<pad>", "<eos>", "<bos>", "<unk>"]
    normal = ["▁", *"abcdefghijklmnopqrstuvwxyz,;.", "▁t", "he", "▁the", "in", "an", "▁a"]
    pieces = specials + [f"<0x{b:02X}>" for b in range(256)] + normal
    types = [CONTROL, CONTROL, CONTROL, UNKNOWN] + [BYTE] * 256 + [NORMAL] * len(normal)
    scores = [0.0] * (len(specials) + 256) + [-float(i) for i in range(len(normal))]
    return build_model_proto(pieces, scores, types, {"unk": 3, "bos": 2, "eos": 1, "pad": 0},
                             add_dummy_prefix=False)


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    """A folder with only a tokenizer.model: all the student takes from its teacher."""
    folder = tmp_path_factory.mktemp("teacher")
    (folder / "tokenizer.model").write_bytes(toy_tokenizer_bytes())
    return folder


@pytest.fixture(scope="module")
def tokenizer(teacher_dir):
    return Tokenizer.from_file(teacher_dir / "tokenizer.model")


def tiny_student(tokenizer, backend="numpy", context=12):
    config = S.student_config(tokenizer.vocab_size, num_layers=2, d_model=16, num_heads=2,
                              head_dim=8, ffn_dim=24, window=4, context=context)
    return S.build_student(config, S.init_params(config, seed=3), backend)


def distill_windows(tokenizer, context=12, k=6):
    """Windows of TEXT with sparse targets from a 'teacher' that favours the true next token."""
    data = S.windows_from_text(tokenizer, TEXT, context)
    rng = np.random.default_rng(0)
    V = tokenizer.vocab_size
    sequences = []
    for i, w in enumerate(data.tokens):
        logits = rng.standard_normal((context, V))
        logits[np.arange(context - 1), w[1:]] += 6.0
        sequences.append((w, 0, sample_teacher(logits, k, seed=i)))
    return DistillTargets.from_sequences(sequences, V, {"temperature": 1.0, "k": k})


def settings(**changes):
    base = dict(steps=6, batch_size=2, peak_lr=1e-2, min_lr=1e-3, warmup_steps=2,
                eval_every=2, eval_windows=2, checkpoint_every=2)
    return T.TrainSettings(**{**base, **changes})


@pytest.mark.parametrize("objective", ["next-token", "distill"])
def test_training_lowers_the_loss_and_writes_the_curve(tokenizer, tmp_path, objective):
    targets = distill_windows(tokenizer)
    targets.save(tmp_path / "t.npz")
    data = S.windows_from_targets(tmp_path / "t.npz")
    net = tiny_student(tokenizer)
    summary = T.train(tmp_path / "run", net, data, settings(objective=objective, steps=12),
                      held_out=data.tokens[:2], progress=False)
    rows = T.read_curve(tmp_path / "run")
    assert [int(r["step"]) for r in rows] == list(range(1, 13))
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])
    assert [int(r["step"]) for r in rows if r["held_out_loss"]] == [2, 4, 6, 8, 10, 12]
    assert summary["tokens"] == 12 * 2 * 12 and summary["held_out_perplexity"] > 1
    assert json.loads((tmp_path / "run" / T.SUMMARY_FILE).read_text())["objective"] == objective


def test_resumed_run_equals_the_uninterrupted_one(tokenizer, tmp_path):
    data = S.windows_from_text(tokenizer, TEXT, 12)
    whole = tiny_student(tokenizer)
    T.train(tmp_path / "whole", whole, data, settings(), progress=False)
    # an interruption after step 4: the run folder as it was then
    (tmp_path / "cut").mkdir()
    shutil.copytree(tmp_path / "whole" / "step-000004", tmp_path / "cut" / "step-000004")
    (tmp_path / "cut" / "LATEST").write_text("step-000004")
    resumed = tiny_student(tokenizer)  # fresh weights: the checkpoint's replace them
    T.train(tmp_path / "cut", resumed, data, settings(), progress=False)
    for name, w in whole.params.items():
        np.testing.assert_array_equal(resumed.params[name], w, err_msg=name)
    assert [r["step"] for r in T.read_curve(tmp_path / "cut")] == [str(s) for s in range(5, 7)]
    with pytest.raises(ValueError, match="peak_lr"):
        T.train(tmp_path / "cut", resumed, data, settings(peak_lr=0.5), progress=False)


def test_checkpoints_are_atomic_and_loadable(tokenizer, tmp_path):
    data = S.windows_from_text(tokenizer, TEXT, 12)
    net = tiny_student(tokenizer)
    T.train(tmp_path, net, data, settings(steps=4), tokenizer_bytes=toy_tokenizer_bytes(),
            progress=False)
    assert checkpoint.checkpoints(tmp_path) == ["step-000002", "step-000004"]
    newest = checkpoint.latest_checkpoint(tmp_path)
    assert newest.endswith("step-000004")
    model = minigemma.load(os.path.join(newest, checkpoint.MODEL_DIR))  # a plain checkpoint
    for name, w in net.params.items():  # the weights exactly (the logits may differ in the
        np.testing.assert_array_equal(model.network.params[name], w)  # last bit: BLAS paths)
    ids = data.tokens[:1]
    np.testing.assert_allclose(model.forward(ids)[0], net.forward(ids)[0], rtol=1e-5, atol=1e-6)
    assert model.tokenizer.vocab_size == tokenizer.vocab_size
    # what an interrupted save leaves: a partial folder, and LATEST naming it
    (tmp_path / ".step-000006.partial-x").mkdir()
    (tmp_path / "LATEST").write_text("step-000006")
    assert checkpoint.latest_checkpoint(tmp_path) == newest
    with open(os.path.join(newest, checkpoint.OPTIMIZER_FILE), "r+b") as f:
        f.truncate(100)  # a damaged checkpoint is not taken
    assert checkpoint.latest_checkpoint(tmp_path).endswith("step-000002")


def test_batches_are_deterministic_and_cover_each_epoch():
    data = S.Windows(np.arange(7 * 3).reshape(7, 3))
    batches = [data.batch(s, 2, seed=4) for s in range(7)]  # two epochs of seven windows
    flat = np.concatenate(batches)
    assert sorted(flat[:7]) == list(range(7)) and sorted(flat[7:14]) == list(range(7))
    np.testing.assert_array_equal(data.batch(3, 2, seed=4), batches[3])


def test_cli_train_and_distill_train(teacher_dir, tokenizer, tmp_path, capsys):
    text, held = tmp_path / "train.txt", tmp_path / "held.txt"
    text.write_text(TEXT)
    held.write_text(TEXT[::-1])
    common = ["--teacher", str(teacher_dir), "--held-out", str(held), "--steps", "3",
              "--batch-size", "2", "--warmup-steps", "1", "--eval-every", "3", *SMALL]
    assert main(["train", "--text", str(text), "--context", "12", "--out",
                 str(tmp_path / "ntp"), "--plot", *common]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["objective"] == "next-token" and out["steps"] == 3
    assert (tmp_path / "ntp" / T.PLOT_FILE).stat().st_size > 0
    distill_windows(tokenizer).save(tmp_path / "targets.npz")
    assert main(["distill", "train", "--targets", str(tmp_path / "targets.npz"), "--out",
                 str(tmp_path / "kd"), *common]) == 0
    assert json.loads(capsys.readouterr().out)["objective"] == "distill"
    assert main(["train", "--targets", str(tmp_path / "targets.npz"), "--out",
                 str(tmp_path / "ntp2"), *common]) == 0  # the same windows, teacher ignored
    capsys.readouterr()
    assert main(["train", "--out", str(tmp_path / "x"), *common]) == 2
    assert "--text FILE or --targets" in capsys.readouterr().err


def test_student_is_gemma3_architecture():
    c = S.student_config(262_144)
    assert (c.family, c.qk_norm, c.post_norms, c.vocab_size) == ("gemma3", True, True, 262_144)
    assert c.layer_types == ("local", "local", "local", "global")
    params = S.init_params(c.replace(vocab_size=50))
    assert all((params[n] == 1).all() for n in params if n.endswith("_norm"))


def test_bench_train_reports_tokens_per_second(capsys):
    lines = bench_train(["numpy"], steps=1, batch_size=1, context=8, vocab_size=50)
    assert lines[-1].startswith("| numpy |") and float(lines[-1].split("|")[2]) > 0


def test_corpus_reads_docstrings_and_splits_by_module(tokenizer, tmp_path):
    root = tmp_path / "lib"
    (root / "json").mkdir(parents=True)
    (root / "test").mkdir()
    (root / "json" / "decoder.py").write_text('"""Decode JSON."""\ndef f():\n    """Parse."""\n')
    (root / "os.py").write_text('"""Operating system."""\nclass A:\n    """A class.\n\n    More."""\n')
    (root / "test" / "test_os.py").write_text('"""Skipped: a test suite."""\n')
    (root / "bad.py").write_text("def (:\n")  # invalid files are skipped
    documents = corpus.stdlib_docstrings(str(root))
    assert documents == [("os", "Operating system."), ("os", "A class.\n\nMore."),
                         ("json", "Decode JSON."), ("json", "Parse.")]  # os.walk's order
    train, held_out = corpus.split(documents)
    assert held_out == ["Decode JSON.", "Parse."]  # json is held out
    text, count = corpus.sample_text(train, 3, tokenizer, seed=0)
    assert count >= 3 and set(text.split(corpus.SEPARATOR)) <= {"Operating system.", "A class.",
                                                               "More."}


@pytest.mark.slow
def test_the_real_stdlib_corpus(tokenizer, tmp_path):
    documents = corpus.stdlib_docstrings()
    train, held_out = corpus.split(documents)
    assert len(train) > 1000 and len(held_out) > 50
    assert set(corpus.HELD_OUT_MODULES) <= {m for m, _ in documents}
    summary = corpus.write_split(tmp_path, 200, 100, tokenizer, seed=1)
    assert summary["train_tokens"] >= 200 and summary["held_out_tokens"] >= 100
    held_text, _ = corpus.sample_text(held_out, 100, tokenizer, seed=2)
    assert (tmp_path / "held_out.txt").read_text() == held_text
