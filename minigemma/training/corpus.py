"""A training corpus that every machine has without a download: the docstrings of Python's
standard library (docs/training.md#the-corpus).

Each module, class and function docstring (`ast.get_docstring`) of the standard library's own
.py files is one document, read from source (nothing is imported). Skipped: site-packages, the
test suites (test/, tests/), idlelib, lib2to3, tkinter, turtledemo, ensurepip and the build's
config-* folder. Documents are grouped by top-level module ("email" for email/mime/text.py),
and split by module, so the held-out text shares no module with the training text:

    held out    HELD_OUT_MODULES: json, statistics, ipaddress, smtplib, imaplib
    training    every other module

The text differs between Python versions (the docs name the one measured on); within one, the
split and the order of documents are deterministic.

    python -m minigemma.training.corpus --out DIR --train-tokens N --held-out-tokens N
        writes DIR/train.txt and DIR/held_out.txt: documents drawn at random (seeded) from each
        side until each file has about that many tokens of the embedded model's tokenizer
"""
import argparse
import ast
import os
import sysconfig

import numpy as np

HELD_OUT_MODULES = ("json", "statistics", "ipaddress", "smtplib", "imaplib")
SKIPPED_FOLDERS = ("site-packages", "dist-packages", "test", "tests", "idlelib", "lib2to3",
                   "tkinter", "turtledemo", "ensurepip", "__pycache__")
SEPARATOR = "\n\n"


def stdlib_root():
    return sysconfig.get_paths()["stdlib"]


def stdlib_docstrings(root=None):
    """[(top-level module, docstring)] of the standard library at `root`, in path order."""
    root = root or stdlib_root()
    documents = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        parts = [] if rel == "." else rel.split(os.sep)
        if any(p in SKIPPED_FOLDERS or p.startswith("config-") for p in parts):
            dirnames[:] = []
            continue
        dirnames.sort()
        for name in sorted(filenames):
            if not name.endswith(".py"):
                continue
            module = parts[0] if parts else name[:-3]
            documents += [(module, d) for d in _docstrings(os.path.join(dirpath, name))]
    return documents


def _docstrings(path):
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return []  # a few files are deliberately invalid or not UTF-8
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    found = (ast.get_docstring(node) for node in ast.walk(tree) if isinstance(node, kinds))
    return [d.strip() for d in found if d and d.strip()]


def split(documents, held_out=HELD_OUT_MODULES):
    """(training documents, held-out documents): lists of docstrings, by module."""
    train = [d for module, d in documents if module not in held_out]
    test = [d for module, d in documents if module in held_out]
    return train, test


def sample_text(documents, tokens, tokenizer, seed):
    """Documents drawn without replacement in a seeded random order until `tokens` tokens
    (the tokenizer's, no BOS) are reached; joined by blank lines."""
    order = np.random.default_rng(seed).permutation(len(documents))
    chosen, count = [], 0
    for i in order:
        if count >= tokens:
            break
        chosen.append(documents[i])
        count += len(tokenizer.encode(documents[i], add_bos=False))
    return SEPARATOR.join(chosen), count


def write_split(out, train_tokens, held_out_tokens, tokenizer, seed=0):
    """Write out/train.txt and out/held_out.txt; returns a summary dict."""
    train, test = split(stdlib_docstrings())
    os.makedirs(out, exist_ok=True)
    summary = {"python": sysconfig.get_python_version(), "held_out_modules": HELD_OUT_MODULES,
               "documents": {"train": len(train), "held_out": len(test)}}
    for name, docs, tokens, s in (("train", train, train_tokens, seed),
                                  ("held_out", test, held_out_tokens, seed + 1)):
        text, count = sample_text(docs, tokens, tokenizer, s)
        with open(os.path.join(out, f"{name}.txt"), "w", encoding="utf-8") as f:
            f.write(text)
        summary[f"{name}_tokens"] = count
    return summary


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m minigemma.training.corpus",
                                description="standard-library docstrings: train / held-out text")
    p.add_argument("--out", required=True)
    p.add_argument("--train-tokens", type=int, default=16_384)
    p.add_argument("--held-out-tokens", type=int, default=8_192)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default=None, help="whose tokenizer counts tokens (default: embedded)")
    args = p.parse_args(argv)
    print(write_split(args.out, args.train_tokens, args.held_out_tokens,
                      model_tokenizer(args.model), args.seed))


def model_tokenizer(path=None):
    """The tokenizer of a checkpoint folder (the embedded model's by default), without loading
    its weights."""
    from minigemma.text.tokenizer import Tokenizer
    if path is None:
        from minigemma.tools.embedded import default_model_path
        path = default_model_path()
    return Tokenizer.from_file(os.path.join(os.fspath(path), "tokenizer.model"))


if __name__ == "__main__":
    main()
