"""`minigemma train` (next-token prediction) and `minigemma distill train` (the teacher's
sparse targets), and `minigemma bench --train` (docs/training.md#training-a-student).

    minigemma train --text FILE | --targets FILE.npz  --out RUN  [student and run options]
    minigemma distill train --targets FILE.npz        --out RUN  [student and run options]

`--targets` reads `minigemma distill capture`'s file: `distill train` learns from its sparse
targets, `train` from its tokens alone, so the two see exactly the same windows in the same
order. The student shares the teacher's tokenizer and vocabulary (`--teacher`, by default the
embedded Gemma 3 270M): only its tokenizer.model is read.
"""
import json
import os
import sys
import time

import numpy as np

from minigemma.training.corpus import model_tokenizer
from minigemma.training.objective import network_loss_and_grad
from minigemma.training.optimizer import AdamW, clip_by_global_norm
from minigemma.training.student import (
    Windows,
    add_student_arguments,
    build_student,
    init_params,
    student_config,
    student_config_from_args,
    windows_from_targets,
    windows_from_text,
)
from minigemma.training.train import PLOT_FILE, TrainSettings, plot, train, warm_up

# command line

def add_run_arguments(p):
    """The options `minigemma train` and `minigemma distill train` share."""
    p.add_argument("--out", required=True, metavar="RUN", help="run folder (resumed if it has "
                   "checkpoints)")
    p.add_argument("--teacher", default=None, metavar="DIR",
                   help="the model whose tokenizer and vocabulary the student shares "
                        "(default: the embedded Gemma 3 270M)")
    p.add_argument("--held-out", default=None, metavar="FILE",
                   help="text to measure next-token perplexity on (not trained on)")
    p.add_argument("--backend", default="numpy")
    s = TrainSettings()
    p.add_argument("--steps", type=int, default=s.steps)
    p.add_argument("--batch-size", type=int, default=s.batch_size)
    p.add_argument("--lr", type=float, default=s.peak_lr, help="peak learning rate")
    p.add_argument("--min-lr", type=float, default=s.min_lr)
    p.add_argument("--warmup-steps", type=int, default=s.warmup_steps)
    p.add_argument("--weight-decay", type=float, default=s.weight_decay)
    p.add_argument("--clip-norm", type=float, default=s.clip_norm)
    p.add_argument("--seed", type=int, default=s.seed)
    p.add_argument("--eval-every", type=int, default=s.eval_every)
    p.add_argument("--eval-windows", type=int, default=s.eval_windows)
    p.add_argument("--checkpoint-every", type=int, default=s.checkpoint_every)
    add_student_arguments(p)
    p.add_argument("--plot", action="store_true", help="also write RUN/curve.png")


def settings_from_args(args, objective):
    return TrainSettings(objective=objective, steps=args.steps, batch_size=args.batch_size,
                         peak_lr=args.lr, min_lr=args.min_lr, warmup_steps=args.warmup_steps,
                         weight_decay=args.weight_decay, clip_norm=args.clip_norm,
                         seed=args.seed, eval_every=args.eval_every,
                         eval_windows=args.eval_windows, checkpoint_every=args.checkpoint_every)


def run_from_args(args, objective):
    """What both commands do once their data is known."""
    tokenizer = model_tokenizer(args.teacher)
    if args.targets:
        data = windows_from_targets(args.targets)
    else:
        with open(args.text, encoding="utf-8") as f:
            data = windows_from_text(tokenizer, f.read(), args.context)
    vocab = data.vocab_size or tokenizer.vocab_size
    if vocab != tokenizer.vocab_size:
        raise ValueError(f"the targets' vocabulary ({vocab}) is not the tokenizer's "
                         f"({tokenizer.vocab_size}): pass the teacher they came from")
    config = student_config_from_args(args, vocab, data.context, tokenizer)
    network = build_student(config, init_params(config, args.seed), args.backend)
    held_out = None
    if args.held_out:
        with open(args.held_out, encoding="utf-8") as f:
            held_out = windows_from_text(tokenizer, f.read(), data.context).tokens
    summary = train(args.out, network, data, settings_from_args(args, objective), held_out,
                    tokenizer.serialized_model())
    if args.plot:
        plot({objective: args.out}, os.path.join(args.out, PLOT_FILE))
    print(json.dumps({k: v for k, v in summary.items() if k not in ("student", "settings")},
                     indent=2))
    return 0


def _train_cli(args):
    if bool(args.text) == bool(args.targets):
        raise ValueError("give the training data as --text FILE or --targets FILE.npz")
    return run_from_args(args, "next-token")


def distill_train_cli(args):
    return run_from_args(args, "distill")


def register_cli(subparsers):
    """Add `minigemma train` to the CLI's subparsers (`distill train` is added by distill.py)."""
    p = subparsers.add_parser("train", help="train a small Gemma 3-architecture student on "
                                            "next-token prediction")
    data = p.add_mutually_exclusive_group()
    data.add_argument("--text", metavar="FILE", help="plain text, cut into windows")
    data.add_argument("--targets", metavar="FILE.npz",
                      help="the windows of `minigemma distill capture` (its teacher ignored)")
    p.add_argument("--context", type=int, default=128, help="tokens per window with --text")
    add_run_arguments(p)
    p.set_defaults(run=_train_cli)


def register_distill_train(distill_subparsers):
    p = distill_subparsers.add_parser("train", help="train a small student on a teacher's sparse "
                                                    "targets (`distill capture --text`)")
    p.add_argument("--targets", required=True, metavar="FILE.npz")
    p.set_defaults(text=None)
    add_run_arguments(p)
    p.set_defaults(run=distill_train_cli)


# benchmark: training tokens per second


def bench_train(backends=None, steps=3, batch_size=4, context=128, vocab_size=262_144,
                out=sys.stdout):
    """Training tokens/s of the default student (a full step: forward, backward, clipping,
    AdamW) per available backend, on random token windows, in this process (threads as the
    environment sets them); the best of `steps` steps after an untimed first one."""
    from minigemma.backends import available_backends
    names = [n for n, reason in available_backends().items() if reason is None]
    if backends:
        names = [n for n in names if n in backends]
    config = student_config(vocab_size, context=context)
    rng = np.random.default_rng(0)
    data = Windows(rng.integers(3, vocab_size, size=(batch_size * (steps + 1), context)))
    lines = [(f"training step of a {config.num_layers}-layer D={config.d_model} student, "
              f"V={vocab_size}, batch {batch_size} × {context} tokens"), "",
             "| backend | tokens/s | s / step |", "|---|---:|---:|"]
    for name in names:
        network = build_student(config, init_params(config), name)
        warm_up(network.backend)
        optimizer, times = AdamW(), []
        for step in range(steps + 1):
            t = time.perf_counter()
            ids = network.backend.asarray(data.tokens[step * batch_size:(step + 1) * batch_size])
            _, grads = network_loss_and_grad(network, ids)
            clip_by_global_norm(grads, 1.0, network.backend.xp)
            optimizer.update(network.backend, network.params, grads, 1e-3)
            times.append(time.perf_counter() - t)
        per_step = min(times[1:])
        lines.append(f"| {name} | {batch_size * context / per_step:.0f} | {per_step:.2f} |")
    print("\n".join(lines), file=out)
    return lines

