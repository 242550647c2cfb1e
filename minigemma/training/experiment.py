"""The Gemma 2 report's ablation at a size this machine trains: one student, one token budget,
distilled from the embedded Gemma 3 270M teacher vs trained on next-token prediction
(docs/training.md#the-experiment).

    python -m minigemma.training.experiment --out RUN [--steps 48 --batch-size 8 ...]

    1. corpus       standard-library docstrings: RUN/train.txt and RUN/held_out.txt
                    (minigemma.training.corpus; the held-out modules are never trained on)
    2. capture      the teacher's sparse targets on the training windows (k ids per token,
                    Gemma 3's recipe): RUN/targets.npz, as `minigemma distill capture --text`
    3. teacher      the teacher's own held-out perplexity, for scale
    4. two runs     the same student, same initial weights, same windows in the same order:
                    RUN/distill (`minigemma distill train`) and RUN/next-token (`minigemma
                    train --targets`), each evaluated on the held-out text as it trains
    5. results      RUN/results.json and the figure (--figure, default RUN/curves.png)

Each step is skipped when its output exists, so an interrupted experiment continues where it
stopped (a training run resumes from its last checkpoint).
"""
import argparse
import json
import math
import os
import time

from minigemma.training import corpus, student, train


def teacher_held_out_loss(teacher, tokens, batch_size):
    """The teacher's mean next-token loss on the held-out windows."""
    return train.evaluate(teacher.network, tokens, batch_size)


def run(args):
    import minigemma
    from minigemma.training.distill import capture_text
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    timings, results = {}, {}
    started = time.perf_counter()
    tokenizer = corpus.model_tokenizer(args.teacher)
    if not os.path.isfile(os.path.join(out, "held_out.txt")):
        results["corpus"] = corpus.write_split(out, args.train_tokens, args.held_out_tokens,
                                               tokenizer, args.seed)
    with open(os.path.join(out, "train.txt"), encoding="utf-8") as f:
        train_text = f.read()
    with open(os.path.join(out, "held_out.txt"), encoding="utf-8") as f:
        held_out = student.windows_from_text(tokenizer, f.read(), args.context).tokens
    targets_path = os.path.join(out, "targets.npz")
    teacher = None
    if not os.path.isfile(targets_path) or args.teacher_eval:
        teacher = minigemma.load(args.teacher, backend=args.teacher_backend or args.backend)
    if not os.path.isfile(targets_path):
        t = time.perf_counter()
        capture_text(teacher, train_text, args.context, args.k, args.seed,
                     args.temperature).save(targets_path)
        timings["capture_s"] = time.perf_counter() - t
    if args.teacher_eval:
        t = time.perf_counter()
        results["teacher_held_out_loss"] = teacher_held_out_loss(teacher, held_out,
                                                                 args.batch_size)
        timings["teacher_eval_s"] = time.perf_counter() - t
    del teacher
    data = student.windows_from_targets(targets_path)
    settings = dict(steps=args.steps, batch_size=args.batch_size, peak_lr=args.lr,
                    min_lr=args.min_lr, warmup_steps=args.warmup_steps, seed=args.seed,
                    eval_every=args.eval_every, eval_windows=args.eval_windows,
                    checkpoint_every=args.steps)
    config = student.student_config_from_args(args, data.vocab_size, data.context, tokenizer)
    runs = {"distill": os.path.join(out, "distill"), "next-token": os.path.join(out, "next-token")}
    for objective, folder in runs.items():
        network = student.build_student(config, student.init_params(config, args.seed), args.backend)
        t = time.perf_counter()
        results[objective] = train.train(folder, network, data,
                                         train.TrainSettings(objective=objective, **settings),
                                         held_out, tokenizer.serialized_model())
        timings[f"{objective}_s"] = time.perf_counter() - t
    figure = args.figure or os.path.join(out, "curves.png")
    train.plot({"distilled from Gemma 3 270M": runs["distill"],
                "next-token prediction": runs["next-token"]}, figure,
               title=f"{config.num_layers}-layer D={config.d_model} Gemma 3-architecture "
                     f"student, {data.context}-token windows of stdlib docstrings")
    timings["total_s"] = time.perf_counter() - started
    results.update(windows=len(data), unique_train_tokens=int(data.tokens.size),
                   held_out_tokens=int(held_out.size), k=args.k, timings=timings,
                   figure=figure)
    if "teacher_held_out_loss" in results:
        results["teacher_held_out_perplexity"] = math.exp(results["teacher_held_out_loss"])
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    for objective in runs:
        r = results[objective]
        print(f"{objective:10s} held-out loss {r['held_out_loss']:.4f} nats/token, perplexity "
              f"{r['held_out_perplexity']:.1f}, {r['tokens']} tokens in {r['seconds']:.0f} s")
    return results


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m minigemma.training.experiment",
                                description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--teacher", default=None, help="teacher folder (default: embedded)")
    p.add_argument("--backend", default="numba", help="the students' backend")
    p.add_argument("--teacher-backend", default=None,
                   help="the teacher's backend (default: --backend); numpy dequantizes the "
                        "teacher to float32 once and runs its head as one BLAS product")
    p.add_argument("--train-tokens", type=int, default=16_384)
    p.add_argument("--held-out-tokens", type=int, default=8_192)
    p.add_argument("--context", type=int, default=128)
    p.add_argument("--k", type=int, default=64, help="teacher ids drawn per token")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--steps", type=int, default=48)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--min-lr", type=float, default=3e-4)
    p.add_argument("--warmup-steps", type=int, default=6)
    p.add_argument("--eval-every", type=int, default=8)
    p.add_argument("--eval-windows", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    student.add_student_arguments(p)
    p.add_argument("--teacher-eval", action="store_true",
                   help="also measure the teacher's held-out perplexity")
    p.add_argument("--figure", default=None, help="where to write the curves (PNG)")
    return run(p.parse_args(argv))


if __name__ == "__main__":
    main()
